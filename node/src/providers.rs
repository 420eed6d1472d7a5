//! The node's Kademlia store: provider records of the browsers that use it, bounded.
//!
//! Any peer may tell the node that it provides a key, and names its own addresses. Kept as
//! they come, those records would be bounded only by keys × providers per key × a whole
//! message of key and addresses each (gigabytes). Here a key is at most [`MAX_KEY_BYTES`]
//! (a multihash), each record keeps a few short addresses, one peer provides at most
//! [`MAX_KEYS_PER_PROVIDER`] keys and all peers together at most [`MAX_RECORDS`] records
//! (about 1 KB each). At a limit, expired records go first (Kademlia removes another peer's
//! only when its key is looked up); what still does not fit is refused. Value records are not
//! kept at all (nothing here uses them).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::kad::store::{self, MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;

/// Keys the node keeps providers for, and providers kept per key.
pub const MAX_KEYS: usize = 65_536;
pub const MAX_PROVIDERS_PER_KEY: usize = 20;
/// Provider records kept in all, and keys one peer may provide.
pub const MAX_RECORDS: usize = 262_144;
pub const MAX_KEYS_PER_PROVIDER: usize = 16_384;
/// Most addresses kept of a provider record, and the longest kept (a browser names itself by
/// one or two relayed addresses of about 100 bytes).
pub const MAX_ADDRS: usize = 4;
pub const MAX_ADDR_BYTES: usize = 256;
/// Longest key (a CID's multihash is 34–36 bytes).
pub const MAX_KEY_BYTES: usize = 64;
/// Expired records are looked for at most this often (each look reads every record).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct Providers {
    inner: MemoryStore,
    /// The keys of each provider's records kept (none empty), and how many records in all.
    keys_of: HashMap<PeerId, HashSet<RecordKey>>,
    total: usize,
    swept: Option<Instant>,
}

impl Providers {
    pub fn new(local: PeerId) -> Self {
        let config = MemoryStoreConfig {
            max_records: 0,
            max_provided_keys: MAX_KEYS,
            max_providers_per_key: MAX_PROVIDERS_PER_KEY,
            ..Default::default()
        };
        Providers {
            inner: MemoryStore::with_config(local, config),
            keys_of: HashMap::new(),
            total: 0,
            swept: None,
        }
    }

    /// Remove the records that expired, unless that was done a moment ago.
    fn sweep(&mut self, now: Instant) {
        if self.swept.is_some_and(|at| now.duration_since(at) < SWEEP_EVERY) {
            return;
        }
        self.swept = Some(now);
        let mut expired = Vec::new();
        for (provider, keys) in &self.keys_of {
            for key in keys {
                let record =
                    self.inner.providers(key).into_iter().find(|p| p.provider == *provider);
                if record.is_none_or(|r| r.is_expired(now)) {
                    expired.push((key.clone(), *provider));
                }
            }
        }
        for (key, provider) in expired {
            self.remove_provider(&key, &provider);
        }
    }

    fn full(&self, provider: &PeerId) -> bool {
        self.total >= MAX_RECORDS
            || self.keys_of.get(provider).is_some_and(|k| k.len() >= MAX_KEYS_PER_PROVIDER)
    }

    fn holds(&self, key: &RecordKey, provider: &PeerId) -> bool {
        self.inner.providers(key).iter().any(|p| p.provider == *provider)
    }
}

