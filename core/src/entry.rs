//! Signed DISOT entries: `{id, contentHash, timestamp, type, metadata, signer, signature}`.
//!
//! The signature is Ed25519 by the signer's DID key (the peer's key) over
//! `"disot-entry/1\n"` followed by the JSON Canonicalization Scheme (RFC 8785) serialisation of
//! the entry without its `signature` member. JCS sorts the members of every object, nested ones
//! included, and fixes number and string forms, so every field at every depth is covered and
//! any implementation that follows RFC 8785 can check the signature. The prefix keeps these
//! signatures from being valid for any other message the key signs.

use libp2p_identity::Keypair;
use serde_json::{Map, Value};

use crate::identity;

/// What the signature is over, before the canonical entry.
pub const DOMAIN: &[u8] = b"disot-entry/1\n";
/// Largest canonical entry accepted (signing or verifying).
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
const MAX_ID: usize = 128;
const MAX_TYPE: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid entry: {0}")]
    Invalid(String),
    #[error("the entry is larger than {MAX_ENTRY_BYTES} bytes")]
    TooLarge,
    #[error("the signature does not match the entry and its signer")]
    BadSignature,
    #[error("the signer cannot sign: {0}")]
    Signer(String),
}

fn invalid(what: impl Into<String>) -> Error {
    Error::Invalid(what.into())
}

/// What a page asks to have signed: `{contentHash, type, metadata?, id?}`. The signer adds
/// `signer` and `timestamp`; `id` defaults to the `sha256:` name of the canonical entry.
pub fn unsigned_from_params(params: &Value, signer: &str, now_ms: u64) -> Result<Value, Error> {
    let Value::Object(given) = params else {
        return Err(invalid("expected {contentHash, type, metadata?, id?}"));
    };
    if let Some(unknown) =
        given.keys().find(|k| !["contentHash", "type", "metadata", "id"].contains(&k.as_str()))
    {
        return Err(invalid(format!("unknown field {:?}", truncate(unknown))));
    }
    let mut entry = Map::new();
    entry.insert("contentHash".into(), given.get("contentHash").cloned().unwrap_or(Value::Null));
    entry.insert("type".into(), given.get("type").cloned().unwrap_or(Value::Null));
    entry.insert(
        "metadata".into(),
        given.get("metadata").cloned().unwrap_or_else(|| Value::Object(Map::new())),
    );
    entry.insert("signer".into(), Value::String(signer.to_owned()));
    entry.insert("timestamp".into(), Value::from(now_ms));
    let id = match given.get("id") {
        Some(id) => id.clone(),
        None => Value::String(sha256_name(&canonical(&Value::Object(entry.clone()))?)),
    };
    entry.insert("id".into(), id);
    let entry = Value::Object(entry);
    check_fields(&entry)?;
    Ok(entry)
}

/// Sign `unsigned` (from [`unsigned_from_params`]) with `key`, whose DID must be its signer.
pub fn sign(key: &Keypair, unsigned: &Value) -> Result<Value, Error> {
    check_fields(unsigned)?;
    let did =
        identity::did_from_public_key(&key.public()).map_err(|e| Error::Signer(e.to_string()))?;
    if unsigned.get("signer").and_then(Value::as_str) != Some(did.as_str()) {
        return Err(invalid("the signer is not this peer's DID"));
    }
    let mut message = DOMAIN.to_vec();
    message.extend(canonical(unsigned)?);
    let signature = key.sign(&message).map_err(|e| Error::Signer(e.to_string()))?;
    let mut signed = unsigned.clone();
    if let Value::Object(m) = &mut signed {
        m.insert(
            "signature".into(),
            Value::String(multibase::encode(multibase::Base::Base58Btc, signature)),
        );
    }
    Ok(signed)
}

/// Check a signed entry: every field present and well formed, and the signature made by the
/// key of its `signer` over everything else in it. Returns the signer's DID.
pub fn verify(entry: &Value) -> Result<String, Error> {
    check_fields(entry)?;
    let Some(Value::String(signature)) = entry.get("signature") else {
        return Err(invalid("no signature"));
    };
    let (base, bytes) =
        multibase::decode(signature).map_err(|e| invalid(format!("signature: {e}")))?;
    if base != multibase::Base::Base58Btc || bytes.len() != 64 {
        return Err(invalid("signature: expected 64 bytes, multibase base58btc"));
    }
    let signer = entry.get("signer").and_then(Value::as_str).unwrap_or_default();
    let key = identity::public_key_from_did(signer).map_err(|e| invalid(format!("signer: {e}")))?;
    let mut unsigned = entry.clone();
    if let Value::Object(m) = &mut unsigned {
        m.remove("signature");
    }
    let mut message = DOMAIN.to_vec();
    message.extend(canonical(&unsigned)?);
    if key.verify(&message, &bytes) {
        Ok(signer.to_owned())
    } else {
        Err(Error::BadSignature)
    }
}

