//! Messages between pages (and the extension's own UI) and the node.
//!
//! Design decision: pages are untrusted, so a request arrives as JSON *text* and is parsed here,
//! with a size limit checked before parsing, into a closed enum. Anything that is not one of
//! the known shapes becomes a typed [`ApiError`]; nothing on this path panics on input. Pages get
//! the small [`PageRequest`] enum; the popup and options page get [`UiRequest`], which can do
//! more (the sender's kind is decided by the browser, never by the message).
//!
//! Error codes follow EIP-1193 / EIP-1474 where one fits, so wallet-aware pages recognise them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Largest request body accepted from a page, in bytes of JSON text (room for one base64
/// chunk of [`MAX_CHUNK_BYTES`]).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest piece of content moved in one request (`cas_put_chunk`, `cas_read`).
pub const MAX_CHUNK_BYTES: usize = 512 * 1024;
/// Largest piece of content in one message on the binary path (the extension frame), where
/// bytes travel as transferable buffers instead of base64 text.
pub const MAX_FRAME_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// The largest whole number a page's number holds exactly (2^53 - 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Longest method name accepted; longer ones are rejected without being echoed back in full.
pub const MAX_METHOD_LEN: usize = 64;
/// Most bootstrap addresses a user can configure.
pub const MAX_BOOTSTRAP_ADDRS: usize = 16;
/// Longest multiaddr accepted in settings.
pub const MAX_ADDR_LEN: usize = 512;

/// Typed error codes returned to pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The user rejected the request (EIP-1193 4001).
    UserRejected,
    /// The origin has no permission for this method (EIP-1193 4100).
    Unauthorized,
    /// The method does not exist (EIP-1193 4200).
    UnsupportedMethod,
    /// The node is not running or not reachable (EIP-1193 4900).
    Disconnected,
    /// The request is not a `{method, params}` object (JSON-RPC -32600).
    InvalidRequest,
    /// The method exists but its params are wrong (JSON-RPC -32602).
    InvalidParams,
    /// Something failed inside the node (JSON-RPC -32603).
    Internal,
    /// The request is larger than a limit (EIP-1474 -32005).
    LimitExceeded,
    /// The resource is busy, e.g. a request of this origin already waits for the user (EIP-1474
    /// -32002).
    ResourceUnavailable,
    /// No such object, or not one this origin may see (EIP-1474 -32001).
    NotFound,
}

impl ErrorCode {
    pub fn code(self) -> i32 {
        match self {
            ErrorCode::UserRejected => 4001,
            ErrorCode::Unauthorized => 4100,
            ErrorCode::UnsupportedMethod => 4200,
            ErrorCode::Disconnected => 4900,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::Internal => -32603,
            ErrorCode::LimitExceeded => -32005,
            ErrorCode::ResourceUnavailable => -32002,
            ErrorCode::NotFound => -32001,
        }
    }
}

/// An error as a page sees it: a numeric code and a lowercase message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({})", code.code())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }

    pub fn to_json(&self) -> Value {
        json!({ "code": self.code.code(), "message": self.message })
    }
}

/// Requests a web page may make.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageRequest {
    /// `disot_status`: who this peer is and how connected it is.
    Status,
    /// `disot_requestPermissions`: ask the user for permissions (EIP-2255).
    RequestPermissions(Vec<crate::permissions::Permission>),
    /// `disot_getPermissions`: the permissions this origin holds.
    GetPermissions,
    /// `cas_put_start {name?, mime?, public?, minTrust?, size?}`: begin an upload; returns a
    /// handle. A public object is served to any peer that asks for it by CID; others to no
    /// peer (yet). An upload that says its `size` fails if its content has another.
    CasPutStart {
        name: Option<String>,
        mime: Option<String>,
        public: bool,
        min_trust: Option<u8>,
        size: Option<u64>,
    },
    /// `cas_put_chunk {handle, data}`: the next piece of an upload (base64).
    CasPutChunk { handle: u64, data: Vec<u8> },
    /// `cas_put_finish {handle}`: end an upload; returns `{cid, sha256, size}`.
    CasPutFinish { handle: u64 },
    /// `cas_put_abort {handle}`: drop an upload.
    CasPutAbort { handle: u64 },
    /// `cas_stat {name}`: `{cid, sha256, size, pinned, name?, mime?}`.
    CasStat { name: String },
    /// `cas_read {name, offset, length}`: bytes of an object (base64), at most
    /// [`MAX_CHUNK_BYTES`].
    CasRead { name: String, offset: u64, length: u64 },
    /// `cas_has {name}`: whether this origin can read the object.
    CasHas { name: String },
    /// `cas_list`: the objects this origin put.
    CasList,
    /// `cas_pin {name}` / `cas_unpin {name}`.
    CasPin { name: String, pin: bool },
    /// `cas_fetch {name, inline?}`: bring an object this browser does not hold from connected
    /// peers (by CID; Bitswap), verify and store it; then it reads like one put here. With
    /// `inline`, small content (one block of at most 64 KiB) comes with the answer too. With
    /// `localFirst`, the store is looked in before peers are asked (a get that may find it
    /// held); without, peers are asked at once while the store is read (the caller knows it
    /// is missing).
    CasFetch { name: String, inline: bool, local_first: bool },
    /// `cas_transfers`: fetches in progress for this origin (`[{cid, bytes, blocks}]`).
    CasTransfers,
    /// `p2p_peers`: connected peers with their DID, transport and round-trip time.
    P2pPeers,
    /// `disot_sign {contentHash, type, metadata?, id?}`: a DISOT entry signed with this peer's
    /// DID, once the user approves it (needs the `sign` permission).
    Sign(Value),
    /// `disot_verify <entry>`: whether a signed DISOT entry is intact, and who signed it.
    Verify(Value),
    /// `trust_list`: whom this peer trusts, directly and through others, with scores (needs
    /// the `trust` permission).
    TrustList,
    /// `trust_score {did, context?}`: this peer's trust in one DID, and the path that gives it.
    TrustScore { did: String, context: String },
    /// `trust_set {did, level, context?}`: ask the user to trust (or, at level 0, revoke) a
    /// peer; the prompt shows the DID and the level.
    TrustSet { did: String, level: u8, context: String },
    /// Shares and collections (needs the `share` permission): `share {cid | collection, to,
    /// note?}` (approved by the user), `shares_list`, `collections_list`, `collection_get
    /// {id}`, `collection_create {name}`, `collection_add {id, cid, name?, mime?, size?}`,
    /// `collection_remove {id, cid}`, `collection_rename {id, name}`, `collection_member {id,
    /// did, role}`, `sync_watch {since?}` (waits for the next change the site may see: to
    /// shares, or to a collection its pages made). Their
    /// parameters are checked where they are handled.
    Sync { method: String, params: Value },
}

