//! Per-origin permissions, in the manner of EIP-2255.
//!
//! Design decision: a page asks, the user decides in the extension's own UI, and the grant is
//! kept per origin until the user revokes it. The origin is always the one the browser reported
//! for the message, never one the page names. This module is sans-IO: it holds grants and
//! pending requests and is told the time; the browser node persists [`Grants`] and opens the
//! prompt. The main types are [`Grants`] and [`Pending`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{ApiError, ErrorCode};

/// Most requests waiting for the user at once, over all origins.
pub const MAX_PENDING: usize = 16;
/// Longest origin accepted.
pub const MAX_ORIGIN_LEN: usize = 256;
/// Most sites the user may block from asking.
pub const MAX_BLOCKED: usize = 1024;

/// What a page can be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Permission {
    /// Put, get, list and pin content in the local store.
    Cas,
    /// Ask for DISOT entries to be signed with this peer's DID (each one approved by the user).
    Sign,
    /// See whom this peer trusts, and ask to change it (each change approved by the user).
    Trust,
    /// Share content and collections with peers (each share approved by the user), and see
    /// what was shared with this peer.
    Share,
}

impl Permission {
    /// Its name in requests and grants.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Cas => "cas",
            Permission::Sign => "sign",
            Permission::Trust => "trust",
            Permission::Share => "share",
        }
    }

    /// The error for an origin without it: which permission to ask for, and how.
    pub fn missing(self) -> ApiError {
        let name = self.name();
        ApiError::new(
            ErrorCode::Unauthorized,
            format!(
                r#"this origin has no "{name}" permission: ask with disot_requestPermissions [{{"{name}": {{}}}}]"#
            ),
        )
    }

    pub fn parse(name: &str) -> Result<Self, ApiError> {
        match name {
            "cas" => Ok(Permission::Cas),
            "sign" => Ok(Permission::Sign),
            "trust" => Ok(Permission::Trust),
            "share" => Ok(Permission::Share),
            other => Err(ApiError::new(
                ErrorCode::InvalidParams,
                format!("unknown permission {:?}", other.chars().take(32).collect::<String>()),
            )),
        }
    }
}

/// Check that `origin` is a serialised http(s) origin (`scheme://host[:port]`, nothing more).
pub fn validate_origin(origin: &str) -> Result<(), ApiError> {
    let bad =
        || ApiError::new(ErrorCode::Unauthorized, "requests are only accepted from http(s) pages");
    if origin.len() > MAX_ORIGIN_LEN {
        return Err(bad());
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(bad)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad());
    }
    Ok(())
}

/// One granted permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub permission: Permission,
    /// Milliseconds since the Unix epoch.
    pub granted_at: u64,
}

/// How much the user blocks from asking, from a prompt of one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockScope {
    /// That origin only.
    Site,
    /// Every origin whose host is that origin's [`block_domain`] or under it: one answer for a
    /// site that asks from many subdomains.
    Domain,
}

/// The host of a serialised origin (as [`validate_origin`] accepts), without its port or final
/// dots (`a.example.com.` is the same host as `a.example.com`), in lower case.
fn host_of(origin: &str) -> String {
    let rest = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let host = if rest.starts_with('[') {
        rest.split_inclusive(']').next().unwrap_or(rest)
    } else {
        rest.rsplit_once(':').map_or(rest, |(host, _port)| host)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether browsers treat pages of `origin` as secure: HTTPS, or plain HTTP to this computer
/// (`localhost`, its subdomains and loopback addresses). The prompt warns of any other site:
/// anyone on the network between the user and it can change what its pages ask for.
pub fn secure_origin(origin: &str) -> bool {
    let Some((scheme, _)) = origin.split_once("://") else { return false };
    match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => {
            let host = host_of(origin);
            host == "localhost"
                || host.ends_with(".localhost")
                || host == "[::1]"
                || host.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
        }
        _ => false,
    }
}

/// The domain the prompt offers to block with [`BlockScope::Domain`], if any: the host's
/// registrable domain by the public-suffix list (`a.b.example.co.uk` → `example.co.uk`,
/// `x.github.io` → `x.github.io`, since anyone may have a site under `github.io`), and
/// `localhost` for its subdomains; none for an IP address, a single-label host or a host that is
/// itself a public suffix.
pub fn block_domain(origin: &str) -> Option<String> {
    let host = host_of(origin);
    if host.starts_with('[') || host.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    if host.ends_with(".localhost") {
        return Some("localhost".to_owned());
    }
    if !host.contains('.') {
        return None;
    }
    psl2::lookup(&host).and_then(|d| d.registrable_domain()).map(str::to_owned)
}

/// The grants of every origin, and the sites blocked from asking. Serialised as-is into storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    by_origin: BTreeMap<String, Vec<Grant>>,
    /// Origins (`https://a.example.com`) and domains (`example.com`, standing for it and every
    /// host under it) whose requests are turned down without a prompt, with when (ms since the
    /// epoch). Grants they hold stay: blocking stops the asking.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    blocked: BTreeMap<String, u64>,
}

