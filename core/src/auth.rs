//! Mutual authentication of every connection (`/disot/identity/1.0.0`), sans-IO.
//!
//! The Noise handshake already proves which key is on the other end of a connection, and the
//! DID is `did:key` of that key. On top of it both peers exchange a signed *profile* (DID,
//! DID document, display name) bound to this very exchange, so that what a peer says about
//! itself is checked, not assumed:
//!
//! 1. the initiator sends `hello` with a fresh random challenge;
//! 2. the responder answers with its profile, which answers that challenge, names the
//!    initiator's DID as its audience and carries a challenge of its own;
//! 3. the initiator checks it and answers with its profile for the responder's challenge.
//!
//! A profile is refused when its DID is not the key that authenticated the connection (a peer
//! presenting another's DID), when its signature does not verify (forged or changed), when it
//! answers another challenge or names another audience (replayed from another exchange), or
//! when its time is far from ours. [`Initiator`] and [`Responder`] are the two sides' state
//! machines; the adapters move the JSON messages and supply randomness and time.

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use libp2p_identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::identity;

pub const PROTOCOL: &str = "/disot/identity/1.0.0";
/// What every profile signature covers first, so it cannot be taken for another kind.
pub const DOMAIN: &[u8] = b"disot-profile/1\n";
/// Largest message of the protocol, in bytes of JSON.
pub const MAX_MESSAGE: usize = 8 * 1024;
/// Longest display name, in characters.
pub const MAX_NAME: usize = 64;
/// How far a profile's time may be from ours.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
/// Bytes of a challenge.
pub const CHALLENGE_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("malformed identity message: {0}")]
    Malformed(String),
    #[error("the profile's DID {0} is not the key that authenticated the connection")]
    WrongDid(String),
    #[error("the profile is addressed to {0}, not to us: replayed from another exchange")]
    WrongAudience(String),
    #[error("the profile answers another challenge: replayed")]
    Replayed,
    #[error("the profile's time is {0} s away from ours")]
    Stale(u64),
    #[error("the profile's signature does not verify")]
    BadSignature,
    #[error("the profile's DID document is not the one its DID names")]
    WrongDocument,
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    #[error("signing failed: {0}")]
    Signing(String),
    /// The stream failed or closed early: nothing was said, so nothing is refused.
    #[error("identity stream: {0}")]
    Io(String),
}

impl Error {
    /// Whether the peer said something refused (as opposed to the stream failing).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Error::Io(_))
    }
}

/// One message of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Message {
    Hello { challenge: String },
    Profile(Profile),
}

impl Message {
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_MESSAGE {
            return Err(Error::Malformed(format!("larger than {MAX_MESSAGE} bytes")));
        }
        serde_json::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string()))
    }

    pub fn encode(&self) -> Vec<u8> {
        // A message of our own making always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a peer says about itself, signed for one exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub did: String,
    pub did_document: Value,
    pub display_name: String,
    /// The DID of the peer this profile is for.
    pub audience: String,
    /// The challenge this profile answers (the other side's).
    pub answers: String,
    /// The responder's own challenge, for the initiator's profile to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    pub issued_ms: u64,
    /// Ed25519 over [`DOMAIN`] and the canonical JSON of every other field (base64url).
    pub signature: String,
}

/// A peer's profile after every check passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub did: String,
    pub display_name: String,
    pub did_document: Value,
    pub issued_ms: u64,
}

/// This peer, as it presents itself.
#[derive(Clone)]
pub struct Local {
    key: Keypair,
    did: String,
    display_name: String,
}

impl Local {
    pub fn new(key: Keypair, display_name: &str) -> Result<Self, Error> {
        let did = identity::did_from_public_key(&key.public())
            .map_err(|e| Error::Signing(e.to_string()))?;
        check_name(display_name)?;
        Ok(Local { key, did, display_name: display_name.to_owned() })
    }

