//! Passphrase-encrypted backups of the peer's identity key.
//!
//! The key (libp2p protobuf encoding) is sealed with XChaCha20-Poly1305 under a key derived
//! from the passphrase by Argon2id (64 MiB, 3 passes, as RFC 9106 recommends where memory is
//! short: a backup file is meant to leave the machine, where it can be attacked offline; the
//! browser derives the key in about a tenth of a second). Backups made with other settings
//! (19 MiB and 2 passes before) open as they say, up to a bound. Everything
//! else in the file (format, DID, KDF settings, nonce) is bound to the ciphertext as
//! associated data: changing any of it makes the backup fail to open. A wrong passphrase and a
//! damaged file are indistinguishable by design, and both leave everything as it was.
//!
//! Randomness comes from the caller (sans-IO): the browser passes `crypto.getRandomValues`.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libp2p_identity::Keypair;
use serde::{Deserialize, Serialize};

use crate::identity;

pub const FORMAT: &str = "disot-identity-backup/1";
/// Shortest passphrase accepted for a new backup.
pub const MIN_PASSPHRASE: usize = 8;
const MAX_PASSPHRASE: usize = 1024;
/// Largest backup file accepted.
pub const MAX_BACKUP_BYTES: usize = 4096;
const KDF_MEMORY_KIB: u32 = 64 * 1024;
const KDF_PASSES: u32 = 3;
/// Strongest settings a backup may ask for when opened (bounds the work a file can cause).
const KDF_MAX_MEMORY_KIB: u32 = 256 * 1024;
const KDF_MAX_PASSES: u32 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("not a Disot identity backup: {0}")]
    NotABackup(String),
    #[error("wrong passphrase, or the backup is damaged")]
    CannotOpen,
    #[error("the passphrase must have {MIN_PASSPHRASE} to {MAX_PASSPHRASE} characters")]
    WeakPassphrase,
    #[error("backup failed: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Kdf {
    name: String,
    memory_kib: u32,
    passes: u32,
    salt: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Backup {
    format: String,
    did: String,
    kdf: Kdf,
    cipher: String,
    nonce: String,
    sealed: String,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn derive(passphrase: &str, salt: &[u8], memory_kib: u32, passes: u32) -> Result<[u8; 32], Error> {
    let params =
        Params::new(memory_kib, passes, 1, Some(32)).map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut out)
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(out)
}

/// What the ciphertext is bound to: every other field of the file.
fn associated(b: &Backup) -> Vec<u8> {
    format!(
        "{}\n{}\n{}:{}:{}:{}\n{}\n{}",
        b.format, b.did, b.kdf.name, b.kdf.memory_kib, b.kdf.passes, b.kdf.salt, b.cipher, b.nonce
    )
    .into_bytes()
}

/// Seal `key` under `passphrase`; `salt` and `nonce` must be fresh random bytes.
pub fn export(
    key: &Keypair,
    passphrase: &str,
    salt: [u8; 16],
    nonce: [u8; 24],
) -> Result<String, Error> {
    export_with(key, passphrase, salt, nonce, (KDF_MEMORY_KIB, KDF_PASSES))
}

/// [`export`] with the key derived with `(memory in KiB, passes)`.
fn export_with(
    key: &Keypair,
    passphrase: &str,
    salt: [u8; 16],
    nonce: [u8; 24],
    (memory_kib, passes): (u32, u32),
) -> Result<String, Error> {
    if passphrase.chars().count() < MIN_PASSPHRASE || passphrase.len() > MAX_PASSPHRASE {
        return Err(Error::WeakPassphrase);
    }
    let did =
        identity::did_from_public_key(&key.public()).map_err(|e| Error::Internal(e.to_string()))?;
    let secret = key.to_protobuf_encoding().map_err(|e| Error::Internal(e.to_string()))?;
    let mut backup = Backup {
        format: FORMAT.into(),
        did,
        kdf: Kdf { name: "argon2id".into(), memory_kib, passes, salt: B64.encode(salt) },
        cipher: "xchacha20poly1305".into(),
        nonce: B64.encode(nonce),
        sealed: String::new(),
    };
    let k = derive(passphrase, &salt, memory_kib, passes)?;
    let aad = associated(&backup);
    let sealed = XChaCha20Poly1305::new((&k).into())
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: &secret, aad: &aad })
        .map_err(|e| Error::Internal(e.to_string()))?;
    backup.sealed = B64.encode(sealed);
    serde_json::to_string_pretty(&backup).map_err(|e| Error::Internal(e.to_string()))
}