impl Grants {
    pub fn allows(&self, origin: &str, permission: Permission) -> bool {
        self.by_origin.get(origin).is_some_and(|g| g.iter().any(|g| g.permission == permission))
    }

    pub fn of(&self, origin: &str) -> Vec<Grant> {
        self.by_origin.get(origin).cloned().unwrap_or_default()
    }

    pub fn grant(&mut self, origin: &str, permissions: &[Permission], now_ms: u64) {
        let list = self.by_origin.entry(origin.to_owned()).or_default();
        for p in permissions {
            if !list.iter().any(|g| g.permission == *p) {
                list.push(Grant { permission: *p, granted_at: now_ms });
            }
        }
    }

    /// Revoke one permission, or all of an origin's with `None`. Returns whether anything went.
    pub fn revoke(&mut self, origin: &str, permission: Option<Permission>) -> bool {
        let Some(list) = self.by_origin.get_mut(origin) else { return false };
        let before = list.len();
        list.retain(|g| permission.is_some_and(|p| g.permission != p));
        let changed = list.len() != before;
        if list.is_empty() {
            self.by_origin.remove(origin);
        }
        changed
    }

    /// Every origin with its grants, for the popup.
    pub fn all(&self) -> &BTreeMap<String, Vec<Grant>> {
        &self.by_origin
    }

    /// Whether `origin` may not ask the user anything.
    pub fn blocks(&self, origin: &str) -> bool {
        if self.blocked.contains_key(origin) {
            return true;
        }
        // The domains the origin's host is, or is under.
        let host = host_of(origin);
        let mut host = host.as_str();
        loop {
            if self.blocked.contains_key(host) {
                return true;
            }
            match host.split_once('.') {
                Some((_, parent)) => host = parent,
                None => return false,
            }
        }
    }

    /// Block `origin`, or its [`block_domain`], from asking. Returns what is blocked (an origin
    /// or a domain), the name [`Grants::unblock`] takes.
    pub fn block(
        &mut self,
        origin: &str,
        scope: BlockScope,
        now_ms: u64,
    ) -> Result<String, ApiError> {
        let blocked = match scope {
            BlockScope::Site => origin.to_owned(),
            BlockScope::Domain => block_domain(origin).ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidParams, "this site has no domain to block")
            })?,
        };
        if !self.blocked.contains_key(&blocked) && self.blocked.len() >= MAX_BLOCKED {
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!("at most {MAX_BLOCKED} sites can be blocked: unblock some first"),
            ));
        }
        self.blocked.entry(blocked.clone()).or_insert(now_ms);
        Ok(blocked)
    }

    /// Let a blocked origin or domain ask again. Returns whether it was blocked.
    pub fn unblock(&mut self, blocked: &str) -> bool {
        self.blocked.remove(blocked).is_some()
    }

    /// What is blocked, with when, for the popup.
    pub fn blocked(&self) -> &BTreeMap<String, u64> {
        &self.blocked
    }
}

/// A request waiting for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub id: u64,
    pub origin: String,
    pub permissions: Vec<Permission>,
    /// For a signing request: the entry to be signed, as the user sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign: Option<serde_json::Value>,
    /// For a trust request: `{did, level, context}`, as the user sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<serde_json::Value>,
    /// For a share: `{cid | collection, to, note}` and what is shared, as the user sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<serde_json::Value>,
    pub asked_at: u64,
}

impl Request {
    /// The permission the site must hold for what it asks the user (`None` when it asks for
    /// permissions).
    pub fn needs(&self) -> Option<Permission> {
        if self.sign.is_some() {
            Some(Permission::Sign)
        } else if self.trust.is_some() {
            Some(Permission::Trust)
        } else if self.share.is_some() {
            Some(Permission::Share)
        } else {
            None
        }
    }
}