    pub fn did(&self) -> &str {
        &self.did
    }

    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// A signed profile of ours for `audience`, answering its challenge `answers` (the
    /// state machines use it; a test peer may use it to misbehave).
    pub fn profile(
        &self,
        audience: &str,
        answers: &str,
        challenge: Option<String>,
        now_ms: u64,
    ) -> Result<Profile, Error> {
        let mut profile = Profile {
            did: self.did.clone(),
            did_document: did_document(&self.did)?,
            display_name: self.display_name.clone(),
            audience: audience.to_owned(),
            answers: answers.to_owned(),
            challenge,
            issued_ms: now_ms,
            signature: String::new(),
        };
        profile.sign(&self.key)?;
        Ok(profile)
    }
}

impl Profile {
    /// Sign every field but the signature with `key` (which must be `did`'s for the profile to
    /// verify).
    pub fn sign(&mut self, key: &Keypair) -> Result<(), Error> {
        let signature =
            key.sign(&signed_bytes(self)?).map_err(|e| Error::Signing(e.to_string()))?;
        self.signature = b64(&signature);
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    if !is_plain_name(name) {
        return Err(Error::Malformed(format!(
            "display name: at most {MAX_NAME} characters, no control or invisible formatting characters"
        )));
    }
    Ok(())
}

/// Whether `name` may be shown as a display name: at most [`MAX_NAME`] characters, none of
/// them a control character, a line or paragraph separator, or an invisible formatting one
/// (bidirectional marks and overrides, zero-width spaces), with which a name chosen by someone
/// else could read as another, or reorder the text shown around it. (The zero-width joiner
/// and non-joiner stay: Persian spelling and emoji sequences need them.)
pub fn is_plain_name(name: &str) -> bool {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c,
                '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}' | '\u{200E}' | '\u{200F}'
                | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}')
    };
    name.chars().count() <= MAX_NAME && !name.chars().any(hidden)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str, what: &str) -> Result<Vec<u8>, Error> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Error::Malformed(format!("{what}: not base64url")))
}

/// A challenge from the other side must be [`CHALLENGE_BYTES`] bytes.
fn check_challenge(text: &str) -> Result<(), Error> {
    if unb64(text, "challenge")?.len() != CHALLENGE_BYTES {
        return Err(Error::Malformed(format!("challenge: {CHALLENGE_BYTES} bytes")));
    }
    Ok(())
}

/// A challenge as it travels, from [`CHALLENGE_BYTES`] random bytes.
pub fn challenge(random: [u8; CHALLENGE_BYTES]) -> String {
    b64(&random)
}

/// What a profile's signature covers: [`DOMAIN`] and the canonical JSON of every field but the
/// signature.
pub fn signed_bytes(profile: &Profile) -> Result<Vec<u8>, Error> {
    let mut value = serde_json::to_value(profile).map_err(|e| Error::Malformed(e.to_string()))?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("signature");
    }
    let canonical = crate::entry::canonical(&value).map_err(|e| Error::Malformed(e.to_string()))?;
    let mut bytes = DOMAIN.to_vec();
    bytes.extend_from_slice(&canonical);
    Ok(bytes)
}

/// The DID document a `did:key` names: one Ed25519 key, for authentication and assertions
/// (the did:key method's Multikey form). It is derived from the DID alone, so a peer's
/// document can be checked against its DID without any lookup.
pub fn did_document(did: &str) -> Result<Value, Error> {
    identity::public_key_from_did(did).map_err(|e| Error::Malformed(e.to_string()))?;
    let key = did.trim_start_matches("did:key:");
    let method = format!("{did}#{key}");
    Ok(json!({
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "verificationMethod": [{
            "id": method,
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": key,
        }],
        "authentication": [method],
        "assertionMethod": [method],
        "capabilityInvocation": [method],
        "capabilityDelegation": [method],
    }))
}

