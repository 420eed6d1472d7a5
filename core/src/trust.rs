//! Trust assertions and the web of trust.
//!
//! A trust assertion ("issuer trusts subject at level L for context C, from T until E") is a
//! W3C Verifiable Credential (data model 2.0) with a Data Integrity proof made with the
//! issuer's DID key by the `ssi` crate (cryptosuite `eddsa-rdfc-2022`). [`issue`] makes one,
//! [`verify`] checks one and gives back the [`Assertion`] it states.
//!
//! [`TrustGraph`] holds verified assertions and answers "how much does A trust B for C": the
//! direct level if A said one, else the best path of at most [`MAX_DEPTH`] assertions, whose
//! score is the product of `level / 100` along it (so trust decays with every hop and never
//! grows). A later assertion from the same issuer about the same subject and context replaces
//! the earlier one; level 0 is a revocation, and it takes effect at once (the pair has no
//! edge any more). Expired assertions do not count.

use std::collections::{BTreeMap, HashMap};

use libp2p_identity::Keypair;
use serde_json::{json, Value};
use ssi::claims::data_integrity::{AnySuite, CryptographicSuite, DataIntegrity, ProofOptions};
use ssi::claims::vc::v2::JsonCredential;
use ssi::claims::VerificationParameters;
use ssi::dids::{DIDKey, VerificationMethodDIDResolver};
use ssi::verification_methods::{AnyMethod, SingleSecretSigner};

use crate::identity;

/// Longest trust path considered.
pub const MAX_DEPTH: usize = 4;
/// Type of the credential, beside `VerifiableCredential`.
pub const CREDENTIAL_TYPE: &str = "DisotTrustAssertion";
const MAX_CONTEXT: usize = 64;
/// Where the credential's own terms are defined.
pub const VOCAB: &str = "https://disot.org/ns/trust#";
/// Largest credential accepted for verification.
pub const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid trust assertion: {0}")]
    Invalid(String),
    #[error("the credential's proof does not verify: {0}")]
    BadProof(String),
    #[error("the credential expired")]
    Expired,
    #[error("signing failed: {0}")]
    Signing(String),
}

fn invalid(what: impl Into<String>) -> Error {
    Error::Invalid(what.into())
}

/// What a trust assertion states. Times are milliseconds since 1970.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub issuer: String,
    pub subject: String,
    /// 0 (revoked) to 100 (complete trust).
    pub level: u8,
    /// What the trust is for, e.g. "content", "relay", "identity-verified".
    pub context: String,
    pub issued_ms: u64,
    pub expires_ms: Option<u64>,
}

impl Assertion {
    fn check(&self) -> Result<(), Error> {
        if self.level > 100 {
            return Err(invalid("level: 0 to 100"));
        }
        if self.context.is_empty()
            || self.context.len() > MAX_CONTEXT
            || !self.context.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(format!("context: 1 to {MAX_CONTEXT} of a-z, 0-9, - and _")));
        }
        for did in [&self.issuer, &self.subject] {
            identity::public_key_from_did(did).map_err(|e| invalid(e.to_string()))?;
        }
        if self.expires_ms.is_some_and(|e| e <= self.issued_ms) {
            return Err(invalid("expires before it is issued"));
        }
        Ok(())
    }
}

fn rfc3339(ms: u64) -> Result<String, Error> {
    let t = chrono::DateTime::from_timestamp_millis(ms as i64)
        .ok_or_else(|| invalid("time out of range"))?;
    Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn parse_time(v: Option<&Value>, what: &str) -> Result<Option<u64>, Error> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .map(Some)
            .ok_or_else(|| invalid(format!("{what}: not an RFC 3339 time"))),
        Some(_) => Err(invalid(format!("{what}: not a string"))),
    }
}

/// The `did:key` verification method of `did` (its key is its only one).
fn method_of(did: &str) -> Result<String, Error> {
    let id = did.strip_prefix("did:key:").ok_or_else(|| invalid("issuer: not a did:key"))?;
    Ok(format!("{did}#{id}"))
}