/// Requests waiting for the user, bounded, at most one per origin.
#[derive(Debug, Default)]
pub struct Pending {
    next_id: u64,
    requests: BTreeMap<u64, Request>,
}

impl Pending {
    /// Requests numbered from a node started at `started_ms` (ms since the epoch): above any
    /// id a node started earlier gave, so that a prompt window left open from before a restart
    /// cannot answer a new request that got its id. (Ids stay below 2^53, as JS numbers.)
    pub fn started_at(started_ms: u64) -> Self {
        Pending { next_id: started_ms.saturating_mul(1000), requests: BTreeMap::new() }
    }

    /// Register a request; errors if the origin already has one waiting or too many wait.
    pub fn open(
        &mut self,
        origin: &str,
        permissions: Vec<Permission>,
        now_ms: u64,
    ) -> Result<Request, ApiError> {
        self.open_request(origin, permissions, None, None, None, now_ms)
    }

    /// Register a request to sign `entry` (same limits as [`Pending::open`]).
    pub fn open_sign(
        &mut self,
        origin: &str,
        entry: serde_json::Value,
        now_ms: u64,
    ) -> Result<Request, ApiError> {
        self.open_request(origin, Vec::new(), Some(entry), None, None, now_ms)
    }

    /// A page asks the user to trust (or revoke) a peer.
    pub fn open_trust(
        &mut self,
        origin: &str,
        trust: serde_json::Value,
        now_ms: u64,
    ) -> Result<Request, ApiError> {
        self.open_request(origin, Vec::new(), None, Some(trust), None, now_ms)
    }

    /// A page asks the user to share something with peers.
    pub fn open_share(
        &mut self,
        origin: &str,
        share: serde_json::Value,
        now_ms: u64,
    ) -> Result<Request, ApiError> {
        self.open_request(origin, Vec::new(), None, None, Some(share), now_ms)
    }

    fn open_request(
        &mut self,
        origin: &str,
        permissions: Vec<Permission>,
        sign: Option<serde_json::Value>,
        trust: Option<serde_json::Value>,
        share: Option<serde_json::Value>,
        now_ms: u64,
    ) -> Result<Request, ApiError> {
        if self.requests.values().any(|r| r.origin == origin) {
            // EIP-1474's "resource unavailable": MetaMask answers a duplicate prompt the same way.
            return Err(ApiError::new(
                ErrorCode::ResourceUnavailable,
                "a request from this origin is already waiting for the user",
            ));
        }
        if self.requests.len() >= MAX_PENDING {
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                "too many permission requests are waiting",
            ));
        }
        self.next_id += 1;
        let request = Request {
            id: self.next_id,
            origin: origin.to_owned(),
            permissions,
            sign,
            trust,
            share,
            asked_at: now_ms,
        };
        self.requests.insert(request.id, request.clone());
        Ok(request)
    }

    pub fn get(&self, id: u64) -> Option<&Request> {
        self.requests.get(&id)
    }

    /// The user decided (or the prompt went away): the request is no longer pending.
    pub fn close(&mut self, id: u64) -> Option<Request> {
        self.requests.remove(&id)
    }

    /// Close every request that `matches`; returns their ids.
    pub fn close_where(&mut self, matches: impl Fn(&Request) -> bool) -> Vec<u64> {
        let ids: Vec<u64> = self.requests.values().filter(|r| matches(r)).map(|r| r.id).collect();
        for id in &ids {
            self.requests.remove(id);
        }
        ids
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}

