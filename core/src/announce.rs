//! `cas-updates`: short announcements on the gossipsub topic of that name, telling trusted
//! peers that there is something new for them.
//!
//! Every subscriber of a gossipsub topic receives every message, whoever it is meant for. So
//! an announcement names no content, document or recipient: it carries a fresh nonce and one
//! opaque tag per recipient, `tag = SHA-256(pair key ‖ nonce)[..16]`. The pair key comes from
//! an X25519 exchange between the two DIDs' Ed25519 keys (the announcer's secret and the
//! recipient's public key, or the other way round), so only the two of them can compute it.
//! A recipient that finds its tag syncs with the announcer, and the sync protocol, with its
//! access rules, carries the news itself. A third peer sees only that the announcer has news
//! for someone, and cannot link tags across announcements (each has its own nonce).
//!
//! The gossipsub message is signed by the announcer's libp2p key, which is its DID key, so
//! the sender needs no field of its own.
use std::collections::HashMap;

use crate::hex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The gossipsub topic.
pub const TOPIC: &str = "cas-updates";
/// Largest announcement accepted (and the gossipsub transmit limit).
pub const MAX_BYTES: usize = 16 * 1024;
/// Most recipients named in one announcement.
pub const MAX_TAGS: usize = 256;
const VERSION: u8 = 1;
const TAG_BYTES: usize = 16;
const NONCE_BYTES: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("announcement is {0} bytes; the limit is {MAX_BYTES}")]
    TooLarge(usize),
    #[error("announcement is malformed: {0}")]
    Malformed(String),
    #[error("announcement names {0} recipients; the limit is {MAX_TAGS}")]
    TooManyTags(usize),
    #[error("{0} is not a usable did:key for announcements")]
    BadDid(String),
}

/// What goes on the wire (JSON, small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    pub v: u8,
    /// Hex of [`NONCE_BYTES`] random bytes.
    pub nonce: String,
    /// Hex of one [`TAG_BYTES`] tag per recipient.
    pub tags: Vec<String>,
}

/// Whether `bytes` is a JSON object of at most [`MAX_BYTES`] naming a version `v` other than
/// the one this peer reads: an announcement of a later version, which a relay passes on unread.
pub fn is_other_version(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Versioned {
        v: u64,
    }
    bytes.len() <= MAX_BYTES
        && serde_json::from_slice::<Versioned>(bytes).is_ok_and(|a| a.v != u64::from(VERSION))
}

impl Announcement {
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse what a peer sent, checking size, version and shape.
    pub fn decode(bytes: &[u8]) -> Result<Announcement, Error> {
        if bytes.len() > MAX_BYTES {
            return Err(Error::TooLarge(bytes.len()));
        }
        let a: Announcement =
            serde_json::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
        if a.v != VERSION {
            return Err(Error::Malformed(format!("version {} (this peer reads {VERSION})", a.v)));
        }
        if a.tags.len() > MAX_TAGS {
            return Err(Error::TooManyTags(a.tags.len()));
        }
        let hex_of = |s: &str, n: usize| {
            s.len() == 2 * n && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex_of(&a.nonce, NONCE_BYTES) || !a.tags.iter().all(|t| hex_of(t, TAG_BYTES)) {
            return Err(Error::Malformed("nonce and tags must be lowercase hex".into()));
        }
        Ok(a)
    }
}

/// This peer's side of announcements: its key, and the pair keys computed so far.
pub struct Announcer {
    me: String,
    scalar: [u8; 32],
    pairs: HashMap<String, [u8; 32]>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer").field("me", &self.me).finish_non_exhaustive()
    }
}

/// Most pair keys remembered (each is one X25519 exchange to compute again).
const MAX_PAIRS: usize = 4096;

impl Announcer {
    /// `seed`: the 32-byte Ed25519 secret of the DID `me`.
    pub fn new(me: &str, seed: &[u8; 32]) -> Announcer {
        let scalar = ed25519_dalek::SigningKey::from_bytes(seed).to_scalar_bytes();
        Announcer { me: me.to_owned(), scalar, pairs: HashMap::new() }
    }