/// RFC 8785 canonical JSON, refused beyond [`MAX_ENTRY_BYTES`].
///
/// (Written here: the `serde_jcs` crate panics on numbers when serde_json keeps them as text,
/// which a dependency of ours switches on.)
pub fn canonical(value: &Value) -> Result<Vec<u8>, Error> {
    let mut out = String::new();
    write_canonical(value, &mut out, 0)?;
    Ok(out.into_bytes())
}

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 32;
/// Whether `n` is written as an integer (no fraction, no exponent) that no double is exactly
/// (2^60 is one, written out as JavaScript writes it; 2^53 + 1 is not).
fn inexact_integer(n: &serde_json::Number) -> bool {
    let text = n.to_string();
    if text.contains(['.', 'e', 'E']) {
        return false;
    }
    let Some(double) = n.as_f64().filter(|f| f.is_finite()) else { return true };
    // (A double this large is an integer; `as` is exact below 2^128, and saturates above.)
    text.trim_start_matches('-').parse::<u128>().map_or(true, |v| double.abs() as u128 != v)
}

fn write_canonical(value: &Value, out: &mut String, depth: usize) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(invalid(format!("nested deeper than {MAX_DEPTH}")));
    }
    if out.len() > MAX_ENTRY_BYTES {
        return Err(Error::TooLarge);
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Numbers are IEEE doubles, written as ECMAScript writes them. An integer a double
        // cannot hold exactly is refused: its text would say another number than the one
        // signed (9007199254740993 signs as ...992, and either text would verify).
        Value::Number(n) => match n.as_f64().filter(|f| f.is_finite()) {
            _ if inexact_integer(n) => {
                return Err(invalid(format!("integer {n} is beyond what a double holds exactly")))
            }
            Some(f) => out.push_str(ryu_js::Buffer::new().format_finite(f)),
            None => return Err(invalid(format!("number {n} is not a finite double"))),
        },
        // serde_json escapes as RFC 8785 asks: the short forms, other controls as \u00xx
        // (lowercase), nothing else.
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(members) => {
            // Members sorted by the UTF-16 code units of their names.
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by_cached_key(|(k, _)| k.encode_utf16().collect::<Vec<u16>>());
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out, depth + 1)?;
            }
            out.push('}');
        }
    }
    if out.len() > MAX_ENTRY_BYTES {
        return Err(Error::TooLarge);
    }
    Ok(())
}

/// `sha256:<lowercase hex>` of `bytes`.
fn sha256_name(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    crate::unixfs::sha256_name(&digest)
}