/// Parse `disot_requestPermissions` params: EIP-2255's `[{"cas": {}}]` (one object may name
/// several, `[{"cas": {}, "share": {}}]`), or names, `["cas", "share"]`.
pub fn parse_requested(params: &serde_json::Value) -> Result<Vec<Permission>, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidParams,
            r#"expected [{"cas": {}}], [{"cas": {}, "share": {}}] or ["cas", "share"] (permissions: cas, sign, trust, share)"#,
        )
    };
    let serde_json::Value::Array(items) = params else { return Err(invalid()) };
    let mut out = Vec::new();
    for item in items.iter().take(8) {
        match item {
            serde_json::Value::Object(map) if (1..=8).contains(&map.len()) => {
                for key in map.keys() {
                    out.push(Permission::parse(key)?);
                }
            }
            serde_json::Value::String(name) => out.push(Permission::parse(name)?),
            _ => return Err(invalid()),
        }
    }
    if out.is_empty() || items.len() > 8 {
        return Err(invalid());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn origins_must_be_bare_http_origins() {
        for ok in ["https://example.com", "http://127.0.0.1:8080", "https://a.b.c:443"] {
            assert!(validate_origin(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "null",
            "file://x",
            "chrome-extension://abc",
            "https://a.com/path",
            "https://u@a.com",
            "https://",
            "ftp://a",
        ] {
            assert_eq!(validate_origin(bad).expect_err(bad).code, ErrorCode::Unauthorized, "{bad}");
        }
    }

    #[test]
    fn grants_are_per_origin_and_revocable() {
        let mut g = Grants::default();
        assert!(!g.allows("https://a.com", Permission::Cas));
        g.grant("https://a.com", &[Permission::Cas], 5);
        g.grant("https://a.com", &[Permission::Cas], 9);
        assert!(g.allows("https://a.com", Permission::Cas));
        assert!(!g.allows("https://b.com", Permission::Cas), "another origin gets nothing");
        assert_eq!(
            g.of("https://a.com"),
            vec![Grant { permission: Permission::Cas, granted_at: 5 }]
        );
        assert!(g.revoke("https://a.com", Some(Permission::Cas)));
        assert!(!g.allows("https://a.com", Permission::Cas));
        assert!(g.all().is_empty());
        g.grant("https://a.com", &[Permission::Cas], 10);
        assert!(g.revoke("https://a.com", None));
        assert!(!g.revoke("https://a.com", None));
        let round: Grants =
            serde_json::from_str(&serde_json::to_string(&g).expect("ser")).expect("de");
        assert_eq!(round, g);
    }

    #[test]
    fn secure_origins_are_https_or_this_computer() {
        for origin in [
            "https://example.com",
            "https://example.com:8443",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://[::1]:3000",
            "http://localhost:3000",
            "http://shop.localhost",
            "HTTP://LOCALHOST",
        ] {
            assert!(secure_origin(origin), "{origin}");
        }
        for origin in [
            "http://example.com",
            "http://10.0.0.1:8080",
            "http://128.0.0.1",
            "http://localhost.example.com",
            "http://[::2]",
            "ftp://localhost",
            "null",
            "",
        ] {
            assert!(!secure_origin(origin), "{origin}");
        }
    }

    #[test]
    fn blocked_sites_and_domains_ask_nothing() {
        assert_eq!(block_domain("https://a.example.com").as_deref(), Some("example.com"));
        assert_eq!(block_domain("https://x.a.example.com:8443").as_deref(), Some("example.com"));
        assert_eq!(
            block_domain("https://www.shop.example.co.uk").as_deref(),
            Some("example.co.uk")
        );
        // Anyone may have a site under these: each site is its own domain.
        assert_eq!(block_domain("https://alice.github.io").as_deref(), Some("alice.github.io"));
        assert_eq!(block_domain("https://a.alice.github.io").as_deref(), Some("alice.github.io"));
        assert_eq!(block_domain("https://example.com").as_deref(), Some("example.com"));
        assert_eq!(block_domain("http://a.localhost:3000").as_deref(), Some("localhost"));
        for none in [
            "http://localhost:80",
            "http://127.0.0.1:8080",
            "http://[::1]:80",
            "https://intranet",
            "https://github.io",
            "https://co.uk",
        ] {
            assert_eq!(block_domain(none), None, "{none}");
        }
        let mut g = Grants::default();
        g.grant("https://a.example.com", &[Permission::Cas], 1);
        assert_eq!(
            g.block("https://a.example.com", BlockScope::Site, 2).expect("site"),
            "https://a.example.com"
        );
        assert!(g.blocks("https://a.example.com"));
        assert!(!g.blocks("https://b.example.com"), "a site block is of that origin only");
        assert!(!g.blocks("http://a.example.com"), "nor another scheme");
        assert!(g.allows("https://a.example.com", Permission::Cas), "grants stay");
        assert_eq!(
            g.block("https://b.example.com:444", BlockScope::Domain, 3).expect("domain"),
            "example.com"
        );
        for blocked in [
            "https://b.example.com",
            "http://example.com",
            "https://x.y.example.com:1",
            "https://b.example.com.",
            "https://b.example.com..",
            "https://B.Example.COM",
        ] {
            assert!(g.blocks(blocked), "{blocked}");
        }
        // A final dot names the same host: a block made from such an origin covers it.
        assert_eq!(block_domain("https://a.shop.example.net.").as_deref(), Some("example.net"));
        assert_eq!(
            g.block("https://a.shop.example.net.", BlockScope::Domain, 3).expect("domain"),
            "example.net"
        );
        assert!(g.blocks("https://a.shop.example.net."));
        for free in
            ["https://example.org", "https://badexample.com", "https://example.com.evil.org"]
        {
            assert!(!g.blocks(free), "{free}");
        }
        assert_eq!(
            g.block("http://127.0.0.1:1", BlockScope::Domain, 4).expect_err("ip").code,
            ErrorCode::InvalidParams
        );
        let round: Grants =
            serde_json::from_str(&serde_json::to_string(&g).expect("ser")).expect("de");
        assert_eq!(round, g);
        assert!(g.unblock("example.com"));
        assert!(!g.unblock("example.com"));
        assert!(!g.blocks("https://b.example.com"));
        let old: Grants =
            serde_json::from_str(r#"{"by_origin":{}}"#).expect("grants from before blocks");
        assert!(old.blocked().is_empty());
        for i in g.blocked().len()..MAX_BLOCKED {
            g.block(&format!("https://{i}.com"), BlockScope::Site, 5).expect("room");
        }
        assert_eq!(
            g.block("https://more.com", BlockScope::Site, 6).expect_err("full").code,
            ErrorCode::LimitExceeded
        );
        assert!(g.block("https://a.example.com", BlockScope::Site, 7).is_ok(), "blocking again");
    }

    #[test]
    fn closing_the_requests_of_blocked_origins() {
        let mut p = Pending::default();
        let a = p.open("https://a.example.com", vec![Permission::Cas], 1).expect("a").id;
        let b = p.open("https://b.example.com", vec![Permission::Cas], 1).expect("b").id;
        let c = p.open("https://other.org", vec![Permission::Cas], 1).expect("c").id;
        let closed = p.close_where(|r| r.origin.ends_with(".example.com"));
        assert_eq!(closed, vec![a, b]);
        assert!(p.get(c).is_some() && p.len() == 1);
    }

    #[test]
    fn a_restarted_node_numbers_its_requests_above_those_before() {
        let now = 1_796_000_000_000; // 2026
        let mut before = Pending::started_at(now);
        let mut old = Vec::new();
        for i in 0..500 {
            let id = before.open(&format!("https://{i}.com"), vec![], now).expect("room").id;
            before.close(id);
            old.push(id);
        }
        let mut after = Pending::started_at(now + 1);
        let new = after.open("https://a.com", vec![], now + 1).expect("room");
        assert!(old.iter().all(|&id| id < new.id), "{new:?}");
        assert!(new.id < 1 << 53);
    }

    #[test]
    fn pending_requests_are_bounded_and_one_per_origin() {
        let mut p = Pending::default();
        let first = p.open("https://a.com", vec![Permission::Cas], 1).expect("first");
        assert_eq!(
            p.open("https://a.com", vec![Permission::Cas], 2).expect_err("dup").code,
            ErrorCode::ResourceUnavailable
        );
        for i in 1..MAX_PENDING {
            p.open(&format!("https://{i}.com"), vec![Permission::Cas], 3).expect("room");
        }
        assert_eq!(
            p.open("https://late.com", vec![Permission::Cas], 4).expect_err("full").code,
            ErrorCode::LimitExceeded
        );
        assert_eq!(p.close(first.id), Some(first.clone()));
        assert!(p.get(first.id).is_none());
        assert!(
            p.open("https://a.com", vec![Permission::Cas], 5).is_ok(),
            "asking again after a decision"
        );
    }

    #[test]
    fn requested_permissions_parse_in_both_shapes() {
        assert_eq!(
            parse_requested(&json!([{ "cas": {} }])).expect("eip-2255"),
            vec![Permission::Cas]
        );
        assert_eq!(parse_requested(&json!(["cas", "cas"])).expect("names"), vec![Permission::Cas]);
        assert_eq!(
            parse_requested(&json!([{ "share": {}, "cas": {} }])).expect("two in one"),
            vec![Permission::Cas, Permission::Share]
        );
        for bad in [
            json!([]),
            json!({}),
            json!("cas"),
            json!([1]),
            json!([{}]),
            json!([{ "cas": {}, "x": {} }]),
            json!(["root"]),
        ] {
            assert_eq!(
                parse_requested(&bad).expect_err("bad").code,
                ErrorCode::InvalidParams,
                "{bad}"
            );
        }
    }
}