/// The page methods of shares and collections.
pub const SYNC_PAGE_METHODS: &[&str] = &[
    "share",
    "shares_list",
    "collections_list",
    "collection_get",
    "collection_create",
    "collection_add",
    "collection_remove",
    "collection_rename",
    "collection_member",
    "sync_watch",
];

/// What the extension's own pages may also do with shares and sync.
pub const SYNC_UI_METHODS: &[&str] = &[
    "share_revoke",
    "sync_status",
    "sync_policy_set",
    "sync_peer_set",
    "sync_peer_allow",
    "sync_document_retry",
    "share_preauth_list",
    "share_preauth_remove",
];

impl PageRequest {
    /// The permission a page needs for this request, if any.
    pub fn needs(&self) -> Option<crate::permissions::Permission> {
        use crate::permissions::Permission;
        match self {
            PageRequest::Status
            | PageRequest::RequestPermissions(_)
            | PageRequest::GetPermissions
            | PageRequest::Verify(_) => None,
            PageRequest::Sign(_) => Some(Permission::Sign),
            PageRequest::TrustList
            | PageRequest::TrustScore { .. }
            | PageRequest::TrustSet { .. } => Some(Permission::Trust),
            PageRequest::Sync { .. } => Some(Permission::Share),
            _ => Some(Permission::Cas),
        }
    }
}

/// How `debug_crash` makes the node fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrashHow {
    /// A panic.
    #[default]
    Panic,
    /// A trap with no panic, as running out of memory is.
    Abort,
    /// Recursion without end, until the stack overflows.
    Overflow,
}

impl CrashHow {
    /// Fail this way, with `message` for a panic (test builds' hooks only).
    pub fn crash(self, message: &str) {
        match self {
            CrashHow::Panic => panic!("{message}"),
            CrashHow::Abort => std::process::abort(),
            CrashHow::Overflow => {
                overflow_the_stack(0);
            }
        }
    }
}

/// Recurse until the stack overflows.
#[inline(never)]
fn overflow_the_stack(depth: u64) -> u64 {
    // (An end the optimiser cannot see is never reached.)
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let frame = std::hint::black_box([depth; 64]);
    overflow_the_stack(depth + 1).wrapping_add(frame[(depth % 64) as usize])
}