/// Issue `assertion` as a Verifiable Credential signed with `key` (the issuer's DID key).
pub async fn issue(key: &Keypair, assertion: &Assertion) -> Result<Value, Error> {
    assertion.check()?;
    let did =
        identity::did_from_public_key(&key.public()).map_err(|e| Error::Signing(e.to_string()))?;
    if did != assertion.issuer {
        return Err(invalid("the issuer is not the signing key's DID"));
    }
    let ed =
        key.clone().try_into_ed25519().map_err(|_| Error::Signing("not an Ed25519 key".into()))?;
    let bytes = ed.to_bytes();
    let jwk = ssi::JWK::from(ssi::jwk::Params::OKP(ssi::jwk::OctetParams {
        curve: "Ed25519".to_owned(),
        public_key: ssi::jwk::Base64urlUInt(bytes[32..].to_vec()),
        private_key: Some(ssi::jwk::Base64urlUInt(bytes[..32].to_vec())),
    }));
    let mut credential = json!({
        "@context": json_ld_context(),
        "type": ["VerifiableCredential", CREDENTIAL_TYPE],
        "issuer": assertion.issuer,
        "validFrom": rfc3339(assertion.issued_ms)?,
        "credentialSubject": {
            "id": assertion.subject,
            "trustLevel": assertion.level,
            "trustContext": assertion.context,
        },
    });
    if let Some(expires) = assertion.expires_ms {
        credential["validUntil"] = Value::String(rfc3339(expires)?);
    }
    let vc: JsonCredential =
        serde_json::from_value(credential).map_err(|e| invalid(e.to_string()))?;
    let method = iref::IriBuf::new(method_of(&did)?).map_err(|e| invalid(e.to_string()))?;
    let mut options = ProofOptions::from_method(method.into());
    options.created = Some(
        rfc3339(assertion.issued_ms)?
            .parse()
            .map_err(|_| invalid("issued: not a time the proof can carry"))?,
    );
    let resolver = VerificationMethodDIDResolver::<_, AnyMethod>::new(DIDKey);
    let signed = AnySuite::EdDsaRdfc2022
        .sign(vc, &resolver, SingleSecretSigner::new(jwk).into_local(), options)
        .await
        .map_err(|e| Error::Signing(e.to_string()))?;
    serde_json::to_value(&signed).map_err(|e| Error::Signing(e.to_string()))
}

/// Check a trust credential at time `now_ms`: its form, its proof by the issuer's DID key
/// (resolved offline: `did:key`), and that it has not expired. Returns what it states.
pub async fn verify(credential: &Value, now_ms: u64) -> Result<Assertion, Error> {
    if serde_json::to_vec(credential).map_or(true, |b| b.len() > MAX_CREDENTIAL_BYTES) {
        return Err(invalid("larger than a trust assertion can be"));
    }
    let assertion = read_form(credential)?;
    let proof_method = credential
        .pointer("/proof/verificationMethod")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("no proof"))?;
    // The proof must be by the issuer itself, not by some other key it names.
    if proof_method != method_of(&assertion.issuer)? {
        return Err(Error::BadProof("signed by a key other than the issuer's".into()));
    }
    let vc: DataIntegrity<JsonCredential, AnySuite> =
        serde_json::from_value(credential.clone()).map_err(|e| invalid(e.to_string()))?;
    let now = chrono::DateTime::from_timestamp_millis(now_ms as i64)
        .ok_or_else(|| invalid("bad clock"))?;
    let resolver = VerificationMethodDIDResolver::<_, AnyMethod>::new(DIDKey);
    let params = VerificationParameters::from_resolver(resolver).with_date_time(now);
    match vc.verify(params).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) if assertion.expires_ms.is_some_and(|e| e <= now_ms) => {
            return Err(Error::Expired)
        }
        Ok(Err(e)) => return Err(Error::BadProof(e.to_string())),
        Err(e) => return Err(Error::BadProof(e.to_string())),
    }
    if assertion.expires_ms.is_some_and(|e| e <= now_ms) {
        return Err(Error::Expired);
    }
    Ok(assertion)
}

/// The JSON-LD context of a trust credential, the only one taken (made once: it is compared
/// with every credential read).
fn json_ld_context() -> &'static Value {
    static CONTEXT: std::sync::LazyLock<Value> = std::sync::LazyLock::new(context_value);
    &CONTEXT
}

fn context_value() -> Value {
    json!([
        "https://www.w3.org/ns/credentials/v2",
        {
            CREDENTIAL_TYPE: format!("{VOCAB}TrustAssertion"),
            "trustLevel": format!("{VOCAB}trustLevel"),
            "trustContext": format!("{VOCAB}trustContext"),
        },
    ])
}

