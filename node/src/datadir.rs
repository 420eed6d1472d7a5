//! The node's data directory: its identity key and WebRTC certificate.
//!
//! Both are created on first start and reused after, so the node's multiaddrs (peer id and
//! certhash) stay the same across restarts and browsers configured with them keep working.
//! Files are written to a temporary name and renamed, so a crash never leaves half a key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;
use libp2p_webrtc::tokio::Certificate;

const IDENTITY_FILE: &str = "identity.key";
const CERT_FILE: &str = "webrtc-cert.pem";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data directory {path} is not usable: {source}")]
    Unusable { path: PathBuf, source: std::io::Error },
    #[error("data directory {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("there is no data directory {0}")]
    Missing(PathBuf),
    #[error("{path} is damaged ({reason}); move it away to let the node create a new one (the node's peer id will change)")]
    Damaged { path: PathBuf, reason: String },
    #[error("could not create a key or certificate: {0}")]
    Create(String),
    #[error("{0}")]
    InUse(String),
}

/// A lock on the data directory, or a part of it, held until dropped (the system lets go of it
/// when the process ends, however it ends).
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] fs::File);

/// What a lock keeps out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A running node: one per data directory.
    Node,
    /// Writing to the store (`add`, `pin`, `unpin`): any number at once, but not during `gc`.
    StoreWrite,
    /// `gc`: alone, as it removes what no record names (an `add` writes its blocks first).
    StoreSweep,
}

/// The default data directory: `$XDG_DATA_HOME/disot-node`, else `~/.local/share/disot-node`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("disot-node");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/disot-node"),
        None => PathBuf::from(".disot-node"),
    }
}

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Create the directory if needed.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let unusable = |source| Error::Unusable { path: path.to_owned(), source };
        if path.exists() && !path.is_dir() {
            return Err(Error::NotADirectory(path.to_owned()));
        }
        fs::create_dir_all(path).map_err(unusable)?;
        Ok(DataDir { path: path.to_owned() })
    }

    /// One that exists already, for reading what it holds (a mistyped path is an error, not
    /// an empty store).
    pub fn existing(path: &Path) -> Result<Self, Error> {
        if !path.exists() {
            return Err(Error::Missing(path.to_owned()));
        }
        Self::open(path)
    }

    /// Prove that files can be written here now, rather than failing later on first use (a
    /// starting node). Each process writes a file of its own, so that several do not trip on
    /// each other's.
    pub fn check_writable(&self) -> Result<(), Error> {
        let unusable = |source| Error::Unusable { path: self.path.clone(), source };
        let probe = self.path.join(format!(".write-test.{}", std::process::id()));
        fs::write(&probe, b"ok").map_err(unusable)?;
        fs::remove_file(&probe).map_err(unusable)
    }

    /// Take the lock `hold` needs, or say what holds it.
    pub fn lock(&self, hold: Hold) -> Result<Lock, Error> {
        let unusable = |source| Error::Unusable { path: self.path.clone(), source };
        let name = if hold == Hold::Node { "node.lock" } else { "store.lock" };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.path.join(name))
            .map_err(unusable)?;
        let taken = match hold {
            Hold::StoreWrite => file.try_lock_shared(),
            Hold::Node | Hold::StoreSweep => file.try_lock(),
        };
        match taken {
            Ok(()) => Ok(Lock(file)),
            Err(fs::TryLockError::WouldBlock) => Err(Error::InUse(match hold {
                Hold::Node => {
                    format!("another disot-node runs on the data directory {}", self.path.display())
                }
                Hold::StoreWrite => {
                    "gc is running on this data directory: try again once it is done".to_owned()
                }
                Hold::StoreSweep => {
                    "content is being added, pinned or unpinned in this data directory: \
                     try gc again once that is done"
                        .to_owned()
                }
            })),
            Err(fs::TryLockError::Error(e)) => Err(unusable(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node's identity key, created on first use.
    pub fn identity(&self) -> Result<Keypair, Error> {
        self.load_or_create(
            IDENTITY_FILE,
            |bytes| Keypair::from_protobuf_encoding(bytes).map_err(|e| e.to_string()),
            || {
                let key = Keypair::generate_ed25519();
                let bytes = key.to_protobuf_encoding().map_err(|e| e.to_string())?;
                Ok((key, bytes))
            },
        )
    }

    /// The WebRTC certificate, created on first use.
    pub fn certificate(&self) -> Result<Certificate, Error> {
        self.load_or_create(
            CERT_FILE,
            |bytes| {
                let pem = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
                Certificate::from_pem(pem).map_err(|e| e.to_string())
            },
            || {
                let cert = Certificate::generate(&mut rand::rng()).map_err(|e| e.to_string())?;
                let pem = cert.serialize_pem().into_bytes();
                Ok((cert, pem))
            },
        )
    }

    /// Parse `name` if it exists (a damaged file is an error, never replaced); otherwise create
    /// the value and store it.
    fn load_or_create<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
        create: impl FnOnce() -> Result<(T, Vec<u8>), String>,
    ) -> Result<T, Error> {
        let file = self.path.join(name);
        match fs::read(&file) {
            Ok(bytes) => parse(&bytes).map_err(|reason| Error::Damaged { path: file, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (value, bytes) = create().map_err(Error::Create)?;
                self.write_private(&file, &bytes)?;
                Ok(value)
            }
            Err(source) => Err(Error::Unusable { path: file, source }),
        }
    }

    fn write_private(&self, file: &Path, bytes: &[u8]) -> Result<(), Error> {
        let unusable = |source| Error::Unusable { path: file.to_owned(), source };
        let tmp = file.with_extension("tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(unusable)?;
        f.write_all(bytes).map_err(unusable)?;
        f.sync_all().map_err(unusable)?;
        fs::rename(&tmp, file).map_err(unusable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("disot-node-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn identity_and_certificate_are_stable_across_opens() {
        let dir = temp_dir("stable");
        let first = DataDir::open(&dir).expect("open");
        let key = first.identity().expect("identity");
        let cert = first.certificate().expect("cert");
        let again = DataDir::open(&dir).expect("reopen");
        assert_eq!(again.identity().expect("identity").public(), key.public());
        assert_eq!(again.certificate().expect("cert").fingerprint(), cert.fingerprint());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn damaged_identity_is_reported_not_replaced() {
        let dir = temp_dir("damaged");
        let data = DataDir::open(&dir).expect("open");
        fs::write(dir.join(IDENTITY_FILE), b"not a key").expect("write");
        let err = data.identity().expect_err("damaged");
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        assert_eq!(fs::read(dir.join(IDENTITY_FILE)).expect("kept"), b"not a key");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_file_is_not_a_data_dir() {
        let dir = temp_dir("file");
        fs::write(&dir, b"x").expect("write");
        assert!(matches!(DataDir::open(&dir), Err(Error::NotADirectory(_))));
        fs::remove_file(&dir).expect("cleanup");
    }
}
