//! Trust benchmark, natively (the browser's figures come from `tests/bench/trust.bench.js`,
//! which runs the same code compiled to wasm): trust scores over a generated web of 10,000
//! assertions among 1,000 DIDs, and trust credentials signed and verified per second.
//! Prints one JSON line.
use std::time::Instant;

use disot_core::trust::{self, Assertion};
use futures::executor::block_on;
use libp2p_identity::Keypair;

fn main() {
    let t = Instant::now();
    let (graph, peers) = trust::sample_graph(10_000, 1_000, 7);
    let build_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut times = Vec::new();
    let mut found = 0;
    for i in 0..200 {
        let (from, to) = (&peers[(i * 7) % peers.len()], &peers[(i * 13 + 5) % peers.len()]);
        let t = Instant::now();
        found += usize::from(graph.score(from, to, "content", 1).is_some());
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let key = Keypair::generate_ed25519();
    let issuer = disot_core::identity::did_from_public_key(&key.public()).expect("did");
    let subject = disot_core::identity::did_from_public_key(&Keypair::generate_ed25519().public())
        .expect("did");
    let n = 50;
    let t = Instant::now();
    let credentials: Vec<_> = (0..n)
        .map(|i| {
            let a = Assertion {
                issuer: issuer.clone(),
                subject: subject.clone(),
                level: 50,
                context: "content".into(),
                issued_ms: 1_767_225_600_000 + i,
                expires_ms: None,
            };
            block_on(trust::issue(&key, &a)).expect("issue")
        })
        .collect();
    let sign_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for c in &credentials {
        block_on(trust::verify(c, 1_767_225_700_000)).expect("verify");
    }
    let verify_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"graphMs\":{build_ms:.2},\"scoreMedianMs\":{:.3},\"scoreMaxMs\":{:.3},\"found\":{found},\"signPerSec\":{:.1},\"verifyPerSec\":{:.1}}}",
        times[times.len() / 2],
        times[times.len() - 1],
        n as f64 / sign_s,
        n as f64 / verify_s
    );
}