impl RecordStore for Providers {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }

    fn put(&mut self, _: Record) -> store::Result<()> {
        Err(store::Error::MaxRecords)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.inner.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    fn add_provider(&mut self, mut record: ProviderRecord) -> store::Result<()> {
        if record.key.as_ref().len() > MAX_KEY_BYTES {
            return Err(store::Error::ValueTooLarge);
        }
        record.addresses.retain(|a| a.len() <= MAX_ADDR_BYTES);
        record.addresses.truncate(MAX_ADDRS);
        let provider = record.provider;
        if self.holds(&record.key, &provider) {
            // Renewed (its addresses and expiry): nothing more is kept.
            return self.inner.add_provider(record);
        }
        if self.full(&provider) {
            self.sweep(Instant::now());
            if self.full(&provider) {
                return Err(store::Error::MaxProvidedKeys);
            }
        }
        let key = record.key.clone();
        if let Err(e) = self.inner.add_provider(record.clone()) {
            // Out of keys: those of expired records may make room.
            self.sweep(Instant::now());
            self.inner.add_provider(record).map_err(|_| e)?;
        }
        // (A key's providers already full: the store let it go without a word.)
        if self.holds(&key, &provider) {
            self.keys_of.entry(provider).or_default().insert(key);
            self.total += 1;
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.inner.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.inner.remove_provider(k, p);
        let Some(keys) = self.keys_of.get_mut(p) else { return };
        if keys.remove(k) {
            self.total -= 1;
            if keys.is_empty() {
                self.keys_of.remove(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::Multiaddr;

    fn record(key: &[u8], provider: PeerId, addresses: Vec<Multiaddr>) -> ProviderRecord {
        ProviderRecord { key: RecordKey::new(&key), provider, expires: None, addresses }
    }

    #[test]
    fn a_record_keeps_a_few_short_addresses() {
        let mut store = Providers::new(PeerId::random());
        let short: Multiaddr = "/ip4/127.0.0.1/tcp/4401/ws".parse().expect("addr");
        let long: Multiaddr =
            format!("/dns4/{}.example/tcp/1", "a".repeat(300)).parse().expect("addr");
        let peer = PeerId::random();
        let addresses = [vec![long], vec![short.clone(); 10]].concat();
        store.add_provider(record(b"k", peer, addresses)).expect("kept");
        assert_eq!(
            store.providers(&RecordKey::new(&b"k")).remove(0).addresses,
            vec![short; MAX_ADDRS]
        );
    }

    #[test]
    fn one_peer_provides_a_bounded_number_of_keys_and_renewals_are_free() {
        let mut store = Providers::new(PeerId::random());
        let (greedy, other) = (PeerId::random(), PeerId::random());
        for i in 0..MAX_KEYS_PER_PROVIDER {
            store.add_provider(record(&i.to_be_bytes(), greedy, vec![])).expect("kept");
        }
        assert!(store.add_provider(record(b"one more", greedy, vec![])).is_err());
        // The same again is a renewal, not one more.
        store.add_provider(record(&0usize.to_be_bytes(), greedy, vec![])).expect("renewed");
        // Another peer is not held back by it, and a removed record frees a place.
        store.add_provider(record(b"one more", other, vec![])).expect("another peer");
        store.remove_provider(&RecordKey::new(&1usize.to_be_bytes()), &greedy);
        store.remove_provider(&RecordKey::new(&1usize.to_be_bytes()), &greedy); // (twice: once)
        store.add_provider(record(b"one more", greedy, vec![])).expect("room again");
        assert_eq!(store.total, MAX_KEYS_PER_PROVIDER + 1);
        // Values are not kept, nor a key longer than a multihash.
        assert!(store.put(Record::new(b"v".to_vec(), b"x".to_vec())).is_err());
        assert!(store.add_provider(record(&[7; MAX_KEY_BYTES + 1], other, vec![])).is_err());
    }

    #[test]
    fn at_a_limit_expired_records_make_room() {
        let mut store = Providers::new(PeerId::random());
        let peer = PeerId::random();
        let past = Instant::now() - Duration::from_secs(1);
        for i in 0..MAX_KEYS_PER_PROVIDER {
            let mut r = record(&i.to_be_bytes(), peer, vec![]);
            r.expires = (i % 2 == 0).then_some(past);
            store.add_provider(r).expect("kept");
        }
        store.add_provider(record(b"one more", peer, vec![])).expect("room made");
        assert_eq!(store.total, MAX_KEYS_PER_PROVIDER / 2 + 1);
        assert!(
            store.providers(&RecordKey::new(&0usize.to_be_bytes())).is_empty(),
            "expired: gone"
        );
        assert_eq!(store.providers(&RecordKey::new(&1usize.to_be_bytes())).len(), 1, "kept");
    }
}
