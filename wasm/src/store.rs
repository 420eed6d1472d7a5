//! IndexedDB storage of the browser node: the identity key, the user's settings, and the
//! block store (`disot_core::store::BlockStore`).
//!
//! The identity is written with `add`, which fails if a key is already there: if two contexts
//! ever start at once on a fresh profile, one wins and both end up with the winner's key.
//! Blocks are written in one transaction per `put_blocks` call and verified against their CID
//! on the way in and on the way out; an object's record is written after its blocks, so an
//! object becomes visible all at once.

use cid::Cid;
use disot_core::api::Settings;
use disot_core::permissions::Grants;
use disot_core::store::{
    self as cas, check_block, check_digest, join_to, BlockStore, ObjectRecord,
};
use disot_core::unixfs::Block;
use idb::{Database, DatabaseEvent, Factory, ObjectStoreParams, TransactionMode};
use libp2p::identity::Keypair;
use std::collections::{BTreeSet, HashSet};
use wasm_bindgen::{JsCast as _, JsValue};

const DB_NAME: &str = "disot-peer";
const DB_VERSION: u32 = 4;
const KEYS: &str = "keys";
const SETTINGS: &str = "settings";
const BLOCKS: &str = "blocks";
const OBJECTS: &str = "objects";
/// Which blocks a fetch for an origin stored, while that fetch is not done (keyed
/// `"<origin> <cid>"`): what a later fetch for that origin may take from the store instead of
/// from a peer (see [`Store::fetched_for`]).
const FETCHED: &str = "fetched";
/// The `sha256:` names of the objects, keyed `"<sha256 name> <cid>"` (no values): an object
/// is found by its name without reading every record ([`Store::objects_named`]). Written and
/// removed with each record, in the same transaction.
const NAMES: &str = "sha256-names";
/// In [`SETTINGS`]: [`NAMES`] holds the names of every record (records written before it
/// existed were named once, when a store first opened with it).
const NAMES_BUILT_KEY: &str = "sha256-names-built";
const IDENTITY_KEY: &str = "identity";
/// The identity key sealed under the user's passphrase, in place of [`IDENTITY_KEY`].
const SEALED_IDENTITY_KEY: &str = "identity-sealed";
const SETTINGS_KEY: &str = "settings";
const GRANTS_KEY: &str = "grants";
const TRUST_KEY: &str = "trust";
const RECEIVED_TRUST_KEY: &str = "trust-received";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("indexeddb: {0}")]
    Idb(#[from] idb::Error),
    #[error("stored identity key is damaged: {0}")]
    DamagedIdentity(String),
    #[error("stored settings are damaged: {0}")]
    DamagedSettings(String),
    #[error("the identity key is locked: unlock it with its passphrase")]
    Locked,
}

pub struct Store {
    name: String,
    /// Replaced when the browser closes the connection under us (it does after a write fails
    /// for lack of disk space): every later transaction would fail otherwise.
    db: std::cell::RefCell<std::rc::Rc<Database>>,
    /// When blocks were last removed through [`Store::removed`] (ms since the epoch).
    removed_at: std::cell::Cell<f64>,
    /// Whether [`NAMES`] names every object (else a name is looked for in every record).
    names_built: std::cell::Cell<bool>,
}

/// The key of `record`'s name in [`NAMES`].
fn name_key(record: &ObjectRecord) -> JsValue {
    JsValue::from_str(&format!("{} {}", record.sha256, record.cid))
}

// The few IndexedDB operations everything here is made of, one transaction each.
impl Store {
    /// A transaction on `stores`, reopening the database once if the browser has closed it.
    async fn tx(
        &self,
        stores: &[&str],
        mode: TransactionMode,
    ) -> Result<idb::Transaction, idb::Error> {
        let db = self.db.borrow().clone();
        match db.transaction(stores, mode) {
            Ok(tx) => Ok(tx),
            Err(e) if e.to_string().contains("InvalidStateError") => {
                tracing::warn!("storage connection was closed by the browser ({e}); reopening");
                let fresh = std::rc::Rc::new(open_database(&self.name).await?);
                *self.db.borrow_mut() = fresh.clone();
                fresh.transaction(stores, mode)
            }
            Err(e) => Err(e),
        }
    }

    async fn read(&self, store: &str, key: &str) -> Result<Option<JsValue>, idb::Error> {
        match self.read_once(store, key).await {
            // A read the browser aborted while closing the connection: once more, on a new one.
            Err(e) if e.to_string().contains("AbortError") => self.read_once(store, key).await,
            other => other,
        }
    }

    async fn read_once(&self, store: &str, key: &str) -> Result<Option<JsValue>, idb::Error> {
        let tx = self.tx(&[store], TransactionMode::ReadOnly).await?;
        let value = tx.object_store(store)?.get(JsValue::from_str(key))?.await?;
        tx.await?;
        Ok(value)
    }

    async fn write(&self, store: &str, key: &str, value: &JsValue) -> Result<(), idb::Error> {
        let tx = self.tx(&[store], TransactionMode::ReadWrite).await?;
        tx.object_store(store)?.put(value, Some(&JsValue::from_str(key)))?.await?;
        tx.commit()?.await?;
        Ok(())
    }

    async fn remove(&self, store: &str, key: &str) -> Result<(), idb::Error> {
        let tx = self.tx(&[store], TransactionMode::ReadWrite).await?;
        tx.object_store(store)?.delete(JsValue::from_str(key))?.await?;
        tx.commit()?.await?;
        Ok(())
    }

    /// Every key (`keys`) or every value of a store.
    async fn read_all(&self, store: &str, keys: bool) -> Result<Vec<JsValue>, idb::Error> {
        self.read_range(store, keys, None).await
    }

    /// Every key (`keys`) or every value of a store in `range` (all of them for `None`).
    async fn read_range(
        &self,
        store: &str,
        keys: bool,
        range: Option<idb::KeyRange>,
    ) -> Result<Vec<JsValue>, idb::Error> {
        let tx = self.tx(&[store], TransactionMode::ReadOnly).await?;
        let os = tx.object_store(store)?;
        let range = range.map(idb::Query::from);
        let all = if keys {
            os.get_all_keys(range, None)?.await?
        } else {
            os.get_all(range, None)?.await?
        };
        tx.await?;
        Ok(all)
    }

