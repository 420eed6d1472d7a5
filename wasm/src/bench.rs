//! Benchmarks run inside the browser by `tests/bench/*.bench.js` (the same code as
//! `core/examples/trust_bench.rs`, which gives the native figures).
use disot_core::trust::{self, Assertion};
use libp2p::identity::Keypair;
use wasm_bindgen::prelude::*;

fn now() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map_or_else(js_sys::Date::now, |p| p.now())
}

/// Trust scores over a generated web of 10,000 assertions among 1,000 DIDs, and trust
/// credentials signed and verified per second. Resolves to the same JSON as the native run.
#[wasm_bindgen(js_name = benchTrust)]
pub async fn bench_trust() -> Result<JsValue, JsError> {
    let t = now();
    let (graph, peers) = trust::sample_graph(10_000, 1_000, 7);
    let graph_ms = now() - t;
    let mut times = Vec::new();
    let mut found = 0;
    for i in 0..200 {
        let (from, to) = (&peers[(i * 7) % peers.len()], &peers[(i * 13 + 5) % peers.len()]);
        let t = now();
        found += usize::from(graph.score(from, to, "content", 1).is_some());
        times.push(now() - t);
    }
    times.sort_by(f64::total_cmp);
    let key = Keypair::generate_ed25519();
    let did = |k: &Keypair| {
        disot_core::identity::did_from_public_key(&k.public())
            .map_err(|e| JsError::new(&e.to_string()))
    };
    let (issuer, subject) = (did(&key)?, did(&Keypair::generate_ed25519())?);
    let n = 50;
    let t = now();
    let mut credentials = Vec::new();
    for i in 0..n {
        let a = Assertion {
            issuer: issuer.clone(),
            subject: subject.clone(),
            level: 50,
            context: "content".into(),
            issued_ms: 1_767_225_600_000 + i,
            expires_ms: None,
        };
        credentials.push(trust::issue(&key, &a).await.map_err(|e| JsError::new(&e.to_string()))?);
    }
    let sign_ms = now() - t;
    let t = now();
    for c in &credentials {
        trust::verify(c, 1_767_225_700_000).await.map_err(|e| JsError::new(&e.to_string()))?;
    }
    let verify_ms = now() - t;
    let result = serde_json::json!({
        "graphMs": graph_ms,
        "scoreMedianMs": times[times.len() / 2],
        "scoreMaxMs": times[times.len() - 1],
        "found": found,
        "signPerSec": n as f64 / (sign_ms / 1000.0),
        "verifyPerSec": n as f64 / (verify_ms / 1000.0),
    });
    Ok(JsValue::from_str(&result.to_string()))
}