/// Every check of a profile received from `remote` on a connection, for `me`, which sent
/// `expected` as its challenge.
fn verify(
    profile: &Profile,
    remote: &PeerId,
    me: &str,
    expected: &str,
    now_ms: u64,
) -> Result<Verified, Error> {
    let key = identity::public_key_from_did(&profile.did)
        .map_err(|e| Error::Malformed(format!("did: {e}")))?;
    if key.to_peer_id() != *remote {
        return Err(Error::WrongDid(profile.did.clone()));
    }
    let signature = unb64(&profile.signature, "signature")?;
    if !key.verify(&signed_bytes(profile)?, &signature) {
        return Err(Error::BadSignature);
    }
    if profile.audience != me {
        return Err(Error::WrongAudience(crate::quoted(&profile.audience)));
    }
    if profile.answers != expected {
        return Err(Error::Replayed);
    }
    let skew = now_ms.abs_diff(profile.issued_ms);
    if skew > MAX_SKEW_MS {
        return Err(Error::Stale(skew / 1000));
    }
    if profile.did_document != did_document(&profile.did)? {
        return Err(Error::WrongDocument);
    }
    Ok(Verified {
        did: profile.did.clone(),
        // A name this peer would not let its own user choose (one that hides or reorders
        // text, or an older version's longer one) is not shown; the peer is verified as well.
        display_name: if is_plain_name(&profile.display_name) {
            profile.display_name.clone()
        } else {
            String::new()
        },
        did_document: profile.did_document.clone(),
        issued_ms: profile.issued_ms,
    })
}

/// The DID of the peer behind `remote`, which the profile must name.
fn remote_did(remote: &PeerId) -> Result<String, Error> {
    let digest = remote.as_ref();
    if digest.code() != 0 {
        return Err(Error::Malformed("the peer id does not embed its key".into()));
    }
    let key = libp2p_identity::PublicKey::try_decode_protobuf(digest.digest())
        .map_err(|e| Error::Malformed(e.to_string()))?;
    identity::did_from_public_key(&key).map_err(|e| Error::Malformed(e.to_string()))
}

/// The side that opened the stream.
pub struct Initiator {
    local: Local,
    remote: PeerId,
    sent: String,
}

impl Initiator {
    /// Start an exchange with `remote`; send the returned `hello`.
    pub fn new(local: Local, remote: PeerId, random: [u8; CHALLENGE_BYTES]) -> (Self, Message) {
        let sent = challenge(random);
        let hello = Message::Hello { challenge: sent.clone() };
        (Initiator { local, remote, sent }, hello)
    }

    /// The responder's profile: checked; the returned profile of ours goes back.
    pub fn on_message(self, message: Message, now_ms: u64) -> Result<(Verified, Message), Error> {
        let Message::Profile(profile) = message else {
            return Err(Error::Unexpected("a hello where a profile was due"));
        };
        let verified = verify(&profile, &self.remote, self.local.did(), &self.sent, now_ms)?;
        let theirs =
            profile.challenge.ok_or(Error::Malformed("the responder sent no challenge".into()))?;
        check_challenge(&theirs)?;
        let mine = self.local.profile(&verified.did, &theirs, None, now_ms)?;
        Ok((verified, Message::Profile(mine)))
    }
}

/// The side that accepted the stream.
pub struct Responder {
    local: Local,
    remote: PeerId,
    sent: String,
}

impl Responder {
    pub fn new(local: Local, remote: PeerId, random: [u8; CHALLENGE_BYTES]) -> Self {
        Responder { local, remote, sent: challenge(random) }
    }

    /// The initiator's `hello`: answered with our profile and our challenge.
    pub fn on_hello(&self, message: Message, now_ms: u64) -> Result<Message, Error> {
        let Message::Hello { challenge } = message else {
            return Err(Error::Unexpected("a profile before the hello"));
        };
        check_challenge(&challenge)?;
        let audience = remote_did(&self.remote)?;
        let profile = self.local.profile(&audience, &challenge, Some(self.sent.clone()), now_ms)?;
        Ok(Message::Profile(profile))
    }

