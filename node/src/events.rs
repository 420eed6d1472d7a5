//! What the node reports on stdout: one line per event, as text for people or as JSON lines
//! (`--json`) for programs such as the end-to-end tests and the run script.

use std::io::Write;

use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    #[serde(rename_all = "camelCase")]
    Started {
        peer_id: String,
        did: String,
        data_dir: String,
    },
    Listening {
        addr: String,
    },
    Connected {
        peer: String,
        addr: String,
        connections: u32,
    },
    Disconnected {
        peer: String,
        remaining: u32,
        cause: Option<String>,
    },
    Identified {
        peer: String,
        agent: String,
    },
    /// A `cas-updates` announcement passed through (its content is opaque to the node).
    Announcement {
        via: String,
        from: Option<String>,
        bytes: usize,
    },
    Reservation {
        peer: String,
        renewed: bool,
    },
    ReservationEnded {
        peer: String,
    },
    Circuit {
        src: String,
        dst: String,
    },
    /// The documents kept for trusted peers, read from the data directory at start.
    DocumentsLoaded {
        count: usize,
        problems: Vec<String>,
    },
    /// A peer proved its DID in an identity exchange.
    Verified {
        peer: String,
        did: String,
    },
    /// A document sync session ended well.
    Synced {
        peer: String,
        did: String,
        initiator: bool,
        /// Documents that changed here.
        changed: u64,
        sent: u64,
        received: u64,
        /// Why what the peer sent was not taken, if anything was not (the first few reasons),
        /// and how many of its messages were not.
        refused: Vec<String>,
        refused_count: u64,
        /// Documents the node keeps now.
        documents: usize,
    },
    SyncFailed {
        peer: String,
        reason: String,
    },
    /// A sync message of this peer made the node's sync panic: no session with it until the
    /// node starts again.
    PeerCutOff {
        peer: String,
        reason: String,
    },
    Warning {
        message: String,
    },
    Stopped,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Started { peer_id, did, data_dir } => {
                write!(f, "peer id {peer_id}\ndid     {did}\ndata    {data_dir}")
            }
            Event::Listening { addr } => write!(f, "listening on {addr}"),
            Event::Connected { peer, addr, connections } => {
                write!(f, "connected {peer} via {addr} ({connections} connection(s))")
            }
            Event::Disconnected { peer, remaining, cause } => {
                write!(f, "disconnected {peer} ({remaining} left)")?;
                match cause {
                    Some(c) => write!(f, ": {c}"),
                    None => Ok(()),
                }
            }
            // (Quoted and escaped: a peer chooses its agent string, and could otherwise write
            // terminal control sequences or lines of its own making into the log.)
            Event::Identified { peer, agent } => write!(f, "identified {peer} as {agent:?}"),
            Event::Announcement { via, from, bytes } => write!(
                f,
                "cas-updates announcement of {bytes} bytes from {} via {via}",
                from.as_deref().unwrap_or("an unsigned sender")
            ),
            Event::Reservation { peer, renewed } => {
                write!(
                    f,
                    "relay reservation {} for {peer}",
                    if *renewed { "renewed" } else { "accepted" }
                )
            }
            Event::ReservationEnded { peer } => write!(f, "relay reservation of {peer} ended"),
            Event::Circuit { src, dst } => write!(f, "relayed circuit {src} -> {dst}"),
            Event::DocumentsLoaded { count, problems } => {
                write!(f, "{count} document(s) loaded")?;
                problems.iter().try_for_each(|p| write!(f, "\n  not read: {p}"))
            }
            Event::Verified { peer, did } => write!(f, "{peer} is {did}"),
            Event::Synced { peer, changed, sent, received, refused_count, documents, .. } => {
                write!(
                    f,
                    "synced with {peer}: {changed} document(s) changed, {sent} bytes sent, \
                 {received} received, {refused_count} refused; {documents} document(s) kept"
                )
            }
            Event::SyncFailed { peer, reason } => write!(f, "sync with {peer} failed: {reason}"),
            Event::PeerCutOff { peer, reason } => {
                write!(f, "no more sync with {peer} until the node restarts: {reason}")
            }
            Event::Warning { message } => write!(f, "warning: {message}"),
            Event::Stopped => write!(f, "stopped"),
        }
    }
}

/// Writes events to stdout, flushing each line so a reader sees it at once.
#[derive(Debug)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    pub fn emit(&self, event: &Event) {
        let line = if self.json {
            serde_json::to_string(event)
                .unwrap_or_else(|e| format!(r#"{{"event":"error","message":"{e}"}}"#))
        } else {
            event.to_string()
        };
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. a pipe whose reader went away) must not stop the node.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}