/// Requests from the extension's own pages (popup, options).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UiRequest {
    /// Everything the popup shows.
    Status,
    /// `debug_crash {how?}`: make the node fail as a bug would, in test builds only (refused
    /// otherwise), to show it is started again.
    Crash { how: CrashHow },
    /// The current settings.
    GetSettings,
    /// Replace the settings.
    SetSettings(Settings),
    /// `permissions_pending {id}`: a request waiting for the user, for the prompt to show.
    PendingPermission(u64),
    /// `permissions_decide {id, approve, remember?, block?}`: the user's answer. `remember`
    /// (shares only): let that origin share with those recipients again without asking.
    /// `block` (with a rejection): `"site"` or `"domain"`, turn down the origin's requests from
    /// now on without asking (see [`crate::permissions::Grants::block`]).
    DecidePermission {
        id: u64,
        approve: bool,
        remember: bool,
        block: Option<crate::permissions::BlockScope>,
    },
    /// `permissions_blocked`: the sites and domains blocked from asking.
    ListBlocked,
    /// `permissions_unblock {blocked}`: let a blocked site or domain ask again.
    Unblock(String),
    /// `permissions_list`: every origin's grants.
    ListPermissions,
    /// `permissions_revoke {origin, permission?}`: take back one permission or all of them.
    RevokePermission { origin: String, permission: Option<crate::permissions::Permission> },
    /// `peers_dial {addr, wait?}`: connect to a peer by multiaddr (ending in `/p2p/<peer id>`);
    /// a `.../p2p-circuit/webrtc/p2p/<id>` address is reached through the relay, then directly.
    /// `wait`: answer once connected (directly, for such an address) or failed, not when the
    /// dial starts.
    DialPeer { addr: multiaddr::Multiaddr, wait: bool },
    /// `peers_disconnect {peerId}`: close every connection to a peer. This peer does not dial
    /// it again by itself (to sync) for a minute; it may connect, or be dialled by request.
    DisconnectPeer { peer: libp2p_identity::PeerId },
    /// `trust_set {did, level, context?}`: issue (and keep) a trust assertion about `did`;
    /// level 0 revokes.
    SetTrust { did: String, level: u8, context: String },
    /// `trust_list`: the assertions this peer issued, with the score each gives.
    ListTrust,
    /// Shares, collections and sync ([`SYNC_PAGE_METHODS`] and [`SYNC_UI_METHODS`]).
    Sync { method: String, params: Value },
    /// `invite_create`: a signed invite to this peer (text and QR code).
    CreateInvite,
    /// `invite_accept {invite, level}`: check an invite, trust its peer at `level` and dial it.
    AcceptInvite { invite: String, level: u8 },
    /// `identity_export {passphrase, current?}`: the identity key, sealed under the
    /// passphrase. While the lock is on, `current` must be the lock's passphrase (whoever
    /// sits at an unlocked browser does not get the key with it).
    ExportIdentity { passphrase: String, current: Option<String> },
    /// `identity_lock {passphrase, current?}`: keep the identity key sealed under the
    /// passphrase, and ask for it after each browser start. While the lock is on (a new
    /// passphrase for it), `current` must be its passphrase.
    LockIdentity { passphrase: String, current: Option<String> },
    /// `identity_lock_remove {passphrase}`: keep the key in the clear again (the passphrase
    /// must open the sealed key).
    RemoveLock { passphrase: String },
    /// `identity_import {backup, passphrase, current?}`: replace the identity with the one in
    /// a backup (it takes effect when the peer restarts). While the lock is on, `current` must
    /// be its passphrase.
    ImportIdentity { backup: String, passphrase: String, current: Option<String> },
    /// `cas_gc`: free the space of objects no origin keeps pinned, and of blocks no object
    /// reaches (an upload left unfinished, say).
    CollectGarbage,
}

/// User settings of the browser node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Multiaddrs of bootstrap/relay nodes, each ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    /// STUN/TURN servers for direct connections between browsers.
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
    /// The name this peer shows to the peers it connects to (may be empty).
    #[serde(default)]
    pub display_name: String,
}

/// A STUN or TURN server, as `RTCIceServer` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:...`.
    pub urls: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Most ICE servers accepted.
pub const MAX_ICE_SERVERS: usize = 8;

/// Check ICE servers from the user or the built-in defaults.
pub fn validate_ice_servers(servers: &[IceServer]) -> Result<(), ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidParams, m);
    if servers.len() > MAX_ICE_SERVERS {
        return Err(invalid(format!("at most {MAX_ICE_SERVERS} ICE servers")));
    }
    for s in servers {
        let scheme = s.urls.split(':').next().unwrap_or_default();
        if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") || s.urls.len() > MAX_ADDR_LEN {
            return Err(invalid(format!(
                "{:?} is not a stun:, stuns:, turn: or turns: URL",
                s.urls
            )));
        }
        let is_turn = scheme.starts_with("turn");
        if is_turn && (s.username.is_none() || s.credential.is_none()) {
            return Err(invalid(format!("{} needs a username and a credential", s.urls)));
        }
        if [&s.username, &s.credential].iter().any(|v| v.as_ref().is_some_and(|v| v.len() > 256)) {
            return Err(invalid("ICE username or credential longer than 256 bytes".into()));
        }
    }
    Ok(())
}

/// What `disot_status` returns to a page.
///
/// Who this peer is is told only to an origin the user has granted something (in the manner of
/// `eth_accounts`, empty until a site is connected): the DID is the same on every site, so any
/// site that could read it could follow the user from site to site. Other origins get `null`
/// for both names; the number of connections, which names nobody, is told to every page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageStatus {
    pub did: Option<String>,
    pub peer_id: Option<String>,
    /// Number of peers with at least one open connection.
    pub connections: usize,
}

impl PageStatus {
    /// The answer for an origin: the peer's `did` and `peer_id` only if the origin holds a grant.
    pub fn for_origin(granted: bool, did: &str, peer_id: &str, connections: usize) -> Self {
        let name = |n: &str| granted.then(|| n.to_owned());
        PageStatus { did: name(did), peer_id: name(peer_id), connections }
    }
}

/// A request body split into its method name and params, before the method is interpreted.
struct Envelope {
    method: String,
    params: Value,
}