    /// The initiator's profile: checked.
    pub fn on_profile(self, message: Message, now_ms: u64) -> Result<Verified, Error> {
        let Message::Profile(profile) = message else {
            return Err(Error::Unexpected("a second hello"));
        };
        verify(&profile, &self.remote, self.local.did(), &self.sent, now_ms)
    }
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, message: &Message) -> Result<(), Error> {
    crate::bitswap::write_frame(stream, &message.encode())
        .await
        .map_err(|e| Error::Io(e.to_string()))
}

async fn receive<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Message, Error> {
    match crate::bitswap::read_frame_max(stream, MAX_MESSAGE).await {
        Ok(Some(bytes)) => Message::decode(&bytes),
        Ok(None) => Err(Error::Io("closed before the exchange ended".into())),
        // A frame over the limit is the peer's doing; other failures are the stream's.
        Err(crate::bitswap::Error::TooLarge(n)) => {
            Err(Error::Malformed(format!("a message of {n} bytes")))
        }
        Err(e) => Err(Error::Io(e.to_string())),
    }
}

/// The initiator's whole exchange on a stream it opened to `remote`. `now` reads the clock.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    local: Local,
    remote: PeerId,
    random: [u8; CHALLENGE_BYTES],
    now: impl Fn() -> u64,
) -> Result<Verified, Error> {
    let (initiator, hello) = Initiator::new(local, remote, random);
    send(stream, &hello).await?;
    let (verified, mine) = initiator.on_message(receive(stream).await?, now())?;
    send(stream, &mine).await?;
    let _ = stream.close().await;
    Ok(verified)
}