    /// A value stored as JSON text under `key` in the settings store.
    async fn read_setting<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let Some(v) = self.read(SETTINGS, key).await? else { return Ok(None) };
        let text =
            v.as_string().ok_or_else(|| Error::DamagedSettings(format!("{key} is not text")))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::DamagedSettings(format!("{key}: {e}")))
    }

    async fn write_setting<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
        let text =
            serde_json::to_string(value).map_err(|e| Error::DamagedSettings(e.to_string()))?;
        Ok(self.write(SETTINGS, key, &JsValue::from_str(&text)).await?)
    }
}

impl Store {
    pub async fn open() -> Result<Store, Error> {
        Self::open_named(DB_NAME).await
    }

    /// Open (creating or upgrading) the database called `name`; tests use their own names.
    pub async fn open_named(name: &str) -> Result<Store, Error> {
        let db = open_database(name).await?;
        let store = Store {
            name: name.to_owned(),
            db: std::cell::RefCell::new(std::rc::Rc::new(db)),
            removed_at: std::cell::Cell::new(f64::NEG_INFINITY),
            names_built: std::cell::Cell::new(false),
        };
        match store.build_names().await {
            Ok(()) => store.names_built.set(true),
            Err(e) => tracing::warn!("naming the stored objects by sha256 (each name is looked for in every record): {e}"),
        }
        Ok(store)
    }

    /// Name every object in [`NAMES`], once: records written before it existed have no key
    /// there. Records and keys are read and written in one transaction, so that no record
    /// written meanwhile goes unnamed.
    async fn build_names(&self) -> Result<(), idb::Error> {
        if self.read(SETTINGS, NAMES_BUILT_KEY).await?.is_some() {
            return Ok(());
        }
        let tx = self.tx(&[SETTINGS, OBJECTS, NAMES], TransactionMode::ReadWrite).await?;
        let settings = tx.object_store(SETTINGS)?;
        if settings.get(JsValue::from_str(NAMES_BUILT_KEY))?.await?.is_none() {
            let records = tx.object_store(OBJECTS)?.get_all(None, None)?.await?;
            let names = tx.object_store(NAMES)?;
            for record in records.iter().filter_map(|r| record_from(r).ok()) {
                drop(names.put(&JsValue::TRUE, Some(&name_key(&record)))?);
            }
            drop(settings.put(&JsValue::TRUE, Some(&JsValue::from_str(NAMES_BUILT_KEY)))?);
        }
        tx.commit()?.await?;
        Ok(())
    }

    /// Whether [`NAMES`] names every object (for tests).
    #[doc(hidden)]
    pub fn names_built(&self) -> bool {
        self.names_built.get()
    }

    /// How many keys [`NAMES`] holds (for tests).
    #[doc(hidden)]
    pub async fn name_keys(&self) -> Result<usize, idb::Error> {
        Ok(self.read_all(NAMES, true).await?.len())
    }

    /// For tests: forget that [`NAMES`] names every object, as a store written before it
    /// existed (what `build_names` then does is tested on a store opened again).
    #[doc(hidden)]
    pub async fn forget_names(&self) -> Result<(), idb::Error> {
        let tx = self.tx(&[SETTINGS, NAMES], TransactionMode::ReadWrite).await?;
        drop(tx.object_store(SETTINGS)?.delete(JsValue::from_str(NAMES_BUILT_KEY))?);
        drop(tx.object_store(NAMES)?.clear()?);
        tx.commit()?.await?;
        self.names_built.set(false);
        Ok(())
    }

    /// Note that blocks were removed just now: the room they took may show as free only later
    /// (Firefox deletes the files of Blob values some seconds after).
    pub(crate) fn removed(&self) {
        self.removed_at.set(crate::node::now_ms());
    }

    /// Milliseconds since blocks were last removed ([`Store::removed`]).
    pub(crate) fn since_removal(&self) -> f64 {
        crate::node::now_ms() - self.removed_at.get()
    }

    /// The peer's identity key, created and stored on first run.
    pub async fn identity(&self) -> Result<Keypair, Error> {
        if let Some(bytes) = self.read(KEYS, IDENTITY_KEY).await? {
            return decode_identity(&bytes);
        }
        // A locked identity is opened with its passphrase; a new key must never replace it.
        if self.sealed_identity().await?.is_some() {
            return Err(Error::Locked);
        }
        let key = Keypair::generate_ed25519();
        let encoded =
            key.to_protobuf_encoding().map_err(|e| Error::DamagedIdentity(e.to_string()))?;
        let value = js_sys::Uint8Array::from(encoded.as_slice());
        let tx = self.tx(&[KEYS], TransactionMode::ReadWrite).await?;
        let added =
            tx.object_store(KEYS)?.add(&value, Some(&JsValue::from_str(IDENTITY_KEY)))?.await;
        match added {
            Ok(_) => {
                tx.commit()?.await?;
                Ok(key)
            }
            // Another context stored a key first: use that one.
            Err(_) => match self.read(KEYS, IDENTITY_KEY).await? {
                Some(bytes) => decode_identity(&bytes),
                None => Err(Error::DamagedIdentity("identity could not be stored".into())),
            },
        }
    }

    /// The trust credentials this peer issued (W3C VCs, as JSON).
    pub async fn trust_credentials(&self) -> Result<Vec<serde_json::Value>, Error> {
        Ok(self.read_setting(TRUST_KEY).await?.unwrap_or_default())
    }

    pub async fn set_trust_credentials(&self, all: &[serde_json::Value]) -> Result<(), Error> {
        self.write_setting(TRUST_KEY, &all).await
    }

    /// Trust credentials other peers issued and sent us (verified when taken).
    pub async fn received_trust(&self) -> Result<Vec<serde_json::Value>, Error> {
        Ok(self.read_setting(RECEIVED_TRUST_KEY).await?.unwrap_or_default())
    }