    /// The key only `me` and `other` can compute.
    fn pair_key(&mut self, other: &str) -> Result<[u8; 32], Error> {
        if let Some(k) = self.pairs.get(other) {
            return Ok(*k);
        }
        let bad = || Error::BadDid(other.to_owned());
        let public = crate::identity::public_key_from_did(other).map_err(|_| bad())?;
        let public = public.try_into_ed25519().map_err(|_| bad())?.to_bytes();
        let point = ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|_| bad())?;
        let shared = point.to_montgomery().mul_clamped(self.scalar).to_bytes();
        // A low-order public key gives a shared value anyone can guess.
        if shared == [0; 32] {
            return Err(bad());
        }
        let (first, second) = if self.me.as_str() < other {
            (self.me.as_str(), other)
        } else {
            (other, self.me.as_str())
        };
        let mut h = Sha256::new();
        h.update(b"disot cas-updates pair key v1\n");
        h.update(first.as_bytes());
        h.update(b"\n");
        h.update(second.as_bytes());
        h.update(b"\n");
        h.update(shared);
        let key: [u8; 32] = h.finalize().into();
        if self.pairs.len() >= MAX_PAIRS {
            self.pairs.clear();
        }
        self.pairs.insert(other.to_owned(), key);
        Ok(key)
    }

    fn tag(key: &[u8; 32], nonce: &str) -> String {
        let mut h = Sha256::new();
        h.update(key);
        h.update(nonce.as_bytes());
        hex(&h.finalize()[..TAG_BYTES])
    }

    /// An announcement of news for each of `recipients` (at most [`MAX_TAGS`]; DIDs that are
    /// not usable are left out). `nonce`: fresh random bytes.
    pub fn announce(&mut self, recipients: &[String], nonce: [u8; NONCE_BYTES]) -> Announcement {
        let nonce = hex(&nonce);
        let mut tags = Vec::new();
        for r in recipients {
            if tags.len() == MAX_TAGS {
                break;
            }
            if *r == self.me {
                continue;
            }
            if let Ok(k) = self.pair_key(r) {
                tags.push(Self::tag(&k, &nonce));
            }
        }
        Announcement { v: VERSION, nonce, tags }
    }

    /// Whether `from`'s announcement has news for this peer.
    pub fn is_for_me(&mut self, from: &str, a: &Announcement) -> bool {
        if from == self.me {
            return false;
        }
        match self.pair_key(from) {
            Ok(k) => {
                let mine = Self::tag(&k, &a.nonce);
                a.tags.contains(&mine)
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn peer() -> (String, [u8; 32]) {
        let key = Keypair::generate_ed25519();
        let did = crate::identity::did_from_public_key(&key.public()).expect("did");
        let ed = key.try_into_ed25519().expect("ed25519");
        let seed: [u8; 32] = ed.secret().as_ref().try_into().expect("32 bytes");
        (did, seed)
    }

    #[test]
    fn another_version_is_told_from_junk() {
        assert!(is_other_version(br#"{"v":2,"whatever":[1,2]}"#));
        assert!(!is_other_version(br#"{"v":1,"nonce":"zz","tags":[]}"#), "this version, malformed");
        assert!(!is_other_version(b"junk"));
        assert!(!is_other_version(br#"{"nonce":"00"}"#));
    }

    #[test]
    fn only_the_recipient_finds_its_tag() {
        let (a, a_seed) = peer();
        let (b, b_seed) = peer();
        let (c, c_seed) = peer();
        let mut at_a = Announcer::new(&a, &a_seed);
        let mut at_b = Announcer::new(&b, &b_seed);
        let mut at_c = Announcer::new(&c, &c_seed);
        let wire = at_a.announce(std::slice::from_ref(&b), [7; 16]).encode();
        let heard = Announcement::decode(&wire).expect("decodes");
        assert!(at_b.is_for_me(&a, &heard), "B computes the same pair key as A");
        assert!(!at_c.is_for_me(&a, &heard), "C is not named");
        // Nothing on the wire names B, A's share or anything else.
        let text = String::from_utf8(wire).expect("json");
        assert!(!text.contains(&b) && !text.contains(&a), "{text}");
        // Claiming the announcement came from someone else does not work either.
        assert!(!at_b.is_for_me(&c, &heard));
    }

    #[test]
    fn tags_are_fresh_for_each_nonce() {
        let (a, a_seed) = peer();
        let (b, _) = peer();
        let mut at_a = Announcer::new(&a, &a_seed);
        let one = at_a.announce(std::slice::from_ref(&b), [1; 16]);
        let two = at_a.announce(std::slice::from_ref(&b), [2; 16]);
        assert_ne!(one.tags, two.tags, "a third peer cannot link two announcements");
    }

    #[test]
    fn bad_announcements_are_refused() {
        assert!(matches!(Announcement::decode(b"{"), Err(Error::Malformed(_))));
        assert!(matches!(
            Announcement::decode(&vec![b' '; MAX_BYTES + 1]),
            Err(Error::TooLarge(_))
        ));
        let nonce = "00".repeat(16);
        let wrong_version = format!(r#"{{"v":2,"nonce":"{nonce}","tags":[]}}"#);
        assert!(matches!(Announcement::decode(wrong_version.as_bytes()), Err(Error::Malformed(_))));
        let upper = format!(r#"{{"v":1,"nonce":"{}","tags":[]}}"#, "AA".repeat(16));
        assert!(matches!(Announcement::decode(upper.as_bytes()), Err(Error::Malformed(_))));
        let tag = format!("\"{}\"", "ab".repeat(16));
        let many = format!(
            r#"{{"v":1,"nonce":"{nonce}","tags":[{}]}}"#,
            vec![tag; MAX_TAGS + 1].join(",")
        );
        assert!(matches!(Announcement::decode(many.as_bytes()), Err(Error::TooManyTags(_))));
        let extra = format!(r#"{{"v":1,"nonce":"{nonce}","tags":[],"cid":"x"}}"#);
        assert!(matches!(Announcement::decode(extra.as_bytes()), Err(Error::Malformed(_))));
    }

    #[test]
    fn unusable_recipients_are_left_out() {
        let (a, a_seed) = peer();
        let (b, _) = peer();
        let mut at_a = Announcer::new(&a, &a_seed);
        let made = at_a.announce(&["did:web:example.com".into(), a.clone(), b], [3; 16]);
        assert_eq!(made.tags.len(), 1, "only B: not a foreign DID, not A itself");
    }
}
