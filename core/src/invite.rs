//! Invites: how one person hands their peer to another, as a link or a QR code.
//!
//! An invite names a DID, a display name and the addresses where that peer can be reached
//! (its relay circuit addresses), until an expiry time, all signed with the DID's key. The one
//! who accepts it can trust and dial the peer without typing a DID, and nobody on the way can
//! swap the DID or the addresses: the signature covers every field. The text form is
//! [`SCHEME`] followed by the base64url JSON; [`qr_svg`] draws it as a QR code.

use libp2p_identity::Keypair;
use serde::{Deserialize, Serialize};

use crate::identity;

/// What an invite's text starts with.
pub const SCHEME: &str = "disot-invite:";
/// What the signature covers first.
pub const DOMAIN: &[u8] = b"disot-invite/1\n";
/// Longest invite text accepted.
pub const MAX_INVITE_BYTES: usize = 4096;
/// Most addresses in one invite.
pub const MAX_ADDRS: usize = 8;
/// How long an invite is good for, by default.
pub const DEFAULT_VALIDITY_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("not a Disot invite: {0}")]
    Malformed(String),
    #[error("the invite's signature does not verify: it was changed or not made by {0}")]
    BadSignature(String),
    #[error("the invite expired")]
    Expired,
    #[error("signing failed: {0}")]
    Signing(String),
}

/// An invite's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Invite {
    pub did: String,
    pub display_name: String,
    /// Multiaddrs that reach the peer, each ending in its `/p2p/<peer id>`.
    pub addrs: Vec<String>,
    pub expires_ms: u64,
    /// Ed25519 over [`DOMAIN`] and the canonical JSON of the other fields (base64url).
    #[serde(default)]
    pub signature: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn signed_bytes(invite: &Invite) -> Result<Vec<u8>, Error> {
    let mut value = serde_json::to_value(invite).map_err(|e| Error::Malformed(e.to_string()))?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("signature");
    }
    let canonical = crate::entry::canonical(&value).map_err(|e| Error::Malformed(e.to_string()))?;
    Ok([DOMAIN, &canonical].concat())
}

fn check(invite: &Invite) -> Result<libp2p_identity::PublicKey, Error> {
    let key = identity::public_key_from_did(&invite.did)
        .map_err(|e| Error::Malformed(format!("did: {e}")))?;
    if !crate::auth::is_plain_name(&invite.display_name) {
        return Err(Error::Malformed("display name".into()));
    }
    if invite.addrs.is_empty() || invite.addrs.len() > MAX_ADDRS {
        return Err(Error::Malformed(format!("1 to {MAX_ADDRS} addresses")));
    }
    let peer = key.to_peer_id();
    for addr in &invite.addrs {
        let parsed: multiaddr::Multiaddr =
            addr.parse().map_err(|e| Error::Malformed(format!("address {addr}: {e}")))?;
        if parsed.iter().last() != Some(multiaddr::Protocol::P2p(peer)) {
            return Err(Error::Malformed(format!("address {addr} does not end in the DID's peer")));
        }
    }
    Ok(key)
}

/// Make a signed invite to the peer of `key`, reachable at `addrs`, good until `expires_ms`.
pub fn create(
    key: &Keypair,
    display_name: &str,
    addrs: Vec<String>,
    expires_ms: u64,
) -> Result<String, Error> {
    use base64::Engine as _;
    let did =
        identity::did_from_public_key(&key.public()).map_err(|e| Error::Signing(e.to_string()))?;
    let mut invite = Invite {
        did,
        display_name: display_name.to_owned(),
        addrs,
        expires_ms,
        signature: String::new(),
    };
    check(&invite)?;
    let signature = key.sign(&signed_bytes(&invite)?).map_err(|e| Error::Signing(e.to_string()))?;
    invite.signature = b64().encode(signature);
    let json = serde_json::to_vec(&invite).map_err(|e| Error::Signing(e.to_string()))?;
    Ok(format!("{SCHEME}{}", b64().encode(json)))
}