fn is_sha256_name(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// The fields every entry has, with their forms (extra fields are allowed when verifying,
/// and covered by the signature like the rest).
fn check_fields(entry: &Value) -> Result<(), Error> {
    let Value::Object(m) = entry else { return Err(invalid("an entry is a JSON object")) };
    let text = |name: &str, max: usize| -> Result<&str, Error> {
        match m.get(name) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(s),
            Some(Value::String(_)) => Err(invalid(format!("{name}: 1 to {max} characters"))),
            _ => Err(invalid(format!("{name}: missing or not a string"))),
        }
    };
    text("id", MAX_ID)?;
    text("type", MAX_TYPE)?;
    let hash = text("contentHash", 128)?;
    if !is_sha256_name(hash) && hash.parse::<cid::Cid>().is_err() {
        return Err(invalid("contentHash: expected sha256:<64 hex> or a CID"));
    }
    if !matches!(m.get("metadata"), Some(Value::Object(_))) {
        return Err(invalid("metadata: expected an object"));
    }
    if !m.get("timestamp").is_some_and(Value::is_u64) {
        return Err(invalid("timestamp: expected milliseconds since 1970"));
    }
    text("signer", 256)?;
    canonical(entry).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HASH: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn signed(key: &Keypair) -> Value {
        let did = identity::did_from_public_key(&key.public()).expect("did");
        let params = json!({
            "contentHash": HASH,
            "type": "document",
            "metadata": { "title": "t", "tags": ["a", "b"], "nested": { "deep": { "x": 1.5, "y": null } } },
        });
        let unsigned = unsigned_from_params(&params, &did, 1_700_000_000_000).expect("unsigned");
        sign(key, &unsigned).expect("sign")
    }

    #[test]
    fn an_integer_no_double_holds_exactly_is_refused() {
        for text in ["9007199254740993", "-9007199254740993", "100000000000000000000001"] {
            let value: Value = serde_json::from_str(&format!("{{\"n\":{text}}}")).expect("json");
            assert!(canonical(&value).is_err(), "{text}");
        }
        for text in [
            "9007199254740992",
            "-9007199254740992",
            "1152921504606846976",
            "100000000000000000000",
            "1e21",
            "12.5",
        ] {
            let value: Value = serde_json::from_str(&format!("{{\"n\":{text}}}")).expect("json");
            assert!(canonical(&value).is_ok(), "{text}");
        }
    }

    #[test]
    fn a_signed_entry_verifies_and_names_its_signer() {
        let key = Keypair::generate_ed25519();
        let entry = signed(&key);
        let did = identity::did_from_public_key(&key.public()).expect("did");
        assert_eq!(verify(&entry), Ok(did));
        assert!(entry["id"].as_str().is_some_and(|id| id.starts_with("sha256:")));
    }

    #[test]
    fn any_changed_field_fails_nested_ones_included() {
        let key = Keypair::generate_ed25519();
        let entry = signed(&key);
        type Change = Box<dyn Fn(&mut Value)>;
        let changes: Vec<(&str, Change)> = vec![
            ("id", Box::new(|e| e["id"] = json!("other"))),
            ("contentHash", Box::new(|e| e["contentHash"] = json!(HASH.replace('9', "8")))),
            ("timestamp", Box::new(|e| e["timestamp"] = json!(1_700_000_000_001u64))),
            ("type", Box::new(|e| e["type"] = json!("documents"))),
            ("metadata.title", Box::new(|e| e["metadata"]["title"] = json!("u"))),
            ("metadata.tags order", Box::new(|e| e["metadata"]["tags"] = json!(["b", "a"]))),
            (
                "metadata.nested.deep.x",
                Box::new(|e| e["metadata"]["nested"]["deep"]["x"] = json!(1.25)),
            ),
            (
                "metadata.nested.deep.y",
                Box::new(|e| e["metadata"]["nested"]["deep"]["y"] = json!(false)),
            ),
            ("metadata added", Box::new(|e| e["metadata"]["nested"]["deep"]["z"] = json!(0))),
            ("field added", Box::new(|e| e["extra"] = json!(true))),
        ];
        for (what, change) in changes {
            let mut forged = entry.clone();
            change(&mut forged);
            assert_eq!(verify(&forged), Err(Error::BadSignature), "{what}");
        }
    }

    #[test]
    fn another_signer_or_a_damaged_signature_fails() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let mut entry = signed(&key);
        entry["signer"] = json!(identity::did_from_public_key(&other.public()).expect("did"));
        assert_eq!(verify(&entry), Err(Error::BadSignature));
        let mut entry = signed(&key);
        entry["signature"] = json!("z1111");
        assert!(matches!(verify(&entry), Err(Error::Invalid(_))));
        let mut entry = signed(&key);
        entry.as_object_mut().expect("object").remove("signature");
        assert!(matches!(verify(&entry), Err(Error::Invalid(_))));
    }

    #[test]
    fn member_order_does_not_matter() {
        let key = Keypair::generate_ed25519();
        let entry = signed(&key);
        let reordered: Value = serde_json::from_str(&{
            let m = entry.as_object().expect("object");
            let mut parts: Vec<String> =
                m.iter().map(|(k, v)| format!("{}:{}", json!(k), v)).collect();
            parts.reverse();
            format!("{{{}}}", parts.join(","))
        })
        .expect("json");
        assert!(verify(&reordered).is_ok());
    }

    #[test]
    fn canonical_form_follows_rfc_8785() {
        // Members sorted by UTF-16 code units (U+1F600 before U+E000: its first unit, a high
        // surrogate, is smaller, though its code point is larger), numbers as ECMAScript writes
        // them, minimal string escapes.
        let value: Value = serde_json::from_str(
            r#"{"b":[1.0,-0.0,1e21,0.000001,1e-7,123456789012],"a":"\u0007\n\"é/","\ue000":1,"\ud83d\ude00":2,"A":{"z":null,"y":true}}"#,
        )
        .expect("json");
        let text = String::from_utf8(canonical(&value).expect("canonical")).expect("utf-8");
        assert_eq!(
            text,
            "{\"A\":{\"y\":true,\"z\":null},\"a\":\"\\u0007\\n\\\"é/\",\"b\":[1,0,1e+21,0.000001,1e-7,123456789012],\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        let did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
        let cases = [
            json!([]),
            json!({ "type": "t" }),
            json!({ "contentHash": "md5:abc", "type": "t" }),
            json!({ "contentHash": HASH, "type": "" }),
            json!({ "contentHash": HASH, "type": "t", "metadata": [1] }),
            json!({ "contentHash": HASH, "type": "t", "signer": "did:key:forged" }),
            json!({ "contentHash": HASH, "type": "t", "metadata": { "big": "x".repeat(MAX_ENTRY_BYTES) } }),
        ];
        for params in cases {
            assert!(unsigned_from_params(&params, did, 1).is_err(), "{params}");
        }
        assert!(matches!(verify(&json!("entry")), Err(Error::Invalid(_))));
    }

    #[test]
    fn a_key_signs_only_as_itself() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let did = identity::did_from_public_key(&other.public()).expect("did");
        let unsigned = unsigned_from_params(&json!({ "contentHash": HASH, "type": "t" }), &did, 1)
            .expect("unsigned");
        assert!(sign(&key, &unsigned).is_err());
    }
}