    pub async fn set_received_trust(&self, all: &[serde_json::Value]) -> Result<(), Error> {
        self.write_setting(RECEIVED_TRUST_KEY, &all).await
    }

    /// The saved sync documents and states: `(key, bytes)` for each key under `prefix`.
    pub async fn saved_bytes(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        for key in self.read_all(SETTINGS, true).await? {
            let Some(key) = key.as_string().filter(|k| k.starts_with(prefix)) else { continue };
            if let Some(v) = self.read(SETTINGS, &key).await? {
                out.push((key, js_sys::Uint8Array::new(&v).to_vec()));
            }
        }
        Ok(out)
    }

    /// Save `items` (key, bytes) and delete the keys `gone` in one transaction: all of it, or
    /// none.
    pub async fn save_bytes(
        &self,
        items: &[(String, Vec<u8>)],
        gone: &[String],
    ) -> Result<(), Error> {
        if items.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let tx = self.tx(&[SETTINGS], TransactionMode::ReadWrite).await?;
        let os = tx.object_store(SETTINGS)?;
        for key in gone {
            os.delete(JsValue::from_str(key))?.await?;
        }
        for (key, bytes) in items {
            let value = js_sys::Uint8Array::from(bytes.as_slice());
            os.put(&value, Some(&JsValue::from_str(key)))?.await?;
        }
        tx.commit()?.await?;
        Ok(())
    }

    /// A small JSON value kept under `key` (e.g. the sync policy).
    pub async fn json_setting<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, Error> {
        self.read_setting(key).await
    }

    pub async fn set_json_setting<T: serde::Serialize>(
        &self,
        key: &str,
        v: &T,
    ) -> Result<(), Error> {
        self.write_setting(key, v).await
    }

    /// Replace the identity key (from a backup); the node uses it from its next start.
    /// The sealed identity (a backup's text), when the lock is on.
    pub async fn sealed_identity(&self) -> Result<Option<String>, Error> {
        Ok(self.read(KEYS, SEALED_IDENTITY_KEY).await?.and_then(|v| v.as_string()))
    }

    /// Turn the lock on: the sealed form replaces the plain key, in one transaction.
    pub async fn lock_identity(&self, sealed: &str) -> Result<(), Error> {
        let tx = self.tx(&[KEYS], TransactionMode::ReadWrite).await?;
        let keys = tx.object_store(KEYS)?;
        keys.put(&JsValue::from_str(sealed), Some(&JsValue::from_str(SEALED_IDENTITY_KEY)))?
            .await?;
        keys.delete(JsValue::from_str(IDENTITY_KEY))?.await?;
        tx.commit()?.await?;
        Ok(())
    }

    /// Store `key` in the clear again, and drop any sealed form (the lock is off; a restored
    /// backup also ends up here).
    pub async fn replace_identity(&self, key: &Keypair) -> Result<(), Error> {
        let encoded =
            key.to_protobuf_encoding().map_err(|e| Error::DamagedIdentity(e.to_string()))?;
        let value = js_sys::Uint8Array::from(encoded.as_slice());
        let tx = self.tx(&[KEYS], TransactionMode::ReadWrite).await?;
        let keys = tx.object_store(KEYS)?;
        keys.put(&value, Some(&JsValue::from_str(IDENTITY_KEY)))?.await?;
        keys.delete(JsValue::from_str(SEALED_IDENTITY_KEY))?.await?;
        tx.commit()?.await?;
        Ok(())
    }

    pub async fn settings(&self) -> Result<Option<Settings>, Error> {
        self.read_setting(SETTINGS_KEY).await
    }

    pub async fn set_settings(&self, settings: &Settings) -> Result<(), Error> {
        self.write_setting(SETTINGS_KEY, settings).await
    }

    /// The origins' permission grants.
    pub async fn grants(&self) -> Result<Grants, Error> {
        Ok(self.read_setting(GRANTS_KEY).await?.unwrap_or_default())
    }

    pub async fn set_grants(&self, grants: &Grants) -> Result<(), Error> {
        self.write_setting(GRANTS_KEY, grants).await
    }

    /// Bytes the browser says this profile may still store (quota minus usage), if it says.
    /// With `unlimitedStorage` the quota is the free disk space, so this is how a full disk is
    /// seen before a write fails (Chromium may acknowledge a write and lose it when the disk is
    /// full).
    pub async fn room(&self) -> Option<f64> {
        use js_sys::Reflect;
        let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
        let storage = Reflect::get(&navigator, &"storage".into()).ok()?;
        let estimate: js_sys::Function =
            Reflect::get(&storage, &"estimate".into()).ok()?.dyn_into().ok()?;
        let promise: js_sys::Promise = estimate.call0(&storage).ok()?.dyn_into().ok()?;
        let e = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
        let quota = Reflect::get(&e, &"quota".into()).ok()?.as_f64()?;
        let usage = Reflect::get(&e, &"usage".into()).ok()?.as_f64()?;
        Some(quota - usage)
    }

    /// Overwrite a stored block's bytes without checks, to test corruption detection.
    pub async fn corrupt(&self, cid: &Cid, data: &[u8]) -> cas::Result<()> {
        self.write(BLOCKS, &cid.to_string(), &js_sys::Uint8Array::from(data).into())
            .await
            .map_err(backend)
    }
}

/// The key of block `cid`'s note in [`FETCHED`] for `origin`.
fn fetched_key(origin: &str, cid: &str) -> String {
    format!("{origin} {cid}")
}

/// The CID a [`fetched_key`] names.
fn fetched_cid(key: &str) -> Option<&str> {
    key.rsplit_once(' ').map(|(_, cid)| cid)
}

async fn open_database(name: &str) -> Result<Database, idb::Error> {
    let factory = Factory::new()?;
    let mut request = factory.open(name, Some(DB_VERSION))?;
    request.on_upgrade_needed(|event| {
        let Ok(db) = event.database() else { return };
        for name in [KEYS, SETTINGS, BLOCKS, OBJECTS, FETCHED, NAMES] {
            if !db.store_names().iter().any(|n| n == name) {
                if let Err(e) = db.create_object_store(name, ObjectStoreParams::new()) {
                    tracing::error!("creating object store {name}: {e}");
                }
            }
        }
    });
    request.await
}

