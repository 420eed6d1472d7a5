//! IndexedDB storage of the browser node: the identity key and the user's settings.
//!
//! The identity is written with `add`, which fails if a key is already there: if two contexts
//! ever start at once on a fresh profile, one wins and both end up with the winner's key.

use disot_core::api::Settings;
use idb::{Database, DatabaseEvent, Factory, ObjectStoreParams, TransactionMode};
use libp2p::identity::Keypair;
use wasm_bindgen::JsValue;

const DB_NAME: &str = "disot-peer";
const DB_VERSION: u32 = 1;
const KEYS: &str = "keys";
const SETTINGS: &str = "settings";
const IDENTITY_KEY: &str = "identity";
const SETTINGS_KEY: &str = "settings";

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
        let factory = Factory::new()?;
        let mut request = factory.open(DB_NAME, Some(DB_VERSION))?;
        request.on_upgrade_needed(|event| {
            let Ok(db) = event.database() else { return };
            for name in [KEYS, SETTINGS] {
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
