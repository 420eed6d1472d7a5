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
use disot_core::store::{self as cas, verify, BlockStore, ObjectRecord};
use disot_core::unixfs::Block;
use idb::{Database, DatabaseEvent, Factory, ObjectStoreParams, TransactionMode};
use libp2p::identity::Keypair;
use wasm_bindgen::JsValue;

const DB_NAME: &str = "disot-peer";
const DB_VERSION: u32 = 2;
const KEYS: &str = "keys";
const SETTINGS: &str = "settings";
const BLOCKS: &str = "blocks";
const OBJECTS: &str = "objects";
const IDENTITY_KEY: &str = "identity";
const SETTINGS_KEY: &str = "settings";
const GRANTS_KEY: &str = "grants";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("indexeddb: {0}")]
    Idb(#[from] idb::Error),
    #[error("stored identity key is damaged: {0}")]
    DamagedIdentity(String),
    #[error("stored settings are damaged: {0}")]
    DamagedSettings(String),
}

pub struct Store {
    db: Database,
}

impl Store {
    pub async fn open() -> Result<Store, Error> {
        Self::open_named(DB_NAME).await
    }

    /// Open (creating or upgrading) the database called `name`; tests use their own names.
    pub async fn open_named(name: &str) -> Result<Store, Error> {
        let factory = Factory::new()?;
        let mut request = factory.open(name, Some(DB_VERSION))?;
        request.on_upgrade_needed(|event| {
            let Ok(db) = event.database() else { return };
            for name in [KEYS, SETTINGS, BLOCKS, OBJECTS] {
                if !db.store_names().iter().any(|n| n == name) {
                    if let Err(e) = db.create_object_store(name, ObjectStoreParams::new()) {
                        tracing::error!("creating object store {name}: {e}");
                    }
                }
            }
        });
        Ok(Store { db: request.await? })
    }

    async fn get(&self, store: &str, key: &str) -> Result<Option<JsValue>, Error> {
        let tx = self.db.transaction(&[store], TransactionMode::ReadOnly)?;
        let value = tx.object_store(store)?.get(JsValue::from_str(key))?.await?;
        tx.await?;
        Ok(value)
    }

    /// The peer's identity key, created and stored on first run.
    pub async fn identity(&self) -> Result<Keypair, Error> {
        if let Some(bytes) = self.get(KEYS, IDENTITY_KEY).await? {
            return decode_identity(&bytes);
        }
        let key = Keypair::generate_ed25519();
        let encoded =
            key.to_protobuf_encoding().map_err(|e| Error::DamagedIdentity(e.to_string()))?;
        let value = js_sys::Uint8Array::from(encoded.as_slice());
        let tx = self.db.transaction(&[KEYS], TransactionMode::ReadWrite)?;
        let added =
            tx.object_store(KEYS)?.add(&value, Some(&JsValue::from_str(IDENTITY_KEY)))?.await;
        match added {
            Ok(_) => {
                tx.commit()?.await?;
                Ok(key)
            }
            // Another context stored a key first: use that one.
            Err(_) => match self.get(KEYS, IDENTITY_KEY).await? {
                Some(bytes) => decode_identity(&bytes),
                None => Err(Error::DamagedIdentity("identity could not be stored".into())),
            },
        }
    }

    pub async fn settings(&self) -> Result<Option<Settings>, Error> {
        match self.get(SETTINGS, SETTINGS_KEY).await? {
            None => Ok(None),
            Some(v) => {
                let text =
                    v.as_string().ok_or_else(|| Error::DamagedSettings("not text".into()))?;
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| Error::DamagedSettings(e.to_string()))
            }
        }
    }

    /// The origins' permission grants.
    pub async fn grants(&self) -> Result<Grants, Error> {
        match self.get(SETTINGS, GRANTS_KEY).await? {
            None => Ok(Grants::default()),
            Some(v) => {
                let text = v
                    .as_string()
                    .ok_or_else(|| Error::DamagedSettings("grants are not text".into()))?;
                serde_json::from_str(&text).map_err(|e| Error::DamagedSettings(e.to_string()))
            }
        }
    }

    pub async fn set_grants(&self, grants: &Grants) -> Result<(), Error> {
        let text =
            serde_json::to_string(grants).map_err(|e| Error::DamagedSettings(e.to_string()))?;
        let tx = self.db.transaction(&[SETTINGS], TransactionMode::ReadWrite)?;
        tx.object_store(SETTINGS)?
            .put(&JsValue::from_str(&text), Some(&JsValue::from_str(GRANTS_KEY)))?
            .await?;
        tx.commit()?.await?;
        Ok(())
    }

    pub async fn set_settings(&self, settings: &Settings) -> Result<(), Error> {
        let text =
            serde_json::to_string(settings).map_err(|e| Error::DamagedSettings(e.to_string()))?;
        let tx = self.db.transaction(&[SETTINGS], TransactionMode::ReadWrite)?;
        tx.object_store(SETTINGS)?
            .put(&JsValue::from_str(&text), Some(&JsValue::from_str(SETTINGS_KEY)))?
            .await?;
        tx.commit()?.await?;
        Ok(())
    }
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