/// Check that `bytes` is the block named by `cid`, hashing with the browser's SHA-256 (WebCrypto:
/// several times faster than SHA-256 compiled to wasm, and off this thread).
async fn verify(cid: &Cid, bytes: &js_sys::Uint8Array) -> cas::Result<()> {
    check_block(cid, bytes.length() as usize)?;
    let digest = sha256(bytes)
        .await
        .map_err(|e| cas::Error::Backend(format!("hashing with WebCrypto: {e:?}")))?;
    check_digest(cid, &digest)
}

/// SHA-256 with the `crypto.subtle` of whichever global this runs in (window or worker).
pub(crate) async fn sha256(bytes: &js_sys::Uint8Array) -> Result<[u8; 32], JsValue> {
    digest_of(start_digest(|| bytes.clone())?).await
}

/// SHA-256 of bytes in this memory with the browser's own (several times faster than hashing
/// here). WebCrypto copies its input when called, so it is given a view of this memory rather
/// than a copy in a new array.
#[allow(unsafe_code)]
pub(crate) async fn webcrypto_sha256(data: &[u8]) -> Result<[u8; 32], JsValue> {
    // SAFETY: the view is handed to `digest` at once, with nothing allocated here in between
    // (which could grow this memory and move `data`), and `digest` copies it before returning.
    digest_of(start_digest(|| unsafe { js_sys::Uint8Array::view(data) })?).await
}

/// `crypto.subtle.digest("SHA-256", input())`, with `input` made just before the call.
fn start_digest(input: impl FnOnce() -> js_sys::Uint8Array) -> Result<js_sys::Promise, JsValue> {
    use js_sys::Reflect;
    let crypto = Reflect::get(&js_sys::global(), &"crypto".into())?;
    let subtle = Reflect::get(&crypto, &"subtle".into())?;
    let digest: js_sys::Function = Reflect::get(&subtle, &"digest".into())?.into();
    let algorithm = JsValue::from_str("SHA-256");
    Ok(digest.call2(&subtle, &algorithm, &input())?.into())
}

async fn digest_of(promise: js_sys::Promise) -> Result<[u8; 32], JsValue> {
    let buffer = wasm_bindgen_futures::JsFuture::from(promise).await?;
    let digest = js_sys::Uint8Array::new(&buffer);
    if digest.length() != 32 {
        return Err(JsValue::from_str("a SHA-256 digest is 32 bytes"));
    }
    let mut out = [0u8; 32];
    digest.copy_to(&mut out);
    Ok(out)
}

fn decode_identity(value: &JsValue) -> Result<Keypair, Error> {
    let bytes = js_sys::Uint8Array::new(value).to_vec();
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| Error::DamagedIdentity(e.to_string()))
}

fn backend(e: idb::Error) -> cas::Error {
    let text = e.to_string();
    if text.contains("QuotaExceeded") {
        cas::Error::QuotaExceeded(text)
    } else {
        cas::Error::Backend(text)
    }
}

/// A failed block write. Out of quota, browsers report QuotaExceededError; out of disk, Chromium
/// aborts the transaction (AbortError / UnknownError) and then closes the connection.
fn write_failure(e: idb::Error) -> cas::Error {
    let text = e.to_string();
    if text.contains("QuotaExceeded")
        || text.contains("AbortError")
        || text.contains("UnknownError")
    {
        cas::Error::QuotaExceeded(format!(
            "the browser refused to store more (disk or quota full?): {text}"
        ))
    } else {
        cas::Error::Backend(text)
    }
}

/// The bytes of block `cid` as read from the store, checked against its CID.
async fn verified(cid: &Cid, value: JsValue) -> cas::Result<Vec<u8>> {
    Ok(verified_js(cid, value).await?.to_vec())
}

/// The JS array of block `cid` as read from the store, checked against its CID. A block may be
/// stored as a `Uint8Array` or as a `Blob` (uploads store the page's pieces as the Blobs they
/// came in: IndexedDB writes and reads Blobs faster than arrays, in both browsers).
async fn verified_js(cid: &Cid, value: JsValue) -> cas::Result<js_sys::Uint8Array> {
    let bytes = match value.dyn_into::<web_sys::Blob>() {
        Ok(blob) => {
            let buffer = wasm_bindgen_futures::JsFuture::from(blob.array_buffer())
                .await
                .map_err(|e| cas::Error::Backend(format!("reading block {cid}: {e:?}")))?;
            js_sys::Uint8Array::new(&buffer)
        }
        // Stored as a Uint8Array: used as it is (`new Uint8Array(array)` would copy).
        Err(v) => {
            v.dyn_into::<js_sys::Uint8Array>().unwrap_or_else(|v| js_sys::Uint8Array::new(&v))
        }
    };
    verify(cid, &bytes).await?;
    Ok(bytes)
}

/// The length of a block's value as stored (a `Uint8Array` or a `Blob`); `None` for anything
/// else.
pub(crate) fn value_len(value: &JsValue) -> Option<usize> {
    if let Some(array) = value.dyn_ref::<js_sys::Uint8Array>() {
        Some(array.length() as usize)
    } else {
        value.dyn_ref::<web_sys::Blob>().map(|blob| blob.size() as usize)
    }
}

impl Store {
    /// Block `cid` as the JS array storage gives, checked against its CID: for a reader that
    /// copies parts of it straight to its answer, without a copy into this memory.
    pub(crate) async fn get_js(&self, cid: &Cid) -> cas::Result<Option<js_sys::Uint8Array>> {
        match self.read(BLOCKS, &cid.to_string()).await.map_err(backend)? {
            Some(v) => Ok(Some(verified_js(cid, v).await?)),
            None => Ok(None),
        }
    }

