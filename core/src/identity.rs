//! The peer's decentralised identifier.
//!
//! Design decision: the libp2p identity key *is* the DID key. A Noise-authenticated connection
//! therefore already proves which DID is on the other end; [`did_matches_peer`] is the explicit
//! check made at connection time. The DID is computed by the `ssi` crate (`did:key` method), so
//! it is the same string every other did:key implementation derives for the key.

use libp2p_identity::{PeerId, PublicKey};
use ssi::dids::DIDKey;
use ssi::jwk::{Base64urlUInt, OctetParams, Params, JWK};

/// Errors from converting between DIDs and libp2p keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("only Ed25519 keys can be a did:key identity")]
    NotEd25519,
    #[error("not a did:key identifier: {0}")]
    NotDidKey(String),
    #[error("malformed did:key identifier: {0}")]
    Malformed(String),
    #[error("did:key generation failed: {0}")]
    Generate(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `did:key` of an Ed25519 libp2p public key.
pub fn did_from_public_key(key: &PublicKey) -> Result<String> {
    let ed = key.clone().try_into_ed25519().map_err(|_| Error::NotEd25519)?;
    let jwk = JWK::from(Params::OKP(OctetParams {
        curve: "Ed25519".to_owned(),
        public_key: Base64urlUInt(ed.to_bytes().to_vec()),
        private_key: None,
    }));
    let did = DIDKey::generate(&jwk).map_err(|e| Error::Generate(e.to_string()))?;
    Ok(did.to_string())
}

/// The Ed25519 libp2p public key named by a `did:key` identifier, which must be written as
/// [`did_from_public_key`] writes it: multibase allows a key to be written in many ways (and a
/// fragment could follow), and a DID is compared as text everywhere (who a peer is, whom a
/// document names, what the popup shows), so one key has one DID.
pub fn public_key_from_did(did: &str) -> Result<PublicKey> {
    let (key, canonical) = decode_did(did)?;
    if !canonical {
        return Err(Error::Malformed(format!(
            "{did}: not written as this key's DID is (base58btc, no fragment)"
        )));
    }
    Ok(key)
}

/// The key `did` names, and whether `did` is written as [`did_from_public_key`] writes it
/// (checked on the text itself: this runs for every DID read, many per sync session).
fn decode_did(did: &str) -> Result<(PublicKey, bool)> {
    let id = did.strip_prefix("did:key:").ok_or_else(|| Error::NotDidKey(crate::quoted(did)))?;
    let (base, bytes) = multibase::decode(id)
        .map_err(|e| Error::Malformed(format!("{}: {e}", crate::quoted(did))))?;
    // (Exactly the Ed25519 multicodec, 0xed 0x01, and the 32 key bytes: nothing after them,
    // no longer form of the codec number.)
    let canonical = base == multibase::Base::Base58Btc
        && bytes.len() == 34
        && bytes[..2] == [0xed, 0x01]
        && multibase::encode(multibase::Base::Base58Btc, &bytes) == id;
    let encoded = ssi::multicodec::MultiEncodedBuf::new(bytes)
        .map_err(|e| Error::Malformed(format!("{}: {e}", crate::quoted(did))))?;
    let jwk = JWK::from_multicodec(&encoded)
        .map_err(|e| Error::Malformed(format!("{}: {e}", crate::quoted(did))))?;
    match jwk.params {
        Params::OKP(OctetParams { ref curve, ref public_key, .. }) if curve == "Ed25519" => {
            let ed = libp2p_identity::ed25519::PublicKey::try_from_bytes(&public_key.0)
                .map_err(|e| Error::Malformed(format!("{}: {e}", crate::quoted(did))))?;
            Ok((PublicKey::from(ed), canonical))
        }
        _ => Err(Error::NotEd25519),
    }
}

/// The DID of the key behind `peer`, read from the peer id itself (an Ed25519 peer id embeds
/// its public key); `None` for peer ids that only hash their key, or keys of other types.
pub fn did_of_peer(peer: &PeerId) -> Option<String> {
    const IDENTITY: u64 = 0x00;
    let hash = peer.as_ref();
    if hash.code() != IDENTITY {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(hash.digest()).ok()?;
    did_from_public_key(&key).ok()
}

/// Whether `did` names exactly the key behind `peer`.
pub fn did_matches_peer(did: &str, peer: &PeerId) -> bool {
    public_key_from_did(did).is_ok_and(|key| key.to_peer_id() == *peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    #[test]
    fn a_peer_id_names_its_did() {
        let key = Keypair::generate_ed25519();
        let did = did_from_public_key(&key.public()).expect("did");
        assert_eq!(did_of_peer(&key.public().to_peer_id()).as_deref(), Some(did.as_str()));
        assert_eq!(did_of_peer(&PeerId::random()), None, "a random id embeds no key");
    }

    #[test]
    fn did_round_trips_to_the_same_peer() {
        let key = Keypair::generate_ed25519();
        let did = did_from_public_key(&key.public()).expect("ed25519 key");
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(public_key_from_did(&did).expect("valid did"), key.public());
        assert!(did_matches_peer(&did, &key.public().to_peer_id()));
    }

    #[test]
    fn did_of_another_key_does_not_match() {
        let a = Keypair::generate_ed25519();
        let b = Keypair::generate_ed25519();
        let did_a = did_from_public_key(&a.public()).expect("ed25519 key");
        assert!(!did_matches_peer(&did_a, &b.public().to_peer_id()));
    }

    /// Test vector from the did:key specification (Ed25519 section): the multibase value is
    /// 0xed01 followed by the 32 key bytes, base58btc.
    #[test]
    fn spec_vector_decodes() {
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        let key = public_key_from_did(did).expect("spec vector");
        assert_eq!(did_from_public_key(&key).expect("ed25519"), did);
    }

    /// One key, one DID: the same key written otherwise (another multibase, a fragment after
    /// it) is refused, or a peer could pass for another in whatever compares DIDs as text.
    #[test]
    fn a_key_written_otherwise_is_refused() {
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        let with_fragment = format!("{did}#z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp");
        assert!(matches!(public_key_from_did(&with_fragment), Err(Error::Malformed(_))));
        let (_, bytes) = multibase::decode(&did["did:key:".len()..]).expect("multibase");
        for base in [multibase::Base::Base16Lower, multibase::Base::Base64Url] {
            let other = format!("did:key:{}", multibase::encode(base, &bytes));
            assert_eq!(
                decode_did(&other).expect("the same key").0,
                public_key_from_did(did).expect("did")
            );
            assert!(matches!(public_key_from_did(&other), Err(Error::Malformed(_))), "{other}");
        }
    }

    #[test]
    fn rejects_other_methods_and_garbage() {
        assert!(matches!(public_key_from_did("did:web:example.com"), Err(Error::NotDidKey(_))));
        assert!(matches!(public_key_from_did("did:key:zzzz"), Err(Error::Malformed(_))));
        assert!(matches!(public_key_from_did("did:key:"), Err(Error::Malformed(_))));
        // A secp256k1 did:key (spec example) is a valid DID but not an Ed25519 identity.
        assert!(matches!(
            public_key_from_did("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"),
            Err(Error::NotEd25519) | Err(Error::Malformed(_))
        ));
    }
}
