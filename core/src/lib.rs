//! Platform-free core of Disot Peer.
//!
//! Everything here runs the same in the browser node (`disot-wasm`), the native node
//! (`disot-node`) and plain `cargo test`: no web-sys, no tokio, no I/O. The adapters move
//! bytes and time in; this crate decides what they mean.
//!
//! - [`identity`]: the peer's DID is `did:key` of its libp2p Ed25519 key, and back.
//! - [`auth`]: mutual authentication of connections by signed, challenge-bound profiles.
//! - [`entry`]: signed DISOT entries (Ed25519 over RFC 8785 canonical JSON).
//! - [`trust`]: trust assertions as Verifiable Credentials (ssi), and trust scores.
//! - [`invite`]: signed invites (link or QR code) that hand a peer's DID and addresses over.
//! - [`backup`]: passphrase-encrypted backups of the identity key (Argon2id, XChaCha20-Poly1305).
//! - [`permissions`]: per-origin grants and pending requests (EIP-2255 style).
//! - [`api`]: the page-facing request/response messages, their limits and typed errors.
//! - [`unixfs`]: files to UnixFS blocks and CIDs, as IPFS computes them.
//! - [`store`]: the block-store trait, verified reads, atomic objects, garbage collection.
//! - [`cache`]: small blocks kept in memory for the peers that ask for them again.
//! - [`bitswap`]: Bitswap 1.2.0 messages and its client and server state machines (sans-IO).
//! - [`webrtc`]: browser-to-browser WebRTC: signaling messages and data-channel framing (sans-IO).
//! - [`inbound`]: how many streams of a protocol peers may have open with us at once.
//! - [`bootstrap`]: which bootstrap node to dial when, with exponential backoff (sans-IO).
//! - [`sync`]: shares and collections as Automerge documents, and their sync between peers.
//! - [`blame`]: whose input is being handled, for a panic to name it.

pub mod announce;
pub mod api;
pub mod auth;
pub mod backup;
pub mod bitswap;
pub mod blame;
pub mod bootstrap;
pub mod cache;
pub mod entry;
pub mod identity;
pub mod inbound;
pub mod invite;
pub mod permissions;
pub mod store;
pub mod sync;
pub mod trust;
pub mod turns;
pub mod unixfs;
pub mod webrtc;

/// Text a peer sent, to repeat in an error: its first 80 characters, quoted, with control and
/// invisible characters escaped (it is shown to the user, and must not draw lines or reorder
/// what is around it).
pub fn quoted(text: &str) -> String {
    let head: String = text.chars().take(80).collect();
    if head.len() < text.len() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_text_cannot_draw_lines_or_run_on() {
        assert_eq!(super::quoted("did:key:z6Mk"), "\"did:key:z6Mk\"");
        assert_eq!(super::quoted("a\u{2028}b\u{202e}c\n"), "\"a\\u{2028}b\\u{202e}c\\n\"");
        assert_eq!(super::quoted(&"x".repeat(100)), format!("\"{}\"…", "x".repeat(80)));
    }
}