    /// Block `cid` checked against its CID, as [`Store::get_js`] gives it, or (see
    /// [`Leaves`]) as the `Blob` it was stored as once its bytes have been read and checked.
    /// A Blob's bytes cannot change, so a reader in another process reads the same bytes from
    /// it without their passing through this one.
    pub(crate) async fn get_part(
        &self,
        cid: &Cid,
        leaves: Leaves<'_>,
    ) -> cas::Result<Option<JsValue>> {
        match self.read(BLOCKS, &cid.to_string()).await.map_err(backend)? {
            Some(v) if v.is_instance_of::<web_sys::Blob>() && leaves != Leaves::Bytes => {
                let read = verified_js(cid, v.clone()).await?;
                if let Leaves::Blobs(Some(release)) = leaves {
                    let _ = release.call1(&JsValue::NULL, &read.buffer());
                }
                Ok(Some(v))
            }
            Some(v) => Ok(Some(verified_js(cid, v).await?.into())),
            None => Ok(None),
        }
    }
}

/// How a read hands on the leaves storage keeps as Blobs.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Leaves<'a> {
    /// As their bytes.
    Bytes,
    /// As the Blobs, checked; the bytes read to check one are then given to the function, if
    /// any (`releaseReceived` of `extension/*/memory.js`: Firefox frees them at once).
    Blobs(Option<&'a js_sys::Function>),
}

impl<'a> Leaves<'a> {
    /// Blobs if a reader asked for them (`blobs`), else bytes.
    pub(crate) fn asked(blobs: bool, release: Option<&'a js_sys::Function>) -> Self {
        if blobs {
            Leaves::Blobs(release)
        } else {
            Leaves::Bytes
        }
    }
}

/// Each block's bytes as a JS array, for IndexedDB.
pub(crate) fn js_values(blocks: &[Block]) -> Vec<(Cid, JsValue)> {
    blocks.iter().map(|b| (b.cid, js_sys::Uint8Array::from(b.data.as_slice()).into())).collect()
}

fn record_from(v: &JsValue) -> cas::Result<ObjectRecord> {
    let text =
        v.as_string().ok_or_else(|| cas::Error::Backend("object record is not text".into()))?;
    serde_json::from_str(&text).map_err(|e| cas::Error::Backend(e.to_string()))
}

// What getting and fetching one-block objects needs: the record and the block in one
// transaction each way (a first byte from a peer waits for every transaction on its path).
impl Store {
    /// An object's record and its root block (verified) if the record says the object is at
    /// most `max` bytes, read together.
    pub(crate) async fn object_and_block_up_to(
        &self,
        cid: &Cid,
        max: u64,
    ) -> cas::Result<(Option<ObjectRecord>, Option<Vec<u8>>)> {
        let key = JsValue::from_str(&cid.to_string());
        let tx = self.tx(&[OBJECTS, BLOCKS], TransactionMode::ReadOnly).await.map_err(backend)?;
        // Both handlers are attached before either request can complete.
        let record = std::future::IntoFuture::into_future(
            tx.object_store(OBJECTS).map_err(backend)?.get(key.clone()).map_err(backend)?,
        );
        let block = std::future::IntoFuture::into_future(
            tx.object_store(BLOCKS).map_err(backend)?.get(key).map_err(backend)?,
        );
        let (record, block) = futures::try_join!(record, block).map_err(backend)?;
        tx.await.map_err(backend)?;
        let record = record.as_ref().map(record_from).transpose()?;
        // Larger blocks are stored as Blobs: their handle is read, not their bytes.
        let wanted = record.as_ref().is_none_or(|r| r.size <= max);
        let block = match block {
            Some(v) if wanted => Some(verified(cid, v).await?),
            _ => None,
        };
        Ok((record, block))
    }

    /// Blocks (already verified) and the record of the object they make, in one transaction:
    /// the object is visible with all its blocks or not at all. A record stored meanwhile (the
    /// same content put by a page, a share made or revoked) stands, joined by `record`'s
    /// origins ([`ObjectRecord::joined`]): the record is read and written in that transaction.
    pub(crate) async fn put_fetched(
        &self,
        blocks: &[Block],
        record: &ObjectRecord,
    ) -> cas::Result<()> {
        self.put_values(&js_values(blocks), &[], None, Some((&record.cid, join_to(record))))
            .await?;
        Ok(())
    }

    /// `record` joined to the object's record as stored ([`ObjectRecord::joined`]), read and
    /// written in one transaction.
    pub(crate) async fn join_object(&self, record: &ObjectRecord) -> cas::Result<()> {
        self.update_object(&record.cid, join_to(record)).await?;
        Ok(())
    }
}

impl Store {
    /// Blocks an upload's importer made (hashed from these very bytes), in one transaction;
    /// their bytes are JS values already (`Uint8Array`s or `Blob`s) and go to IndexedDB as they
    /// are.
    pub(crate) async fn put_js_blocks(&self, blocks: &[(Cid, JsValue)]) -> cas::Result<()> {
        self.put_values(blocks, &[], None, None::<(&str, fn(_) -> _)>).await?;
        Ok(())
    }

    /// Blocks a fetch for `origin` brought (verified), noted as that origin's until the fetch
    /// is done ([`Store::fetched_for`]), in one transaction.
    pub async fn put_fetched_blocks(
        &self,
        blocks: &[(Cid, JsValue)],
        origin: &str,
    ) -> cas::Result<()> {
        self.put_values(blocks, &[], Some(origin), None::<(&str, fn(_) -> _)>).await?;
        Ok(())
    }

    /// The blocks that fetches for `origin` stored and that are not done: an interrupted fetch
    /// of an object takes these from the store when it runs again. Any other stored block may
    /// be another origin's, and a fetch for this one asks a peer for it as if it were not
    /// held: a page could otherwise learn what other sites hold (a DAG that links their
    /// blocks would fetch without asking for them).
    pub(crate) async fn fetched_for(&self, origin: &str) -> cas::Result<HashSet<Cid>> {
        let (low, high) = (fetched_key(origin, ""), format!("{origin}!"));
        let range = idb::KeyRange::bound(&low.as_str().into(), &high.into(), None, Some(true))
            .map_err(backend)?;
        let keys = self.read_range(FETCHED, true, Some(range)).await.map_err(backend)?;
        Ok(keys.iter().filter_map(|k| k.as_string()?.strip_prefix(&low)?.parse().ok()).collect())
    }