/// Read and check an invite's text at time `now_ms`.
pub fn open(text: &str, now_ms: u64) -> Result<Invite, Error> {
    use base64::Engine as _;
    let text = text.trim();
    if text.len() > MAX_INVITE_BYTES {
        return Err(Error::Malformed(format!("longer than {MAX_INVITE_BYTES} bytes")));
    }
    let body = text
        .strip_prefix(SCHEME)
        .ok_or_else(|| Error::Malformed(format!("it does not start with {SCHEME}")))?;
    let json = b64().decode(body).map_err(|_| Error::Malformed("not base64url".into()))?;
    let invite: Invite =
        serde_json::from_slice(&json).map_err(|e| Error::Malformed(e.to_string()))?;
    let key = check(&invite)?;
    let signature =
        b64().decode(&invite.signature).map_err(|_| Error::BadSignature(invite.did.clone()))?;
    if !key.verify(&signed_bytes(&invite)?, &signature) {
        return Err(Error::BadSignature(invite.did.clone()));
    }
    if invite.expires_ms <= now_ms {
        return Err(Error::Expired);
    }
    Ok(invite)
}

/// The invite text as a QR code, an SVG document.
pub fn qr_svg(text: &str) -> Result<String, Error> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| Error::Malformed(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const NOW: u64 = 1_780_000_000_000;

    /// A relay circuit address of `key`'s peer.
    fn addr(key: &Keypair) -> String {
        let relay = Keypair::generate_ed25519().public().to_peer_id();
        let peer = key.public().to_peer_id();
        format!("/ip4/127.0.0.1/tcp/4401/ws/p2p/{relay}/p2p-circuit/webrtc/p2p/{peer}")
    }

    #[test]
    fn an_invite_opens_to_what_was_put_in() {
        let key = Keypair::generate_ed25519();
        let text = create(&key, "Alice", vec![addr(&key)], NOW + 1000).expect("created");
        assert!(text.starts_with(SCHEME));
        let invite = open(&text, NOW).expect("opens");
        assert_eq!(invite.did, identity::did_from_public_key(&key.public()).expect("did"));
        assert_eq!(invite.display_name, "Alice");
        assert_eq!(invite.addrs.len(), 1);
        assert!(invite.addrs[0].ends_with(&key.public().to_peer_id().to_string()));
        assert!(qr_svg(&text).expect("fits a QR code").starts_with("<?xml"));
    }

    /// Re-encode an invite after changing it (without re-signing).
    fn tampered(text: &str, change: impl FnOnce(&mut Invite)) -> String {
        let json = b64().decode(text.strip_prefix(SCHEME).expect("scheme")).expect("b64");
        let mut invite: Invite = serde_json::from_slice(&json).expect("json");
        change(&mut invite);
        format!("{SCHEME}{}", b64().encode(serde_json::to_vec(&invite).expect("json")))
    }

    #[test]
    fn a_changed_or_expired_invite_is_refused() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let text = create(&key, "Alice", vec![addr(&key)], NOW + 1000).expect("created");
        let renamed = tampered(&text, |i| i.display_name = "Mallory".into());
        assert!(matches!(open(&renamed, NOW), Err(Error::BadSignature(_))));
        let later = tampered(&text, |i| i.expires_ms += 1);
        assert!(matches!(open(&later, NOW), Err(Error::BadSignature(_))));
        // Another DID with its own address: the signature is still Alice's.
        let swapped = tampered(&text, |i| {
            i.did = identity::did_from_public_key(&other.public()).expect("did");
            i.addrs = vec![addr(&other)];
        });
        assert!(matches!(open(&swapped, NOW), Err(Error::BadSignature(_))));
        assert_eq!(open(&text, NOW + 1000), Err(Error::Expired));
    }

    #[test]
    fn malformed_invites_are_refused() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        for bad in ["", "https://example.com", "disot-invite:!!!", "disot-invite:e30"] {
            assert!(matches!(open(bad, NOW), Err(Error::Malformed(_))), "{bad}");
        }
        assert!(matches!(open(&"x".repeat(MAX_INVITE_BYTES + 1), NOW), Err(Error::Malformed(_))));
        // An address of another peer, or none at all, cannot even be signed.
        assert!(matches!(create(&key, "a", vec![addr(&other)], NOW), Err(Error::Malformed(_))));
        assert!(matches!(create(&key, "a", vec![], NOW), Err(Error::Malformed(_))));
        let text = create(&key, "a", vec![addr(&key)], NOW + 1).expect("created");
        let redirected = tampered(&text, |i| i.addrs = vec![addr(&other)]);
        assert!(matches!(open(&redirected, NOW), Err(Error::Malformed(_))));
    }
}