/// The members a credential may have, at the top, in its subject and in its proof.
const MEMBERS: [&str; 7] =
    ["@context", "type", "issuer", "validFrom", "validUntil", "credentialSubject", "proof"];
const SUBJECT_MEMBERS: [&str; 3] = ["id", "trustLevel", "trustContext"];
const PROOF_MEMBERS: [&str; 6] =
    ["type", "cryptosuite", "created", "verificationMethod", "proofPurpose", "proofValue"];

/// Whether `credential` has exactly the form [`issue`] gives one. The proof covers what the
/// credential means (its JSON-LD expanded to RDF), not its JSON, and the assertion is read
/// from the JSON: with a context of its own, a credential could mean what was signed and say
/// something else (map `trustLevel` to nothing and another member to the signed level). With
/// this context and these members, what it says is what it means.
fn check_form(credential: &Value) -> Result<(), Error> {
    let only = |at: &str, value: Option<&Value>, allowed: &[&str]| match value {
        Some(Value::Object(members)) => {
            match members.keys().find(|k| !allowed.contains(&k.as_str())) {
                Some(k) => Err(invalid(format!("{at}: a member a trust assertion has not: {k}"))),
                None => Ok(()),
            }
        }
        Some(_) => Err(invalid(format!("{at}: not an object"))),
        None => Ok(()),
    };
    only("the credential", Some(credential), &MEMBERS)?;
    only("credentialSubject", credential.get("credentialSubject"), &SUBJECT_MEMBERS)?;
    only("proof", credential.get("proof"), &PROOF_MEMBERS)?;
    if credential.get("@context") != Some(json_ld_context()) {
        return Err(invalid("not the context a trust assertion has"));
    }
    if credential.get("type") != Some(&json!(["VerifiableCredential", CREDENTIAL_TYPE])) {
        return Err(invalid(format!("not a {CREDENTIAL_TYPE}")));
    }
    Ok(())
}

/// The assertion a credential states, from its form only ([`verify`] checks the proof): for
/// credentials already verified when they were taken.
pub fn read_form(credential: &Value) -> Result<Assertion, Error> {
    check_form(credential)?;
    let text = |p: &str| credential.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let level = credential
        .pointer("/credentialSubject/trustLevel")
        .and_then(Value::as_u64)
        .and_then(|l| u8::try_from(l).ok())
        .ok_or_else(|| invalid("trustLevel: 0 to 100"))?;
    let assertion = Assertion {
        issuer: text("/issuer").ok_or_else(|| invalid("no issuer"))?,
        subject: text("/credentialSubject/id").ok_or_else(|| invalid("no subject"))?,
        level,
        context: text("/credentialSubject/trustContext")
            .ok_or_else(|| invalid("no trustContext"))?,
        issued_ms: parse_time(credential.get("validFrom"), "validFrom")?
            .ok_or_else(|| invalid("no validFrom"))?,
        expires_ms: parse_time(credential.get("validUntil"), "validUntil")?,
    };
    assertion.check()?;
    Ok(assertion)
}

/// A trust score and the path that gives it (issuer first, subject last).
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub score: f64,
    pub path: Vec<String>,
}

/// Verified assertions, indexed for scoring.
#[derive(Debug, Default, Clone)]
pub struct TrustGraph {
    /// The latest assertion per (issuer, subject, context).
    latest: BTreeMap<(String, String, String), Assertion>,
}