    /// A fetch for `origin` is done: its blocks are the object's now, and are no longer noted
    /// as fetched ([`Store::fetched_for`]).
    pub(crate) async fn fetch_done(
        &self,
        origin: &str,
        blocks: impl IntoIterator<Item = &Cid>,
    ) -> cas::Result<()> {
        let tx = self.tx(&[FETCHED], TransactionMode::ReadWrite).await.map_err(backend)?;
        let store = tx.object_store(FETCHED).map_err(backend)?;
        for cid in blocks {
            let key = JsValue::from_str(&fetched_key(origin, &cid.to_string()));
            drop(store.delete(idb::Query::from(key)).map_err(write_failure)?);
        }
        tx.commit().map_err(write_failure)?.await.map_err(write_failure)?;
        Ok(())
    }

    /// Remove the objects no origin keeps pinned and the blocks no pinned object reaches. What
    /// to remove is worked out from the records as they are; it is removed in one transaction
    /// that first reads the records again, and only if none changed meanwhile (`None`
    /// otherwise: try again). An object committed while this ran either changed the records
    /// (nothing is removed) or is committed after the removal and finds the blocks it needs
    /// gone ([`Store::commit_object`]), never half there.
    pub(crate) async fn collect_garbage(&self) -> cas::Result<Option<cas::Collected>> {
        let seen = self.read_all(OBJECTS, false).await.map_err(backend)?;
        let records = seen.iter().map(record_from).collect::<cas::Result<Vec<_>>>()?;
        let keep = cas::reached_from(self, records.iter().filter(|r| r.pinned)).await?;
        let unpinned: Vec<&str> =
            records.iter().filter(|r| !r.pinned).map(|r| r.cid.as_str()).collect();
        let blocks: Vec<Cid> =
            self.block_cids().await?.into_iter().filter(|c| !keep.contains(c)).collect();
        let Some(tx) = self.while_unchanged(&seen, &[OBJECTS, BLOCKS, FETCHED, NAMES]).await?
        else {
            return Ok(None);
        };
        let objects = tx.object_store(OBJECTS).map_err(backend)?;
        for cid in &unpinned {
            drop(objects.delete(JsValue::from_str(cid)).map_err(write_failure)?);
        }
        let names = tx.object_store(NAMES).map_err(backend)?;
        for record in records.iter().filter(|r| !r.pinned) {
            drop(names.delete(name_key(record)).map_err(write_failure)?);
        }
        let store = tx.object_store(BLOCKS).map_err(backend)?;
        for cid in &blocks {
            drop(store.delete(JsValue::from_str(&cid.to_string())).map_err(write_failure)?);
        }
        // No fetch runs meanwhile ([`crate::exchange::Exchange::collecting`]): what interrupted
        // ones stored is gone, or an object's now, and is fetched again if wanted.
        drop(tx.object_store(FETCHED).map_err(backend)?.clear().map_err(write_failure)?);
        tx.commit().map_err(write_failure)?.await.map_err(write_failure)?;
        Ok(Some(cas::Collected { objects: unpinned.len(), blocks: blocks.len() }))
    }

    /// Delete those of `candidates` that no object reaches and no fetch has noted as its own:
    /// the blocks an upload wrote before it failed or was abandoned (blocks another object
    /// shares stay). As [`Store::collect_garbage`], in one transaction that first reads the
    /// records again, and only if none changed meanwhile (`None` otherwise: try again): an
    /// object committed meanwhile either changed the records or finds a block it needs gone
    /// and says so ([`Store::commit_object`]), never unreadable. Returns how many it deleted
    /// (some may have been gone already).
    pub async fn remove_unreferenced(&self, candidates: &[Cid]) -> cas::Result<Option<usize>> {
        let seen = self.read_all(OBJECTS, false).await.map_err(backend)?;
        let records = seen.iter().map(record_from).collect::<cas::Result<Vec<_>>>()?;
        let keep = cas::reached_from(self, &records).await?;
        let candidates: BTreeSet<&Cid> = candidates.iter().filter(|c| !keep.contains(c)).collect();
        if candidates.is_empty() {
            return Ok(Some(0));
        }
        let Some(tx) = self.while_unchanged(&seen, &[OBJECTS, BLOCKS, FETCHED]).await? else {
            return Ok(None);
        };
        let noted = tx.object_store(FETCHED).map_err(backend)?;
        let noted = noted.get_all_keys(None, None).map_err(backend)?.await.map_err(backend)?;
        let fetching: HashSet<String> =
            noted.iter().filter_map(|k| Some(fetched_cid(&k.as_string()?)?.to_owned())).collect();
        let blocks = tx.object_store(BLOCKS).map_err(backend)?;
        let mut removed = 0;
        for name in candidates.iter().map(|c| c.to_string()) {
            if !fetching.contains(&name) {
                drop(blocks.delete(JsValue::from_str(&name)).map_err(write_failure)?);
                removed += 1;
            }
        }
        tx.commit().map_err(write_failure)?.await.map_err(write_failure)?;
        Ok(Some(removed))
    }