fn envelope(body: &str) -> Result<Envelope, ApiError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("request is {} bytes; the limit is {MAX_REQUEST_BYTES}", body.len()),
        ));
    }
    let value: Value = serde_json::from_str(body).map_err(|e| {
        ApiError::new(ErrorCode::InvalidRequest, format!("request is not json: {e}"))
    })?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "request must be an object {method, params}",
        ));
    };
    let method = match obj.remove("method") {
        Some(Value::String(m)) if m.is_empty() => {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "method must not be empty"))
        }
        Some(Value::String(m)) if m.len() > MAX_METHOD_LEN => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("method name is longer than {MAX_METHOD_LEN} bytes"),
            ))
        }
        Some(Value::String(m)) => m,
        Some(_) => return Err(ApiError::new(ErrorCode::InvalidRequest, "method must be a string")),
        None => return Err(ApiError::new(ErrorCode::InvalidRequest, "request has no method")),
    };
    let params = obj.remove("params").unwrap_or(Value::Null);
    if !matches!(params, Value::Null | Value::Array(_) | Value::Object(_)) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "params must be an array or an object when present",
        ));
    }
    if let Some(extra) = obj.keys().next() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("unexpected field {:?} in request", truncate(extra, 32)),
        ));
    }
    Ok(Envelope { method, params })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn expect_no_params(method: &str, params: &Value) -> Result<(), ApiError> {
    let empty = match params {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if empty {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::InvalidParams, format!("{method} takes no params")))
    }
}

fn unsupported(method: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedMethod,
        format!("unsupported method {:?}", truncate(method, MAX_METHOD_LEN)),
    )
}

/// Parse a request from a web page.
pub fn parse_page_request(body: &str) -> Result<PageRequest, ApiError> {
    let Envelope { method, params } = envelope(body)?;
    match method.as_str() {
        "disot_status" => expect_no_params(&method, &params).map(|()| PageRequest::Status),
        "disot_requestPermissions" => {
            crate::permissions::parse_requested(&params).map(PageRequest::RequestPermissions)
        }
        "disot_getPermissions" => {
            expect_no_params(&method, &params).map(|()| PageRequest::GetPermissions)
        }
        "cas_put_start" => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct P {
                name: Option<String>,
                mime: Option<String>,
                #[serde(default)]
                public: bool,
                #[serde(default, rename = "minTrust")]
                min_trust: Option<u8>,
                size: Option<u64>,
            }
            let p: P = if params.is_null() { P::default() } else { typed(&method, params)? };
            if p.min_trust.is_some_and(|m| m > 100) {
                return Err(ApiError::new(ErrorCode::InvalidParams, "minTrust: 0 to 100"));
            }
            // As a page's number can say it exactly.
            if p.size.is_some_and(|s| s > MAX_SAFE_INTEGER) {
                return Err(ApiError::new(
                    ErrorCode::InvalidParams,
                    "size: at most 2^53 - 1 bytes",
                ));
            }
            for (what, v) in [("name", &p.name), ("mime", &p.mime)] {
                if v.as_ref().is_some_and(|v| v.len() > 256) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParams,
                        format!("{what} is longer than 256 bytes"),
                    ));
                }
            }
            Ok(PageRequest::CasPutStart {
                name: p.name,
                mime: p.mime,
                public: p.public,
                min_trust: p.min_trust,
                size: p.size,
            })
        }
        "cas_put_chunk" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                handle: u64,
                data: String,
            }
            let p: P = typed(&method, params)?;
            use base64::Engine as _;
            let data =
                base64::engine::general_purpose::STANDARD.decode(p.data.as_bytes()).map_err(
                    |e| ApiError::new(ErrorCode::InvalidParams, format!("data is not base64: {e}")),
                )?;
            if data.len() > MAX_CHUNK_BYTES {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!("chunk of {} bytes; the limit is {MAX_CHUNK_BYTES}", data.len()),
                ));
            }
            Ok(PageRequest::CasPutChunk { handle: p.handle, data })
        }
        "cas_put_finish" | "cas_put_abort" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                handle: u64,
            }
            let p: P = typed(&method, params)?;
            Ok(if method == "cas_put_finish" {
                PageRequest::CasPutFinish { handle: p.handle }
            } else {
                PageRequest::CasPutAbort { handle: p.handle }
            })
        }
        "cas_fetch" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                name: String,
                #[serde(default)]
                inline: bool,
                #[serde(default, rename = "localFirst")]
                local_first: bool,
            }
            let p: P = typed(&method, params)?;
            check_name(&method, &p.name)?;
            Ok(PageRequest::CasFetch { name: p.name, inline: p.inline, local_first: p.local_first })
        }
        "cas_stat" | "cas_has" | "cas_pin" | "cas_unpin" => {
            let name = name_param(&method, params)?;
            Ok(match method.as_str() {
                "cas_stat" => PageRequest::CasStat { name },
                "cas_has" => PageRequest::CasHas { name },
                "cas_pin" => PageRequest::CasPin { name, pin: true },
                _ => PageRequest::CasPin { name, pin: false },
            })
        }
        "cas_read" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                name: String,
                #[serde(default)]
                offset: u64,
                length: u64,
            }
            let p: P = typed(&method, params)?;
            check_name(&method, &p.name)?;
            if p.length > MAX_CHUNK_BYTES as u64 {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!("at most {MAX_CHUNK_BYTES} bytes per cas_read"),
                ));
            }
            Ok(PageRequest::CasRead { name: p.name, offset: p.offset, length: p.length })
        }
        "cas_list" => expect_no_params(&method, &params).map(|()| PageRequest::CasList),
        "cas_transfers" => expect_no_params(&method, &params).map(|()| PageRequest::CasTransfers),
        "p2p_peers" => expect_no_params(&method, &params).map(|()| PageRequest::P2pPeers),
        "trust_list" => expect_no_params(&method, &params).map(|()| PageRequest::TrustList),
        "trust_score" => {
            let TrustParams { did, level, context } = trust_params(&method, params)?;
            if level.is_some() {
                return Err(ApiError::new(ErrorCode::InvalidParams, "trust_score takes no level"));
            }
            Ok(PageRequest::TrustScore { did, context })
        }
        "trust_set" => {
            let TrustParams { did, level, context } = trust_params(&method, params)?;
            let level = level.ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidParams, "level: 0 to 100 is required")
            })?;
            Ok(PageRequest::TrustSet { did, level, context })
        }
        m if SYNC_PAGE_METHODS.contains(&m) => Ok(PageRequest::Sync { method, params }),
        "disot_sign" if params.is_object() => Ok(PageRequest::Sign(params)),
        "disot_verify" if params.is_object() => Ok(PageRequest::Verify(params)),
        "disot_sign" | "disot_verify" => Err(ApiError::new(
            ErrorCode::InvalidParams,
            format!("{method} takes one object (the entry)"),
        )),
        _ => Err(unsupported(&method)),
    }
}