/// Open a backup made by [`export`]; returns the key (whose DID is the one the file names).
pub fn import(text: &str, passphrase: &str) -> Result<Keypair, Error> {
    if text.len() > MAX_BACKUP_BYTES {
        return Err(Error::NotABackup("too large".into()));
    }
    let b: Backup = serde_json::from_str(text).map_err(|e| Error::NotABackup(e.to_string()))?;
    if b.format != FORMAT || b.kdf.name != "argon2id" || b.cipher != "xchacha20poly1305" {
        return Err(Error::NotABackup(format!(
            "unknown format {:?}",
            b.format.chars().take(40).collect::<String>()
        )));
    }
    if b.kdf.memory_kib > KDF_MAX_MEMORY_KIB || b.kdf.passes > KDF_MAX_PASSES {
        return Err(Error::NotABackup("key derivation settings out of range".into()));
    }
    let bytes = |s: &str| B64.decode(s).map_err(|_| Error::NotABackup("bad base64".into()));
    let (salt, nonce, sealed) = (bytes(&b.kdf.salt)?, bytes(&b.nonce)?, bytes(&b.sealed)?);
    if nonce.len() != 24 || salt.len() < 8 {
        return Err(Error::NotABackup("bad nonce or salt".into()));
    }
    let k =
        derive(passphrase, &salt, b.kdf.memory_kib, b.kdf.passes).map_err(|_| Error::CannotOpen)?;
    let secret = XChaCha20Poly1305::new((&k).into())
        .decrypt(XNonce::from_slice(&nonce), Payload { msg: &sealed, aad: &associated(&b) })
        .map_err(|_| Error::CannotOpen)?;
    let key = Keypair::from_protobuf_encoding(&secret).map_err(|_| Error::CannotOpen)?;
    match identity::did_from_public_key(&key.public()) {
        Ok(did) if did == b.did => Ok(key),
        _ => Err(Error::CannotOpen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_opens_with_its_passphrase_only() {
        let key = Keypair::generate_ed25519();
        let text = export(&key, "correct horse battery", [7; 16], [9; 24]).expect("export");
        let back = import(&text, "correct horse battery").expect("import");
        assert_eq!(back.public(), key.public());
        assert_eq!(import(&text, "correct horse batterz").err(), Some(Error::CannotOpen));
        assert_eq!(export(&key, "short", [0; 16], [0; 24]).err(), Some(Error::WeakPassphrase));
    }

    /// Backups made before the settings were raised (19 MiB, 2 passes) still open.
    #[test]
    fn a_backup_of_earlier_settings_opens() {
        let key = Keypair::generate_ed25519();
        let old = export_with(&key, "correct horse battery", [7; 16], [9; 24], (19 * 1024, 2))
            .expect("export");
        assert!(old.contains("\"memory_kib\": 19456"), "{old}");
        assert_eq!(import(&old, "correct horse battery").expect("import").public(), key.public());
    }

    #[test]
    fn a_changed_field_or_damaged_file_does_not_open() {
        let key = Keypair::generate_ed25519();
        let other =
            identity::did_from_public_key(&Keypair::generate_ed25519().public()).expect("did");
        let text = export(&key, "correct horse battery", [7; 16], [9; 24]).expect("export");
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
        v["did"] = serde_json::Value::String(other);
        assert_eq!(import(&v.to_string(), "correct horse battery").err(), Some(Error::CannotOpen));
        let damaged = text.replacen("\"sealed\": \"", "\"sealed\": \"AAAA", 1);
        assert_eq!(import(&damaged, "correct horse battery").err(), Some(Error::CannotOpen));
        assert!(matches!(import("{}", "x"), Err(Error::NotABackup(_))));
        assert!(matches!(import(&text.replace("argon2id", "md5"), "x"), Err(Error::NotABackup(_))));
        let heavy =
            text.replace(&format!("\"memory_kib\": {KDF_MEMORY_KIB}"), "\"memory_kib\": 4000000");
        assert!(matches!(import(&heavy, "x"), Err(Error::NotABackup(_))));
    }
}
