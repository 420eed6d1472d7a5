//! The node's Kademlia store: provider records of the browsers that use it, bounded.
//!
//! Any peer may tell the node that it provides a key, and names its own addresses. Kept as
//! they come, those records would be bounded only by keys × providers per key × a whole
//! message of addresses each (gigabytes). Here each record keeps a few short addresses, one
//! peer provides at most [`MAX_KEYS_PER_PROVIDER`] keys and all peers together at most
//! [`MAX_RECORDS`] records (about 1 KB each): what comes beyond is refused until records
//! expire or are replaced. Value records are not kept at all (nothing here uses them).

use std::borrow::Cow;
use std::collections::HashMap;

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

pub struct Providers {
    inner: MemoryStore,
    /// Records kept of each provider (none at zero), and in all.
    per_provider: HashMap<PeerId, usize>,
    total: usize,
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
            per_provider: HashMap::new(),
            total: 0,
        }
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
        record.addresses.retain(|a| a.len() <= MAX_ADDR_BYTES);
        record.addresses.truncate(MAX_ADDRS);
        let provider = record.provider;
        if self.holds(&record.key, &provider) {
            // Renewed (its addresses and expiry): nothing more is kept.
            return self.inner.add_provider(record);
        }
        let of_provider = self.per_provider.get(&provider).copied().unwrap_or(0);
        if self.total >= MAX_RECORDS || of_provider >= MAX_KEYS_PER_PROVIDER {
            return Err(store::Error::MaxProvidedKeys);
        }
        let key = record.key.clone();
        self.inner.add_provider(record)?;
        // (A key's providers already full: the store let it go without a word.)
        if self.holds(&key, &provider) {
            self.per_provider.insert(provider, of_provider + 1);
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
        if !self.holds(k, p) {
            return;
        }
        self.inner.remove_provider(k, p);
        self.total -= 1;
        match self.per_provider.get_mut(p) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.per_provider.remove(p);
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
        // Values are not kept.
        assert!(store.put(Record::new(b"v".to_vec(), b"x".to_vec())).is_err());
    }
}