/// `{did, level?, context?}` of the trust methods, checked.
struct TrustParams {
    did: String,
    level: Option<u8>,
    context: String,
}

fn trust_params(method: &str, params: Value) -> Result<TrustParams, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        did: String,
        #[serde(default)]
        level: Option<u8>,
        #[serde(default)]
        context: Option<String>,
    }
    let p: P = typed(method, params)?;
    let invalid = |m: &str| ApiError::new(ErrorCode::InvalidParams, m.to_owned());
    if p.level.is_some_and(|l| l > 100) {
        return Err(invalid("level: 0 to 100"));
    }
    if crate::identity::public_key_from_did(&p.did).is_err() {
        return Err(invalid("did: expected the did:key of an Ed25519 key"));
    }
    let context = p.context.unwrap_or_else(|| "content".into());
    if context.is_empty()
        || context.len() > 64
        || !context.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid("context: 1 to 64 of a-z, 0-9, - and _"));
    }
    Ok(TrustParams { did: p.did, level: p.level, context })
}

/// Parse a request from the extension's popup or options page.
pub fn parse_ui_request(body: &str) -> Result<UiRequest, ApiError> {
    let Envelope { method, params } = envelope(body)?;
    match method.as_str() {
        "ui_status" => expect_no_params(&method, &params).map(|()| UiRequest::Status),
        "settings_get" => expect_no_params(&method, &params).map(|()| UiRequest::GetSettings),
        "cas_gc" => expect_no_params(&method, &params).map(|()| UiRequest::CollectGarbage),
        "debug_crash" => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                #[serde(default)]
                how: CrashHow,
            }
            let P { how } =
                if params.is_null() { P { how: CrashHow::Panic } } else { typed(&method, params)? };
            Ok(UiRequest::Crash { how })
        }
        "settings_set" => {
            let settings: Settings = serde_json::from_value(params).map_err(|e| {
                ApiError::new(ErrorCode::InvalidParams, format!("settings_set: {e}"))
            })?;
            validate_ice_servers(&settings.ice_servers)?;
            let name = &settings.display_name;
            if !crate::auth::is_plain_name(name) {
                return Err(ApiError::new(
                    ErrorCode::InvalidParams,
                    format!(
                        "displayName: at most {} characters, no control or invisible formatting characters",
                        crate::auth::MAX_NAME
                    ),
                ));
            }
            Ok(UiRequest::SetSettings(settings))
        }
        "permissions_pending" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                id: u64,
            }
            let p: P = typed(&method, params)?;
            Ok(UiRequest::PendingPermission(p.id))
        }
        "permissions_decide" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                id: u64,
                approve: bool,
                #[serde(default)]
                remember: bool,
                #[serde(default)]
                block: Option<crate::permissions::BlockScope>,
            }
            let p: P = typed(&method, params)?;
            if p.approve && p.block.is_some() {
                return Err(ApiError::new(
                    ErrorCode::InvalidParams,
                    "a site is blocked only with a rejection",
                ));
            }
            Ok(UiRequest::DecidePermission {
                id: p.id,
                approve: p.approve,
                remember: p.remember,
                block: p.block,
            })
        }
        "permissions_list" => {
            expect_no_params(&method, &params).map(|()| UiRequest::ListPermissions)
        }
        "permissions_blocked" => {
            expect_no_params(&method, &params).map(|()| UiRequest::ListBlocked)
        }
        "permissions_unblock" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                blocked: String,
            }
            let p: P = typed(&method, params)?;
            Ok(UiRequest::Unblock(p.blocked))
        }
        "invite_create" => expect_no_params(&method, &params).map(|()| UiRequest::CreateInvite),
        "invite_accept" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                invite: String,
                level: u8,
            }
            let p: P = typed(&method, params)?;
            if p.level == 0 || p.level > 100 {
                return Err(ApiError::new(ErrorCode::InvalidParams, "level: 1 to 100"));
            }
            if p.invite.len() > crate::invite::MAX_INVITE_BYTES {
                return Err(ApiError::new(
                    ErrorCode::InvalidParams,
                    "that is too long for an invite",
                ));
            }
            Ok(UiRequest::AcceptInvite { invite: p.invite, level: p.level })
        }
        "peers_disconnect" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields, rename_all = "camelCase")]
            struct P {
                peer_id: String,
            }
            let p: P = typed(&method, params)?;
            let peer = p.peer_id.parse().map_err(|e| {
                ApiError::new(ErrorCode::InvalidParams, format!("peerId {}: {e}", p.peer_id))
            })?;
            Ok(UiRequest::DisconnectPeer { peer })
        }
        "peers_dial" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                addr: String,
                #[serde(default)]
                wait: bool,
            }
            let p: P = typed(&method, params)?;
            let invalid = |m: String| ApiError::new(ErrorCode::InvalidParams, m);
            if p.addr.len() > MAX_ADDR_LEN {
                return Err(invalid(format!("address longer than {MAX_ADDR_LEN} bytes")));
            }
            let addr: multiaddr::Multiaddr =
                p.addr.parse().map_err(|e| invalid(format!("{}: {e}", p.addr)))?;
            if !matches!(addr.iter().last(), Some(multiaddr::Protocol::P2p(_))) {
                return Err(invalid("the address must end in /p2p/<peer id>".into()));
            }
            Ok(UiRequest::DialPeer { addr, wait: p.wait })
        }
        "trust_set" => {
            let TrustParams { did, level, context } = trust_params(&method, params)?;
            let level = level.ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidParams, "level: 0 to 100 is required")
            })?;
            Ok(UiRequest::SetTrust { did, level, context })
        }
        "trust_list" => expect_no_params(&method, &params).map(|()| UiRequest::ListTrust),
        m if SYNC_PAGE_METHODS.contains(&m) || SYNC_UI_METHODS.contains(&m) => {
            Ok(UiRequest::Sync { method, params })
        }
        "identity_export" | "identity_lock" | "identity_lock_remove" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                passphrase: String,
                #[serde(default)]
                current: Option<String>,
            }
            let P { passphrase, current } = typed(&method, params)?;
            Ok(match method.as_str() {
                "identity_export" => UiRequest::ExportIdentity { passphrase, current },
                "identity_lock" => UiRequest::LockIdentity { passphrase, current },
                _ if current.is_some() => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParams,
                        format!("{method}: its passphrase is the lock's"),
                    ))
                }
                _ => UiRequest::RemoveLock { passphrase },
            })
        }
        "identity_import" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                backup: String,
                passphrase: String,
                #[serde(default)]
                current: Option<String>,
            }
            let p: P = typed(&method, params)?;
            Ok(UiRequest::ImportIdentity {
                backup: p.backup,
                passphrase: p.passphrase,
                current: p.current,
            })
        }
        "permissions_revoke" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                origin: String,
                #[serde(default)]
                permission: Option<String>,
            }
            let p: P = typed(&method, params)?;
            let permission =
                p.permission.as_deref().map(crate::permissions::Permission::parse).transpose()?;
            Ok(UiRequest::RevokePermission { origin: p.origin, permission })
        }
        _ => Err(unsupported(&method)),
    }
}