impl TrustGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take a verified assertion. An older one than what is held for the same issuer, subject
    /// and context is ignored; returns whether it changed anything.
    pub fn insert(&mut self, a: Assertion) -> bool {
        let key = (a.issuer.clone(), a.subject.clone(), a.context.clone());
        match self.latest.get(&key) {
            Some(held) if held.issued_ms >= a.issued_ms => false,
            _ => {
                self.latest.insert(key, a);
                true
            }
        }
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// The assertions in force at `now_ms` (latest per pair, not revoked, not expired).
    pub fn in_force(&self, now_ms: u64) -> impl Iterator<Item = &Assertion> {
        self.latest.values().filter(move |a| a.level > 0 && a.expires_ms.is_none_or(|e| e > now_ms))
    }

    /// How much `from` trusts `to` for `context` at `now_ms`: the direct assertion if there is
    /// one in force, else the best path of at most [`MAX_DEPTH`] assertions (product of
    /// `level / 100`). `None` when no path exists.
    pub fn score(&self, from: &str, to: &str, context: &str, now_ms: u64) -> Option<Score> {
        let (direct, best) = self.paths(from, context, now_ms);
        if let Some(level) = direct.get(to) {
            return Some(Score { score: *level, path: vec![from.to_owned(), to.to_owned()] });
        }
        let (score, path) = best.get(to).filter(|_| to != from)?;
        Some(Score { score: *score, path: path.iter().map(|s| (*s).to_owned()).collect() })
    }

    /// Every DID `from` trusts for `context` at `now_ms`, with the score [`TrustGraph::score`]
    /// gives it, worked out at once (to look up later in constant time); and the time until
    /// which they hold: the first expiry among the assertions in force.
    pub fn scores(&self, from: &str, context: &str, now_ms: u64) -> (HashMap<String, f64>, u64) {
        let (direct, best) = self.paths(from, context, now_ms);
        let mut out: HashMap<String, f64> = best
            .into_iter()
            .filter(|(to, _)| *to != from)
            .map(|(to, (score, _))| (to.to_owned(), score))
            .collect();
        out.extend(direct.into_iter().map(|(to, level)| (to.to_owned(), level)));
        let until = self
            .in_force(now_ms)
            .filter(|a| a.context == context)
            .filter_map(|a| a.expires_ms)
            .min()
            .unwrap_or(u64::MAX);
        (out, until)
    }

    /// `from`'s own assertions of `context` in force (subject → level / 100), and the best
    /// path to every DID reachable in at most [`MAX_DEPTH`] assertions (score, path).
    #[allow(clippy::type_complexity)]
    fn paths<'a>(
        &'a self,
        from: &'a str,
        context: &str,
        now_ms: u64,
    ) -> (HashMap<&'a str, f64>, HashMap<&'a str, (f64, Vec<&'a str>)>) {
        // Edges of this context, by issuer.
        let mut edges: HashMap<&str, Vec<(&str, f64)>> = HashMap::new();
        for a in self.in_force(now_ms).filter(|a| a.context == context) {
            edges.entry(&a.issuer).or_default().push((&a.subject, f64::from(a.level) / 100.0));
        }
        let direct: HashMap<&str, f64> =
            edges.get(from).into_iter().flatten().map(|(s, w)| (*s, *w)).collect();
        // Best product over paths of at most MAX_DEPTH edges: Bellman-Ford by rounds (each
        // round allows one more edge), keeping for each node its best score and predecessor.
        let mut best: HashMap<&str, (f64, Vec<&str>)> = HashMap::new();
        best.insert(from, (1.0, vec![from]));
        let mut frontier: Vec<&str> = vec![from];
        for _ in 0..MAX_DEPTH {
            let mut next: HashMap<&str, (f64, Vec<&str>)> = HashMap::new();
            for node in &frontier {
                let (s, path) = best[node].clone();
                for (subject, w) in edges.get(node).into_iter().flatten() {
                    if path.contains(subject) {
                        continue;
                    }
                    let candidate = s * w;
                    let better =
                        |held: Option<&(f64, Vec<&str>)>| held.is_none_or(|(h, _)| candidate > *h);
                    if better(best.get(subject)) && better(next.get(subject)) {
                        let mut p = path.clone();
                        p.push(subject);
                        next.insert(subject, (candidate, p));
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next.keys().copied().collect();
            best.extend(next);
        }
        (direct, best)
    }
}

/// A random web of trust for benchmarks: `dids` peers and `assertions` assertions among them
/// (context "content", levels 1 to 100), from `seed`. Returns the graph and the peers.
pub fn sample_graph(assertions: usize, dids: usize, seed: u64) -> (TrustGraph, Vec<String>) {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let peers: Vec<String> = (0..dids.max(2)).map(|i| format!("did:example:{i}")).collect();
    let mut g = TrustGraph::new();
    while g.len() < assertions {
        let i = (next() % peers.len() as u64) as usize;
        let j = (next() % peers.len() as u64) as usize;
        if i == j {
            continue;
        }
        g.insert(Assertion {
            issuer: peers[i].clone(),
            subject: peers[j].clone(),
            level: (next() % 100 + 1) as u8,
            context: "content".into(),
            issued_ms: g.len() as u64,
            expires_ms: None,
        });
    }
    (g, peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    const T0: u64 = 1_767_225_600_000; // 2026-01-01

    fn did(key: &Keypair) -> String {
        identity::did_from_public_key(&key.public()).expect("did")
    }

    fn assertion(issuer: &Keypair, subject: &Keypair, level: u8, at: u64) -> Assertion {
        Assertion {
            issuer: did(issuer),
            subject: did(subject),
            level,
            context: "content".into(),
            issued_ms: at,
            expires_ms: Some(at + 86_400_000),
        }
    }

    #[test]
    fn an_issued_credential_verifies_and_states_the_assertion() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let stated = assertion(&a, &b, 80, T0);
        let vc = block_on(issue(&a, &stated)).expect("issue");
        assert_eq!(vc["proof"]["cryptosuite"], "eddsa-rdfc-2022", "{vc:#}");
        assert_eq!(block_on(verify(&vc, T0 + 1)).expect("verify"), stated);
    }

    #[test]
    fn forged_changed_expired_and_borrowed_credentials_are_refused() {
        let (a, b, c) =
            (Keypair::generate_ed25519(), Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let vc = block_on(issue(&a, &assertion(&a, &b, 80, T0))).expect("issue");
        let mut raised = vc.clone();
        raised["credentialSubject"]["trustLevel"] = json!(100);
        assert!(matches!(block_on(verify(&raised, T0 + 1)), Err(Error::BadProof(_))));
        let mut other_subject = vc.clone();
        other_subject["credentialSubject"]["id"] = json!(did(&c));
        assert!(matches!(block_on(verify(&other_subject, T0 + 1)), Err(Error::BadProof(_))));
        // C presents A's credential as its own.
        let mut claimed = vc.clone();
        claimed["issuer"] = json!(did(&c));
        assert!(matches!(block_on(verify(&claimed, T0 + 1)), Err(Error::BadProof(_))));
        assert!(matches!(block_on(verify(&vc, T0 + 2 * 86_400_000)), Err(Error::Expired)));
        // A key may only issue as its own DID.
        assert!(block_on(issue(&c, &assertion(&a, &b, 80, T0))).is_err());
        assert!(matches!(block_on(verify(&json!({"type": "x"}), T0)), Err(Error::Invalid(_))));
    }

    /// The proof covers what the credential means (its RDF), not its JSON: a credential whose
    /// own context is rewritten to drop the signed level from one key and read another in its
    /// place means the same and verifies, so only the exact form `issue` makes is taken.
    #[test]
    fn a_credential_whose_context_is_rewritten_is_refused() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let vc = block_on(issue(&a, &assertion(&a, &b, 10, T0))).expect("issue");
        let mut forged = vc.clone();
        forged["@context"][1] = json!({
            CREDENTIAL_TYPE: format!("{VOCAB}TrustAssertion"),
            "trustLevel": null,
            "signedLevel": format!("{VOCAB}trustLevel"),
            "trustContext": format!("{VOCAB}trustContext"),
        });
        let subject = forged["credentialSubject"].as_object_mut().expect("subject");
        subject.insert("signedLevel".into(), json!(10));
        subject.insert("trustLevel".into(), json!(100));
        let taken = block_on(verify(&forged, T0 + 1));
        assert!(matches!(taken, Err(Error::Invalid(_))), "{taken:?}");
        // Nor anything added anywhere, or a context of another form.
        for (pointer, extra) in [("", "note"), ("/credentialSubject", "note"), ("/proof", "note")] {
            let mut more = vc.clone();
            if let Some(o) = more.pointer_mut(pointer).and_then(Value::as_object_mut) {
                o.insert(extra.into(), json!("x"));
            }
            assert!(matches!(block_on(verify(&more, T0 + 1)), Err(Error::Invalid(_))), "{pointer}");
        }
        let mut one_context = vc.clone();
        one_context["@context"] = json!("https://www.w3.org/ns/credentials/v2");
        assert!(matches!(block_on(verify(&one_context, T0 + 1)), Err(Error::Invalid(_))));
        assert_eq!(block_on(verify(&vc, T0 + 1)).expect("the genuine one").level, 10);
    }

    fn graph(edges: &[(&str, &str, u8, u64)]) -> TrustGraph {
        let mut g = TrustGraph::new();
        for (i, s, l, at) in edges {
            g.insert(Assertion {
                issuer: (*i).into(),
                subject: (*s).into(),
                level: *l,
                context: "content".into(),
                issued_ms: *at,
                expires_ms: None,
            });
        }
        g
    }

    #[test]
    fn scores_are_direct_else_the_best_decayed_path_up_to_four_hops() {
        let g = graph(&[
            ("A", "B", 90, 1),
            ("B", "C", 80, 1),
            ("A", "D", 50, 1),
            ("D", "C", 100, 1),
            ("C", "E", 50, 1),
            ("E", "F", 100, 1),
            ("F", "G", 100, 1),
        ]);
        let s = g.score("A", "C", "content", 10).expect("path");
        assert!((s.score - 0.72).abs() < 1e-9, "{s:?}");
        assert_eq!(s.path, ["A", "B", "C"]);
        assert_eq!(g.score("A", "B", "content", 10).expect("direct").score, 0.9);
        let f = g.score("A", "F", "content", 10).expect("four hops");
        assert!((f.score - 0.36).abs() < 1e-9);
        assert_eq!(f.path.len(), 5);
        assert_eq!(g.score("A", "G", "content", 10), None, "five hops is too far");
        assert_eq!(g.score("A", "C", "relay", 10), None, "another context");
        assert_eq!(g.score("C", "A", "content", 10), None, "trust is not symmetric");
    }

    /// Scores worked out at once for every DID are those `score` gives one at a time, and
    /// hold until the first assertion in force expires.
    #[test]
    fn all_scores_at_once_match_each_score() {
        let (mut g, peers) = sample_graph(600, 80, 3);
        g.insert(Assertion {
            issuer: peers[0].clone(),
            subject: peers[1].clone(),
            level: 70,
            context: "content".into(),
            issued_ms: u64::MAX / 2,
            expires_ms: Some(5_000),
        });
        let (all, until) = g.scores(&peers[0], "content", 10);
        assert_eq!(until, 5_000);
        assert_eq!(all.get(&peers[1]), Some(&0.7), "the direct assertion stands");
        let mut scored = 0;
        for to in &peers {
            let one = g.score(&peers[0], to, "content", 10).map(|s| s.score);
            // Equal up to rounding: paths of equal score may be found in another order.
            match (all.get(to), one) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{to}: {a} vs {b}"),
                (a, b) => assert_eq!(a.copied(), b, "{to}"),
            }
            scored += usize::from(one.is_some());
        }
        assert!(scored > 10, "the graph reaches many ({scored})");
        assert_eq!(all.len(), scored, "and names no one else");
        assert!(g.scores("did:key:nobody", "content", 10).0.is_empty());
    }

    #[test]
    fn a_later_assertion_replaces_and_level_zero_revokes_at_once() {
        let mut g = graph(&[("A", "B", 90, 1), ("B", "C", 80, 1)]);
        assert!(g.score("A", "C", "content", 10).is_some());
        assert!(
            !g.insert(Assertion {
                issuer: "A".into(),
                subject: "B".into(),
                level: 10,
                context: "content".into(),
                issued_ms: 0,
                expires_ms: None
            }),
            "older is ignored"
        );
        g.insert(Assertion {
            issuer: "A".into(),
            subject: "B".into(),
            level: 40,
            context: "content".into(),
            issued_ms: 2,
            expires_ms: None,
        });
        assert!((g.score("A", "C", "content", 10).expect("path").score - 0.32).abs() < 1e-9);
        g.insert(Assertion {
            issuer: "B".into(),
            subject: "C".into(),
            level: 0,
            context: "content".into(),
            issued_ms: 3,
            expires_ms: None,
        });
        assert_eq!(g.score("A", "C", "content", 10), None);
        let mut e = graph(&[("A", "B", 90, 1)]);
        e.insert(Assertion {
            issuer: "A".into(),
            subject: "B".into(),
            level: 90,
            context: "content".into(),
            issued_ms: 5,
            expires_ms: Some(20),
        });
        assert!(e.score("A", "B", "content", 19).is_some());
        assert_eq!(e.score("A", "B", "content", 20), None, "expired");
    }
}