impl Store {
    async fn get_value(&self, store: &str, key: &str) -> cas::Result<Option<JsValue>> {
        let tx = self.db.transaction(&[store], TransactionMode::ReadOnly).map_err(backend)?;
        let value = tx
            .object_store(store)
            .map_err(backend)?
            .get(JsValue::from_str(key))
            .map_err(backend)?
            .await
            .map_err(backend)?;
        tx.await.map_err(backend)?;
        Ok(value)
    }

    async fn put_value(&self, store: &str, key: &str, value: &JsValue) -> cas::Result<()> {
        let tx = self.db.transaction(&[store], TransactionMode::ReadWrite).map_err(backend)?;
        tx.object_store(store)
            .map_err(backend)?
            .put(value, Some(&JsValue::from_str(key)))
            .map_err(backend)?
            .await
            .map_err(backend)?;
        tx.commit().map_err(backend)?.await.map_err(backend)?;
        Ok(())
    }

    async fn delete_value(&self, store: &str, key: &str) -> cas::Result<()> {
        let tx = self.db.transaction(&[store], TransactionMode::ReadWrite).map_err(backend)?;
        tx.object_store(store)
            .map_err(backend)?
            .delete(JsValue::from_str(key))
            .map_err(backend)?
            .await
            .map_err(backend)?;
        tx.commit().map_err(backend)?.await.map_err(backend)?;
        Ok(())
    }

    /// Overwrite a stored block's bytes without checks, to test corruption detection.
    pub async fn corrupt(&self, cid: &Cid, data: &[u8]) -> cas::Result<()> {
        self.put_value(BLOCKS, &cid.to_string(), &js_sys::Uint8Array::from(data).into()).await
    }
}

impl BlockStore for Store {
    async fn get(&self, cid: &Cid) -> cas::Result<Option<Vec<u8>>> {
        match self.get_value(BLOCKS, &cid.to_string()).await? {
            Some(v) => {
                let data = js_sys::Uint8Array::new(&v).to_vec();
                verify(cid, &data).map(|()| Some(data))
            }
            None => Ok(None),
        }
    }

    async fn has(&self, cid: &Cid) -> cas::Result<bool> {
        let tx = self.db.transaction(&[BLOCKS], TransactionMode::ReadOnly).map_err(backend)?;
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
            verify(&b.cid, &b.data)?;
        }
        if blocks.is_empty() {
            return Ok(());
        }
        let tx = self.db.transaction(&[BLOCKS], TransactionMode::ReadWrite).map_err(backend)?;
        let store = tx.object_store(BLOCKS).map_err(backend)?;
        for b in blocks {
            let value: JsValue = js_sys::Uint8Array::from(b.data.as_slice()).into();
            store
                .put(&value, Some(&JsValue::from_str(&b.cid.to_string())))
                .map_err(backend)?
                .await
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)?.await.map_err(backend)?;
        Ok(())
    }

    async fn delete_block(&self, cid: &Cid) -> cas::Result<()> {
        self.delete_value(BLOCKS, &cid.to_string()).await
    }

    async fn block_cids(&self) -> cas::Result<Vec<Cid>> {
        let tx = self.db.transaction(&[BLOCKS], TransactionMode::ReadOnly).map_err(backend)?;
        let keys = tx
            .object_store(BLOCKS)
            .map_err(backend)?
            .get_all_keys(None, None)
            .map_err(backend)?
            .await
            .map_err(backend)?;
        tx.await.map_err(backend)?;
        Ok(keys.iter().filter_map(|k| k.as_string()?.parse().ok()).collect())
    }

    async fn put_object(&self, record: &ObjectRecord) -> cas::Result<()> {
        let text = serde_json::to_string(record).map_err(|e| cas::Error::Backend(e.to_string()))?;
        self.put_value(OBJECTS, &record.cid, &JsValue::from_str(&text)).await
    }

    async fn object(&self, cid: &str) -> cas::Result<Option<ObjectRecord>> {
        match self.get_value(OBJECTS, cid).await? {
            Some(v) => {
                let text = v
                    .as_string()
                    .ok_or_else(|| cas::Error::Backend("object record is not text".into()))?;
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| cas::Error::Backend(e.to_string()))
            }
            None => Ok(None),
        }
    }

    async fn delete_object(&self, cid: &str) -> cas::Result<()> {
        self.delete_value(OBJECTS, cid).await
    }

    async fn objects(&self) -> cas::Result<Vec<ObjectRecord>> {
        let tx = self.db.transaction(&[OBJECTS], TransactionMode::ReadOnly).map_err(backend)?;
        let values = tx
            .object_store(OBJECTS)
            .map_err(backend)?
            .get_all(None, None)
            .map_err(backend)?
            .await
            .map_err(backend)?;
        tx.await.map_err(backend)?;
        values
            .iter()
            .map(|v| {
                let text = v
                    .as_string()
                    .ok_or_else(|| cas::Error::Backend("object record is not text".into()))?;
                serde_json::from_str(&text).map_err(|e| cas::Error::Backend(e.to_string()))
            })
            .collect()
    }
}