/// The responder's whole exchange on a stream `remote` opened.
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    local: Local,
    remote: PeerId,
    random: [u8; CHALLENGE_BYTES],
    now: impl Fn() -> u64,
) -> Result<Verified, Error> {
    let responder = Responder::new(local, remote, random);
    let answer = responder.on_hello(receive(stream).await?, now())?;
    send(stream, &answer).await?;
    let verified = responder.on_profile(receive(stream).await?, now())?;
    let _ = stream.close().await;
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_780_000_000_000;

    struct Peer {
        key: Keypair,
        local: Local,
    }

    fn peer(name: &str) -> Peer {
        let key = Keypair::generate_ed25519();
        Peer { local: Local::new(key.clone(), name).expect("valid name"), key }
    }

    fn id(p: &Peer) -> PeerId {
        p.key.public().to_peer_id()
    }

    /// A whole exchange; returns what each side verified of the other.
    fn exchange(a: &Peer, b: &Peer) -> (Verified, Verified) {
        let (initiator, hello) = Initiator::new(a.local.clone(), id(b), [1; 32]);
        let responder = Responder::new(b.local.clone(), id(a), [2; 32]);
        let profile_b = responder.on_hello(hello, NOW).expect("hello accepted");
        let (b_at_a, profile_a) = initiator.on_message(profile_b, NOW + 10).expect("b verified");
        let a_at_b = responder.on_profile(profile_a, NOW + 20).expect("a verified");
        (b_at_a, a_at_b)
    }

    #[test]
    fn a_name_that_hides_or_reorders_text_is_not_plain() {
        assert!(is_plain_name("Alice Example"));
        assert!(is_plain_name("Zoë 東京"));
        assert!(is_plain_name("\u{1F469}\u{200D}\u{1F4BB} می\u{200C}خواهم"));
        for name in ["Al\u{202E}ecila", "Ali\u{200B}ce", "Alice\nBob", "a\u{2066}b", "\u{FEFF}x"] {
            assert!(!is_plain_name(name), "{name:?}");
        }
        assert!(!is_plain_name(&"x".repeat(MAX_NAME + 1)));
    }

    #[test]
    fn both_sides_verify_each_other() {
        let (a, b) = (peer("Alice"), peer("Bob"));
        let (b_at_a, a_at_b) = exchange(&a, &b);
        assert_eq!(b_at_a.did, b.local.did());
        assert_eq!(b_at_a.display_name, "Bob");
        assert_eq!(a_at_b.did, a.local.did());
        assert_eq!(a_at_b.display_name, "Alice");
        assert_eq!(a_at_b.did_document["id"], a.local.did());
    }

    /// A responder's profile as the initiator `a` would receive it.
    fn profile_for(a: &Peer, from: &Local, answers: &str, now: u64) -> Profile {
        from.profile(a.local.did(), answers, Some(challenge([9; 32])), now).expect("signs")
    }

    fn initiator_check(a: &Peer, remote: PeerId, profile: Profile) -> Result<Verified, Error> {
        let (initiator, _) = Initiator::new(a.local.clone(), remote, [1; 32]);
        initiator.on_message(Message::Profile(profile), NOW).map(|(v, _)| v)
    }

    #[test]
    fn a_peer_presenting_another_peers_did_is_refused() {
        let (a, b, c) = (peer("a"), peer("b"), peer("c"));
        // C signs a profile in its own name, but the connection is B's.
        let profile = profile_for(&a, &c.local, &challenge([1; 32]), NOW);
        assert_eq!(
            initiator_check(&a, id(&b), profile.clone()),
            Err(Error::WrongDid(c.local.did().to_owned()))
        );
        // B claims C's DID in its profile, signing with its own key.
        let mut claimed = profile_for(&a, &b.local, &challenge([1; 32]), NOW);
        claimed.did = c.local.did().to_owned();
        assert_eq!(
            initiator_check(&a, id(&b), claimed),
            Err(Error::WrongDid(c.local.did().to_owned()))
        );
        // B claims C's DID on C's connection (it has C's address but not its key).
        let mut on_c = profile_for(&a, &b.local, &challenge([1; 32]), NOW);
        on_c.did = c.local.did().to_owned();
        on_c.did_document = did_document(c.local.did()).expect("did");
        assert_eq!(initiator_check(&a, id(&c), on_c), Err(Error::BadSignature));
    }

    #[test]
    fn a_changed_field_breaks_the_signature() {
        let (a, b) = (peer("a"), peer("b"));
        let good = profile_for(&a, &b.local, &challenge([1; 32]), NOW);
        assert!(initiator_check(&a, id(&b), good.clone()).is_ok());
        let mut renamed = good.clone();
        renamed.display_name = "Mallory".into();
        assert_eq!(initiator_check(&a, id(&b), renamed), Err(Error::BadSignature));
        let mut later = good.clone();
        later.issued_ms += 1;
        assert_eq!(initiator_check(&a, id(&b), later), Err(Error::BadSignature));
        let mut document = good.clone();
        document.did_document["authentication"] = json!([]);
        assert_eq!(initiator_check(&a, id(&b), document), Err(Error::BadSignature));
        let mut garbage = good;
        garbage.signature = "!!".into();
        assert!(matches!(initiator_check(&a, id(&b), garbage), Err(Error::Malformed(_))));
    }

    #[test]
    fn a_replayed_profile_is_refused() {
        let (a, b, c) = (peer("a"), peer("b"), peer("c"));
        // B's answer to another challenge of A's (an earlier exchange).
        let earlier = profile_for(&a, &b.local, &challenge([7; 32]), NOW);
        assert_eq!(initiator_check(&a, id(&b), earlier), Err(Error::Replayed));
        // B's answer to C, replayed to A by someone on B's connection... B itself, or a relay.
        let for_c = b
            .local
            .profile(c.local.did(), &challenge([1; 32]), Some(challenge([9; 32])), NOW)
            .expect("signs");
        assert_eq!(
            initiator_check(&a, id(&b), for_c),
            Err(Error::WrongAudience(crate::quoted(c.local.did())))
        );
        // The responder side: A's profile from an exchange with another challenge of B's.
        let responder = Responder::new(b.local.clone(), id(&a), [2; 32]);
        let old = a.local.profile(b.local.did(), &challenge([3; 32]), None, NOW).expect("signs");
        assert_eq!(responder.on_profile(Message::Profile(old), NOW), Err(Error::Replayed));
    }

    #[test]
    fn a_profile_far_from_our_time_is_refused() {
        let (a, b) = (peer("a"), peer("b"));
        let old = profile_for(&a, &b.local, &challenge([1; 32]), NOW - MAX_SKEW_MS - 1000);
        assert_eq!(initiator_check(&a, id(&b), old), Err(Error::Stale(301)));
        let fine = profile_for(&a, &b.local, &challenge([1; 32]), NOW - MAX_SKEW_MS + 1000);
        assert!(initiator_check(&a, id(&b), fine).is_ok());
    }

    #[test]
    fn a_document_for_another_key_is_refused() {
        let (a, b, c) = (peer("a"), peer("b"), peer("c"));
        let mut profile = Profile {
            did_document: did_document(c.local.did()).expect("did"),
            ..profile_for(&a, &b.local, &challenge([1; 32]), NOW)
        };
        profile.sign(&b.key).expect("signs");
        assert_eq!(initiator_check(&a, id(&b), profile), Err(Error::WrongDocument));
    }

    #[test]
    fn messages_out_of_order_or_malformed_are_refused() {
        let (a, b) = (peer("a"), peer("b"));
        let responder = Responder::new(b.local.clone(), id(&a), [2; 32]);
        let profile = a.local.profile(b.local.did(), "x", None, NOW).expect("signs");
        assert!(matches!(
            responder.on_hello(Message::Profile(profile), NOW),
            Err(Error::Unexpected(_))
        ));
        assert!(matches!(
            responder.on_hello(Message::Hello { challenge: "short".into() }, NOW),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(Message::decode(b"{\"type\":\"hello\"}"), Err(Error::Malformed(_))));
        assert!(matches!(Message::decode(&vec![b' '; MAX_MESSAGE + 1]), Err(Error::Malformed(_))));
        let extra = br#"{"type":"hello","challenge":"x","more":1}"#;
        assert!(matches!(Message::decode(extra), Err(Error::Malformed(_))));
        assert!(Local::new(Keypair::generate_ed25519(), &"x".repeat(MAX_NAME + 1)).is_err());
        assert!(Local::new(Keypair::generate_ed25519(), "bad\nname").is_err());
    }

    #[test]
    fn the_stream_drivers_complete_an_exchange() {
        let (a, b) = (peer("a"), peer("b"));
        let (mut left, mut right) = futures_ringbuf::Endpoint::pair(4096, 4096);
        let (at_a, at_b) = futures::executor::block_on(futures::future::join(
            initiate(&mut left, a.local.clone(), id(&b), [1; 32], || NOW),
            respond(&mut right, b.local.clone(), id(&a), [2; 32], || NOW),
        ));
        assert_eq!(at_a.expect("b verified").did, b.local.did());
        assert_eq!(at_b.expect("a verified").did, a.local.did());
    }

    #[test]
    fn messages_round_trip_through_json() {
        let (a, b) = (peer("a"), peer("b"));
        let (_, hello) = Initiator::new(a.local.clone(), id(&b), [1; 32]);
        assert_eq!(Message::decode(&hello.encode()).expect("decodes"), hello);
        let responder = Responder::new(b.local.clone(), id(&a), [2; 32]);
        let profile = responder.on_hello(hello, NOW).expect("answer");
        assert_eq!(Message::decode(&profile.encode()).expect("decodes"), profile);
    }
}