/// A content name: a CID or `sha256:<64 hex digits>`; anything else is an invalid param.
fn check_name(method: &str, name: &str) -> Result<(), ApiError> {
    let ok = match name.strip_prefix("sha256:") {
        Some(hex) => hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => name.len() <= 128 && name.parse::<cid::Cid>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidParams,
            format!("{method}: name must be a CID or sha256:<64 hex digits>"),
        ))
    }
}

fn name_param(method: &str, params: Value) -> Result<String, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    let p: P = typed(method, params)?;
    check_name(method, &p.name)?;
    Ok(p.name)
}

fn typed<T: serde::de::DeserializeOwned>(method: &str, params: Value) -> Result<T, ApiError> {
    serde_json::from_value(params)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParams, format!("{method}: {e}")))
}

/// The JSON text of a response: `{"result": ...}` or `{"error": {code, message}}`.
pub fn response_json(result: Result<Value, ApiError>) -> String {
    let mut obj = Map::new();
    match result {
        Ok(v) => obj.insert("result".into(), v),
        Err(e) => obj.insert("error".into(), e.to_json()),
    };
    Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_peer_only_to_granted_origins() {
        let did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
        let granted =
            serde_json::to_value(PageStatus::for_origin(true, did, "12D3Koo", 3)).unwrap();
        assert_eq!(granted, json!({ "did": did, "peerId": "12D3Koo", "connections": 3 }));
        let stranger =
            serde_json::to_value(PageStatus::for_origin(false, did, "12D3Koo", 3)).unwrap();
        assert_eq!(stranger, json!({ "did": null, "peerId": null, "connections": 3 }));
    }

    fn code_of(body: &str) -> i32 {
        parse_page_request(body).expect_err("must be rejected").code.code()
    }

    #[test]
    fn status_parses_with_or_without_empty_params() {
        for body in [
            r#"{"method":"disot_status"}"#,
            r#"{"method":"disot_status","params":[]}"#,
            r#"{"method":"disot_status","params":{}}"#,
            r#"{"method":"disot_status","params":null}"#,
        ] {
            assert_eq!(parse_page_request(body), Ok(PageRequest::Status), "{body}");
        }
    }

    #[test]
    fn malformed_requests_get_typed_errors() {
        assert_eq!(code_of("not json"), -32600);
        assert_eq!(code_of("[]"), -32600);
        assert_eq!(code_of("42"), -32600);
        assert_eq!(code_of("{}"), -32600);
        assert_eq!(code_of(r#"{"method":7}"#), -32600);
        assert_eq!(code_of(r#"{"method":""}"#), -32600);
        assert_eq!(code_of(r#"{"method":"disot_status","params":"x"}"#), -32600);
        assert_eq!(code_of(r#"{"method":"disot_status","extra":1}"#), -32600);
        assert_eq!(code_of(r#"{"method":"disot_status","params":[1]}"#), -32602);
        assert_eq!(code_of(r#"{"method":"eth_sendTransaction"}"#), 4200);
    }

    #[test]
    fn limits_are_enforced_before_parsing() {
        let huge = format!(
            r#"{{"method":"disot_status","params":["{}"]}}"#,
            "a".repeat(MAX_REQUEST_BYTES)
        );
        assert_eq!(code_of(&huge), -32005);
        let long_method = format!(r#"{{"method":"{}"}}"#, "m".repeat(MAX_METHOD_LEN + 1));
        assert_eq!(code_of(&long_method), -32600);
    }

    #[test]
    fn unsupported_method_message_is_bounded() {
        let err = parse_page_request(&format!(r#"{{"method":"{}"}}"#, "é".repeat(30)))
            .expect_err("unknown");
        assert_eq!(err.code, ErrorCode::UnsupportedMethod);
        assert!(err.message.len() < 100, "{}", err.message);
    }

    #[test]
    fn trust_methods_need_the_trust_permission_and_checked_params() {
        use crate::permissions::Permission;
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        let set = parse_page_request(&format!(
            r#"{{"method":"trust_set","params":{{"did":"{did}","level":70}}}}"#
        ))
        .expect("valid");
        assert_eq!(
            set,
            PageRequest::TrustSet { did: did.into(), level: 70, context: "content".into() }
        );
        assert_eq!(set.needs(), Some(Permission::Trust));
        assert_eq!(
            parse_page_request(r#"{"method":"trust_list"}"#).expect("valid").needs(),
            Some(Permission::Trust)
        );
        let score =
            format!(r#"{{"method":"trust_score","params":{{"did":"{did}","context":"relay"}}}}"#);
        assert_eq!(
            parse_page_request(&score),
            Ok(PageRequest::TrustScore { did: did.into(), context: "relay".into() })
        );
        for bad in [
            format!(r#"{{"method":"trust_set","params":{{"did":"{did}","level":101}}}}"#),
            format!(r#"{{"method":"trust_set","params":{{"did":"{did}"}}}}"#),
            format!(
                r#"{{"method":"trust_set","params":{{"did":"{did}","level":5,"context":"a b"}}}}"#
            ),
            r#"{"method":"trust_set","params":{"did":"did:web:x","level":5}}"#.to_owned(),
            format!(r#"{{"method":"trust_score","params":{{"did":"{did}","level":5}}}}"#),
        ] {
            assert_eq!(code_of(&bad), -32602, "{bad}");
        }
    }

    #[test]
    fn disconnecting_names_a_peer_id() {
        let id = "12D3KooWEcvbTQf6BfmtDjZxmFPmsStj3jv5APhJYi8F9nJ5AeJ7";
        assert_eq!(
            parse_ui_request(&format!(
                r#"{{"method":"peers_disconnect","params":{{"peerId":"{id}"}}}}"#
            )),
            Ok(UiRequest::DisconnectPeer { peer: id.parse().expect("peer id") })
        );
        for bad in [r#"{"peerId":"not-a-peer"}"#, r#"{"peerId":7}"#, r#"{}"#, r#"{"peer":"x"}"#] {
            let r = parse_ui_request(&format!(r#"{{"method":"peers_disconnect","params":{bad}}}"#));
            assert_eq!(r.expect_err(bad).code, ErrorCode::InvalidParams, "{bad}");
        }
        assert_eq!(
            code_of(&format!(r#"{{"method":"peers_disconnect","params":{{"peerId":"{id}"}}}}"#)),
            4200
        );
    }

    #[test]
    fn ui_methods_are_not_page_methods() {
        assert_eq!(code_of(r#"{"method":"settings_set","params":{"bootstrap":[]}}"#), 4200);
        assert_eq!(code_of(r#"{"method":"ui_status"}"#), 4200);
        assert_eq!(
            parse_ui_request(
                r#"{"method":"settings_set","params":{"bootstrap":["/dns4/a/tcp/1/ws"]}}"#
            ),
            Ok(UiRequest::SetSettings(Settings {
                bootstrap: vec!["/dns4/a/tcp/1/ws".into()],
                ice_servers: vec![],
                display_name: String::new(),
            }))
        );
        let named = |name: &str| {
            parse_ui_request(&format!(
                r#"{{"method":"settings_set","params":{{"bootstrap":[],"displayName":{}}}}}"#,
                serde_json::Value::String(name.into())
            ))
        };
        assert!(named("Alice's laptop").is_ok());
        assert_eq!(named(&"x".repeat(65)).expect_err("too long").code, ErrorCode::InvalidParams);
        assert_eq!(named("a\nb").expect_err("control").code, ErrorCode::InvalidParams);
        let bad = parse_ui_request(r#"{"method":"settings_set","params":{"bootstrap":"x"}}"#);
        assert_eq!(bad.expect_err("wrong type").code, ErrorCode::InvalidParams);
        let ice = |servers: &str| {
            parse_ui_request(&format!(
                r#"{{"method":"settings_set","params":{{"bootstrap":[],"iceServers":{servers}}}}}"#
            ))
        };
        assert!(ice(r#"[{"urls":"stun:127.0.0.1:3478"}]"#).is_ok());
        assert!(ice(r#"[{"urls":"turn:10.0.0.1:3478","username":"u","credential":"p"}]"#).is_ok());
        assert_eq!(
            ice(r#"[{"urls":"turn:10.0.0.1:3478"}]"#).expect_err("no credential").code,
            ErrorCode::InvalidParams
        );
        assert_eq!(
            ice(r#"[{"urls":"http://x"}]"#).expect_err("not ice").code,
            ErrorCode::InvalidParams
        );
    }

    #[test]
    fn cas_methods_parse_and_validate() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"abc");
        assert_eq!(
            parse_page_request(&format!(
                r#"{{"method":"cas_put_chunk","params":{{"handle":1,"data":"{b64}"}}}}"#
            )),
            Ok(PageRequest::CasPutChunk { handle: 1, data: b"abc".to_vec() })
        );
        assert_eq!(
            code_of(r#"{"method":"cas_put_chunk","params":{"handle":1,"data":"%%%"}}"#),
            -32602
        );
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_CHUNK_BYTES + 1]);
        assert_eq!(
            code_of(&format!(
                r#"{{"method":"cas_put_chunk","params":{{"handle":1,"data":"{big}"}}}}"#
            )),
            -32005
        );
        assert_eq!(
            parse_page_request(r#"{"method":"cas_put_start","params":{"size":1073741824}}"#),
            Ok(PageRequest::CasPutStart {
                name: None,
                mime: None,
                public: false,
                min_trust: None,
                size: Some(1 << 30)
            })
        );
        for size in ["-1", "1.5", "9007199254740992", "\"10\""] {
            let body = format!(r#"{{"method":"cas_put_start","params":{{"size":{size}}}}}"#);
            assert_eq!(code_of(&body), -32602, "size {size}");
        }
        assert_eq!(code_of(r#"{"method":"cas_stat","params":{"name":"not-a-cid"}}"#), -32602);
        assert_eq!(code_of(r#"{"method":"cas_stat","params":{"name":"sha256:abc"}}"#), -32602);
        assert_eq!(
            code_of(
                r#"{"method":"cas_read","params":{"name":"sha256:0000000000000000000000000000000000000000000000000000000000000000","length":99999999}}"#
            ),
            -32005
        );
        let ok = parse_page_request(
            r#"{"method":"cas_has","params":{"name":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"}}"#,
        );
        assert!(matches!(ok, Ok(PageRequest::CasHas { .. })));
        assert_eq!(ok.expect("has").needs(), Some(crate::permissions::Permission::Cas));
        assert_eq!(PageRequest::Status.needs(), None);
    }

    #[test]
    fn permission_methods_parse() {
        use crate::permissions::Permission;
        assert_eq!(
            parse_page_request(r#"{"method":"disot_requestPermissions","params":[{"cas":{}}]}"#),
            Ok(PageRequest::RequestPermissions(vec![Permission::Cas]))
        );
        assert_eq!(
            code_of(r#"{"method":"disot_requestPermissions","params":[{"root":{}}]}"#),
            -32602
        );
        assert_eq!(code_of(r#"{"method":"disot_requestPermissions"}"#), -32602);
        assert_eq!(
            code_of(r#"{"method":"permissions_decide","params":{"id":1,"approve":true}}"#),
            4200
        );
        assert_eq!(
            parse_ui_request(
                r#"{"method":"permissions_decide","params":{"id":3,"approve":false}}"#
            ),
            Ok(UiRequest::DecidePermission { id: 3, approve: false, remember: false, block: None })
        );
        assert_eq!(
            parse_ui_request(
                r#"{"method":"permissions_decide","params":{"id":3,"approve":false,"block":"domain"}}"#
            ),
            Ok(UiRequest::DecidePermission {
                id: 3,
                approve: false,
                remember: false,
                block: Some(crate::permissions::BlockScope::Domain)
            })
        );
        for bad in [
            r#"{"method":"permissions_decide","params":{"id":3,"approve":true,"block":"site"}}"#,
            r#"{"method":"permissions_decide","params":{"id":3,"approve":false,"block":"all"}}"#,
            r#"{"method":"permissions_unblock","params":{}}"#,
        ] {
            assert_eq!(
                parse_ui_request(bad).expect_err(bad).code,
                ErrorCode::InvalidParams,
                "{bad}"
            );
        }
        assert_eq!(
            parse_ui_request(r#"{"method":"permissions_unblock","params":{"blocked":"a.com"}}"#),
            Ok(UiRequest::Unblock("a.com".into()))
        );
        assert_eq!(
            parse_ui_request(
                r#"{"method":"permissions_revoke","params":{"origin":"https://a.com"}}"#
            ),
            Ok(UiRequest::RevokePermission { origin: "https://a.com".into(), permission: None })
        );
        let bad = parse_ui_request(r#"{"method":"permissions_decide","params":{"id":"x"}}"#);
        assert_eq!(bad.expect_err("wrong type").code, ErrorCode::InvalidParams);
    }

    #[test]
    fn responses_are_result_or_error() {
        assert_eq!(response_json(Ok(json!(1))), r#"{"result":1}"#);
        let e = ApiError::new(ErrorCode::Unauthorized, "no");
        assert_eq!(response_json(Err(e)), r#"{"error":{"code":4100,"message":"no"}}"#);
    }
}