    /// A read-write transaction over `stores` (`OBJECTS` among them) if the objects' records
    /// are still those `seen`; else `None`, and nothing is done.
    async fn while_unchanged(
        &self,
        seen: &[JsValue],
        stores: &[&str],
    ) -> cas::Result<Option<idb::Transaction>> {
        let tx = self.tx(stores, TransactionMode::ReadWrite).await.map_err(backend)?;
        let objects = tx.object_store(OBJECTS).map_err(backend)?;
        let now = objects.get_all(None, None).map_err(backend)?.await.map_err(backend)?;
        let text = |all: &[JsValue]| all.iter().map(JsValue::as_string).collect::<Vec<_>>();
        if text(&now) != text(seen) {
            let _ = tx.abort();
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// A change to an object's record (as [`BlockStore::update_object`]) made only if every
    /// block of `present` is stored, in one transaction: a record never names blocks that went
    /// meanwhile (freed by garbage collection, or by another upload's clean-up, while this
    /// upload's blocks waited for their record). [`cas::Error::Missing`] names one that went.
    pub async fn commit_object<F>(
        &self,
        cid: &str,
        present: &[Cid],
        change: F,
    ) -> cas::Result<Option<ObjectRecord>>
    where
        F: FnOnce(Option<ObjectRecord>) -> Option<ObjectRecord>,
    {
        self.put_values(&[], present, None, Some((cid, change))).await
    }

    /// Blocks (noted as fetched for `fetched_for`, if given), and a change to an object's
    /// record if one is given (see [`BlockStore::update_object`]) made only if the blocks of
    /// `present` are stored, in one transaction: all of it is stored or none. Each put is
    /// queued without waiting: a failed put aborts the transaction, and its commit reports it.
    /// Resolves to the record written, if any.
    async fn put_values<F>(
        &self,
        blocks: &[(Cid, JsValue)],
        present: &[Cid],
        fetched_for: Option<&str>,
        record: Option<(&str, F)>,
    ) -> cas::Result<Option<ObjectRecord>>
    where
        F: FnOnce(Option<ObjectRecord>) -> Option<ObjectRecord>,
    {
        for (cid, value) in blocks {
            let len = value_len(value).ok_or_else(|| cas::Error::Malformed {
                cid: *cid,
                reason: "its bytes are neither a Uint8Array nor a Blob".into(),
            })?;
            check_block(cid, len)?;
        }
        // (Notes only for blocks written.)
        let fetched_for = fetched_for.filter(|_| !blocks.is_empty());
        let mut stores = Vec::with_capacity(3);
        if !(blocks.is_empty() && present.is_empty()) {
            stores.push(BLOCKS);
        }
        if record.is_some() {
            stores.extend([OBJECTS, NAMES]);
        }
        if fetched_for.is_some() {
            stores.push(FETCHED);
        }
        if stores.is_empty() {
            return Ok(None);
        }
        let tx = self.tx(&stores, TransactionMode::ReadWrite).await.map_err(backend)?;
        if !blocks.is_empty() {
            let store = tx.object_store(BLOCKS).map_err(backend)?;
            for (cid, bytes) in blocks {
                drop(
                    store
                        .put(bytes, Some(&JsValue::from_str(&cid.to_string())))
                        .map_err(write_failure)?,
                );
            }
        }
        if let Some(origin) = fetched_for {
            let store = tx.object_store(FETCHED).map_err(backend)?;
            for (cid, _) in blocks {
                let key = JsValue::from_str(&fetched_key(origin, &cid.to_string()));
                drop(store.put(&JsValue::TRUE, Some(&key)).map_err(write_failure)?);
            }
        }
        if !present.is_empty() {
            // Asked all at once, then awaited: the transaction stays open meanwhile.
            let store = tx.object_store(BLOCKS).map_err(backend)?;
            let counts = present
                .iter()
                .map(|cid| {
                    let key = idb::Query::from(JsValue::from_str(&cid.to_string()));
                    let count = store.count(Some(key)).map_err(backend)?;
                    Ok(async move { (cid, count.await) })
                })
                .collect::<cas::Result<Vec<_>>>()?;
            for (cid, count) in futures::future::join_all(counts).await {
                if count.map_err(backend)? == 0 {
                    let _ = tx.abort();
                    return Err(cas::Error::Missing(*cid));
                }
            }
        }
        let mut written = None;
        if let Some((cid, change)) = record {
            // Read while the blocks are written; the new record goes in once the read is back,
            // in the same transaction, so no other writer comes in between.
            let key = JsValue::from_str(cid);
            let objects = tx.object_store(OBJECTS).map_err(backend)?;
            let stored = objects.get(key.clone()).map_err(backend)?.await.map_err(backend)?;
            let changed = stored.as_ref().map(record_from).transpose().and_then(|stored| {
                // Named already if it was stored with this content (a pin, a share, a join).
                let named = stored.as_ref().map(|s| s.sha256.clone());
                let Some(new) = change(stored) else { return Ok(None) };
                let named = named.is_some_and(|sha256| sha256 == new.sha256);
                if new.cid != cid {
                    return Err(cas::Error::Backend(format!(
                        "a change to {cid}'s record wrote {}'s",
                        new.cid
                    )));
                }
                let text =
                    serde_json::to_string(&new).map_err(|e| cas::Error::Backend(e.to_string()))?;
                Ok(Some((new, text, named)))
            });
            match changed {
                Ok(Some((new, text, named))) => {
                    drop(
                        objects
                            .put(&JsValue::from_str(&text), Some(&key))
                            .map_err(write_failure)?,
                    );
                    if !named {
                        let names = tx.object_store(NAMES).map_err(backend)?;
                        let key = name_key(&new);
                        drop(names.put(&JsValue::TRUE, Some(&key)).map_err(write_failure)?);
                    }
                    written = Some(new);
                }
                Ok(None) => {}
                Err(e) => {
                    // Nothing of it is stored: not the blocks either.
                    let _ = tx.abort();
                    return Err(e);
                }
            }
        }
        tx.commit().map_err(write_failure)?.await.map_err(write_failure)?;
        Ok(written)
    }
}

impl BlockStore for Store {
    async fn get(&self, cid: &Cid) -> cas::Result<Option<Vec<u8>>> {
        match self.read(BLOCKS, &cid.to_string()).await.map_err(backend)? {
            Some(v) => Ok(Some(verified(cid, v).await?)),
            None => Ok(None),
        }
    }

    async fn has(&self, cid: &Cid) -> cas::Result<bool> {
        let tx = self.tx(&[BLOCKS], TransactionMode::ReadOnly).await.map_err(backend)?;
        let count = tx
            .object_store(BLOCKS)
            .map_err(backend)?
            .count(Some(idb::Query::from(JsValue::from_str(&cid.to_string()))))
            .map_err(backend)?
            .await
            .map_err(backend)?;
        tx.await.map_err(backend)?;
        Ok(count > 0)
    }

    async fn put_blocks(&self, blocks: &[Block]) -> cas::Result<()> {
        for b in blocks {
            check_block(&b.cid, b.data.len())?;
        }
        // Hash them all at once: the browser's SHA-256 runs them on its own threads.
        let values = js_values(blocks);
        // Made as Uint8Arrays just now, by `js_values`.
        let verifying = values.iter().map(|(cid, bytes)| verify(cid, bytes.unchecked_ref()));
        futures::future::try_join_all(verifying).await?;
        self.put_js_blocks(&values).await
    }

    async fn put_imported(&self, blocks: &[Block]) -> cas::Result<()> {
        // One transaction for the whole batch: all of it is stored or none.
        self.put_js_blocks(&js_values(blocks)).await
    }

    async fn delete_block(&self, cid: &Cid) -> cas::Result<()> {
        self.remove(BLOCKS, &cid.to_string()).await.map_err(backend)
    }

    async fn block_cids(&self) -> cas::Result<Vec<Cid>> {
        let keys = self.read_all(BLOCKS, true).await.map_err(backend)?;
        Ok(keys.iter().filter_map(|k| k.as_string()?.parse().ok()).collect())
    }

    async fn put_object(&self, record: &ObjectRecord) -> cas::Result<()> {
        let text = serde_json::to_string(record).map_err(|e| cas::Error::Backend(e.to_string()))?;
        let tx = self.tx(&[OBJECTS, NAMES], TransactionMode::ReadWrite).await.map_err(backend)?;
        let key = JsValue::from_str(&record.cid);
        let objects = tx.object_store(OBJECTS).map_err(backend)?;
        drop(objects.put(&JsValue::from_str(&text), Some(&key)).map_err(write_failure)?);
        let names = tx.object_store(NAMES).map_err(backend)?;
        drop(names.put(&JsValue::TRUE, Some(&name_key(record))).map_err(write_failure)?);
        tx.commit().map_err(write_failure)?.await.map_err(write_failure)?;
        Ok(())
    }

    async fn object(&self, cid: &str) -> cas::Result<Option<ObjectRecord>> {
        self.read(OBJECTS, cid).await.map_err(backend)?.as_ref().map(record_from).transpose()
    }

    async fn update_object<F>(&self, cid: &str, change: F) -> cas::Result<Option<ObjectRecord>>
    where
        F: FnOnce(Option<ObjectRecord>) -> Option<ObjectRecord>,
    {
        // Other frames, workers and the node write records too: read and write in one
        // transaction.
        self.put_values(&[], &[], None, Some((cid, change))).await
    }

    async fn delete_object(&self, cid: &str) -> cas::Result<()> {
        let tx = self.tx(&[OBJECTS, NAMES], TransactionMode::ReadWrite).await.map_err(backend)?;
        let objects = tx.object_store(OBJECTS).map_err(backend)?;
        let key = JsValue::from_str(cid);
        let stored = objects.get(key.clone()).map_err(backend)?.await.map_err(backend)?;
        if let Some(record) = stored.as_ref().map(record_from).transpose()? {
            let names = tx.object_store(NAMES).map_err(backend)?;
            drop(names.delete(name_key(&record)).map_err(write_failure)?);
        }
        drop(objects.delete(key).map_err(write_failure)?);
        tx.commit().map_err(write_failure)?.await.map_err(write_failure)?;
        Ok(())
    }

    async fn objects(&self) -> cas::Result<Vec<ObjectRecord>> {
        self.read_all(OBJECTS, false).await.map_err(backend)?.iter().map(record_from).collect()
    }

    async fn objects_named(&self, sha256: &str) -> cas::Result<Vec<ObjectRecord>> {
        if !self.names_built.get() {
            let all = self.objects().await?;
            return Ok(all.into_iter().filter(|o| o.sha256 == sha256).collect());
        }
        // The keys "<name> <cid>": from "<name> " to before "<name>!" ('!' follows ' ').
        let (low, high) = (format!("{sha256} "), format!("{sha256}!"));
        let range = idb::KeyRange::bound(&low.as_str().into(), &high.into(), None, Some(true))
            .map_err(backend)?;
        let tx = self.tx(&[NAMES, OBJECTS], TransactionMode::ReadOnly).await.map_err(backend)?;
        let keys = tx
            .object_store(NAMES)
            .map_err(backend)?
            .get_all_keys(Some(idb::Query::from(range)), None)
            .map_err(backend)?
            .await
            .map_err(backend)?;
        let objects = tx.object_store(OBJECTS).map_err(backend)?;
        // Asked all at once, then awaited: the transaction stays open meanwhile.
        let reads = keys
            .iter()
            .filter_map(|k| Some(JsValue::from_str(k.as_string()?.strip_prefix(&low)?)))
            .map(|cid| Ok(std::future::IntoFuture::into_future(objects.get(cid).map_err(backend)?)))
            .collect::<cas::Result<Vec<_>>>()?;
        let mut found = Vec::with_capacity(reads.len());
        for read in futures::future::join_all(reads).await {
            // (A key whose record is gone names nothing.)
            if let Some(value) = read.map_err(backend)? {
                let record = record_from(&value)?;
                if record.sha256 == sha256 {
                    found.push(record);
                }
            }
        }
        tx.await.map_err(backend)?;
        Ok(found)
    }
}

/// `N` bytes from the browser's cryptographic random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    let buf = js_sys::Uint8Array::new_with_length(N as u32);
    let crypto =
        js_sys::Reflect::get(&js_sys::global(), &"crypto".into()).unwrap_or(JsValue::UNDEFINED);
    let fill = js_sys::Reflect::get(&crypto, &"getRandomValues".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    match fill.map(|f| f.call1(&crypto, &buf)) {
        Some(Ok(_)) => {
            buf.copy_to(&mut out);
            Ok(out)
        }
        _ => Err("crypto.getRandomValues is not available".into()),
    }
}
