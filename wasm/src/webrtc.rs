//! Browser-to-browser WebRTC (`/webrtc`, libp2p's "private to private") as a libp2p
//! transport: the dialer opens `/webrtc-signaling/0.0.1` over the relayed connection it already
//! has to the peer, the two exchange SDP offer/answer and ICE candidates, and the resulting
//! `RTCPeerConnection` is the connection; every libp2p stream is a data channel framed as the
//! spec says (`disot_core::webrtc`). There is no Noise on top: the SDP (with the DTLS
//! fingerprints) travelled over the authenticated relayed connection, and the browser's DTLS
//! checks them. The remote peer id is the relayed connection's.
//!
//! Addresses: a peer is dialled at `<relay>/p2p-circuit/webrtc/p2p/<peer>`; inbound connections
//! come from the signaling streams other peers open to us, and are reported on the listener
//! registered for `/webrtc`.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use disot_core::bitswap::{read_frame_max, write_frame};
use disot_core::inbound::InboundLimit;
use disot_core::webrtc::{Signal, StreamState, MAX_MESSAGE, MAX_SIGNAL, SIGNALING_PROTOCOL};
use futures::channel::mpsc;
use futures::future::{BoxFuture, Ready};
use futures::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, FutureExt as _, StreamExt as _,
};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use send_wrapper::SendWrapper;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcDataChannel, RtcDataChannelEvent, RtcDataChannelState, RtcDataChannelType,
    RtcPeerConnection, RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcSdpType,
    RtcSessionDescriptionInit,
};

pub(crate) const SIGNALING: StreamProtocol = StreamProtocol::new(SIGNALING_PROTOCOL);
/// Longest time from the signaling stream to a connected peer connection (under the swarm's
/// 10 s dial timeout, so that the error says why).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the dialer waits for its offer's data channel to open once ICE is connected.
const INIT_OPEN_WAIT: Duration = Duration::from_secs(2);
/// A data channel with more than this queued waits before taking more.
const HIGH_WATER: u32 = 1024 * 1024;
const LOW_WATER: u32 = 256 * 1024;
/// Largest write taken at once (framed into 16 KiB messages).
const MAX_WRITE: usize = 256 * 1024;
/// Connections negotiated but not yet taken by the swarm.
const INBOUND_QUEUE: usize = 8;
/// Inbound negotiations at once from one peer (it dials us once per attempt), and in all.
const SIGNALING_PER_PEER: usize = 2;
const SIGNALING_TOTAL: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("webrtc: {0}")]
    Js(String),
    #[error("webrtc signaling: {0}")]
    Signaling(String),
    #[error("webrtc connection closed")]
    Closed,
}

fn js(e: JsValue) -> Error {
    Error::Js(e.as_string().unwrap_or_else(|| format!("{e:?}")))
}

fn signaling(e: impl std::fmt::Display) -> Error {
    Error::Signaling(e.to_string())
}

thread_local! {
    /// The STUN/TURN servers new peer connections use (from the settings).
    static ICE_SERVERS: RefCell<Vec<disot_core::api::IceServer>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn set_ice_servers(servers: &[disot_core::api::IceServer]) {
    ICE_SERVERS.with(|s| *s.borrow_mut() = servers.to_vec());
}

fn configuration() -> web_sys::RtcConfiguration {
    let config = web_sys::RtcConfiguration::new();
    let servers = js_sys::Array::new();
    ICE_SERVERS.with(|s| {
        for server in s.borrow().iter() {
            let ice = web_sys::RtcIceServer::new();
            ice.set_urls(&JsValue::from_str(&server.urls));
            if let Some(u) = &server.username {
                ice.set_username(u);
            }
            if let Some(c) = &server.credential {
                ice.set_credential(c);
            }
            servers.push(&ice);
        }
    });
    config.set_ice_servers(&servers);
    config
}

/// An `RTCPeerConnection` whose inbound data channels become streams the moment they arrive:
/// a peer writes on a new channel at once, and a message that comes before its handler is set
/// is lost. They wait in a queue until the connection is handed over and the swarm takes them.
struct Peer {
    pc: RtcPeerConnection,
    channels: mpsc::Receiver<Stream>,
    _on_channel: Closure<dyn FnMut(RtcDataChannelEvent)>,
}

impl Peer {
    fn new() -> Result<Peer, Error> {
        let pc = RtcPeerConnection::new_with_configuration(&configuration()).map_err(js)?;
        let (mut tx, channels) = mpsc::channel(32);
        let on_channel =
            Closure::<dyn FnMut(RtcDataChannelEvent)>::new(move |ev: RtcDataChannelEvent| {
                let dc = ev.channel();
                if dc.label() == "init" {
                    // The dialer's channel that only made the offer possible.
                    dc.close();
                    return;
                }
                if let Err(e) = tx.try_send(Stream::new(dc)) {
                    tracing::warn!("webrtc: peer opens data channels faster than they are taken");
                    drop(e.into_inner()); // resets the stream
                }
            });
        pc.set_ondatachannel(Some(on_channel.as_ref().unchecked_ref()));
        Ok(Peer { pc, channels, _on_channel: on_channel })
    }
}

/// A peer connection that failed to negotiate, or whose connection ended, is closed and its
/// handlers are cleared (an event on a dropped handler would be an error thrown in the page).
impl Drop for Peer {
    fn drop(&mut self) {
        self.pc.set_ondatachannel(None);
        self.pc.set_onicecandidate(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.close();
    }
}

/// A handler that says "something happened" on a channel, for waiting on events in a
/// `select!` instead of polling.
fn notifier() -> (Closure<dyn FnMut(web_sys::Event)>, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded();
    let handler = Closure::<dyn FnMut(web_sys::Event)>::new(move |_: web_sys::Event| {
        let _ = tx.unbounded_send(());
    });
    (handler, rx)
}

async fn send_signal<W: AsyncWrite + Unpin>(w: &mut W, s: Signal) -> Result<(), Error> {
    write_frame(w, &s.encode()).await.map_err(signaling)
}

fn description(kind: RtcSdpType, sdp: &str) -> RtcSessionDescriptionInit {
    let d = RtcSessionDescriptionInit::new(kind);
    d.set_sdp(sdp);
    d
}

fn sdp_of(desc: &JsValue) -> Result<String, Error> {
    js_sys::Reflect::get(desc, &"sdp".into())
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| Error::Js("no sdp in session description".into()))
}

/// Take the peer's next signal, which must be the session description `kind`, and apply it.
async fn set_remote(
    pc: &RtcPeerConnection,
    incoming: &mut mpsc::Receiver<Result<Signal, Error>>,
    kind: RtcSdpType,
) -> Result<(), Error> {
    let sdp = match (incoming.next().await, kind) {
        (Some(Ok(Signal::Offer(sdp))), RtcSdpType::Offer)
        | (Some(Ok(Signal::Answer(sdp))), RtcSdpType::Answer) => sdp,
        (Some(Ok(other)), _) => return Err(signaling(format!("expected {kind:?}, got {other:?}"))),
        (Some(Err(e)), _) => return Err(e),
        (None, _) => return Err(signaling(format!("the stream ended before the {kind:?}"))),
    };
    JsFuture::from(pc.set_remote_description(&description(kind, &sdp))).await.map_err(js)?;
    Ok(())
}

/// When each step of a negotiation was done, in ms since it started (for the log).
#[derive(Debug, Default)]
struct Steps {
    described: f64,
    connected: f64,
    ready: f64,
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "descriptions traded {:.0} ms, ICE connected {:.0} ms, ready {:.0} ms",
            self.described, self.connected, self.ready
        )
    }
}

/// Run the signaling on `stream` until `peer` is connected (both roles). The dialer makes its
/// offer while `stream` is still being opened, so that ICE starts gathering candidates then.
async fn negotiate(
    peer: &Peer,
    stream: impl std::future::Future<Output = Result<libp2p::Stream, Error>>,
    initiator: bool,
) -> Result<Steps, Error> {
    let started = crate::node::now_ms();
    let since = || crate::node::now_ms() - started;
    let mut steps = Steps::default();
    let pc = &peer.pc;
    // Candidates gathered before the stream is open wait here until the descriptions are
    // traded.
    let (cand_tx, mut candidates) = mpsc::unbounded::<String>();
    let on_candidate = Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(
        move |ev: RtcPeerConnectionIceEvent| {
            let json = ev
                .candidate()
                .filter(|c| !c.candidate().is_empty())
                .and_then(|c| js_sys::JSON::stringify(&c).ok())
                .and_then(|s| s.as_string());
            if let Some(json) = json {
                let _ = cand_tx.unbounded_send(json);
            }
        },
    );
    pc.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));

    // The SDP needs a data channel to offer; js-libp2p's listener closes this one.
    let init = initiator.then(|| pc.create_data_channel("init"));
    let (stream, offer) = if initiator {
        let offer = async {
            let offer = sdp_of(&JsFuture::from(pc.create_offer()).await.map_err(js)?)?;
            JsFuture::from(pc.set_local_description(&description(RtcSdpType::Offer, &offer)))
                .await
                .map_err(js)?;
            Ok::<_, Error>(Some(offer))
        };
        futures::join!(stream, offer)
    } else {
        (stream.await, Ok(None))
    };
    let (stream, offer) = (stream?, offer?);
    let (mut rd, mut wr) = stream.split();
    // Signals from the peer, read by their own task so that waiting never cuts a message.
    let (mut in_tx, mut incoming) = mpsc::channel::<Result<Signal, Error>>(16);
    let (reader, reading) = futures::FutureExt::remote_handle(async move {
        loop {
            let next = match read_frame_max(&mut rd, MAX_SIGNAL).await {
                Ok(Some(bytes)) => Signal::decode(&bytes).map_err(signaling),
                Ok(None) => break,
                // A stream cut off is a stream ended: the peer may close the relayed
                // connection as soon as its side of the direct one is up (see below).
                Err(e) => {
                    tracing::info!("webrtc: signaling stream ended: {e}");
                    break;
                }
            };
            let stop = next.is_err();
            if futures::SinkExt::send(&mut in_tx, next).await.is_err() || stop {
                break;
            }
        }
    });
    // A negotiation that fails stops reading (`reading` dropped), and with that the stream
    // goes (both halves dropped): else each failed attempt would leave a task and a stream
    // open on both sides, and keep the relayed connection from closing idle. One that
    // succeeds closes its side and reads on until the peer closes its own.
    wasm_bindgen_futures::spawn_local(reader);
    if let Some(offer) = offer {
        send_signal(&mut wr, Signal::Offer(offer)).await?;
        set_remote(pc, &mut incoming, RtcSdpType::Answer).await?;
    } else {
        set_remote(pc, &mut incoming, RtcSdpType::Offer).await?;
        let answer = sdp_of(&JsFuture::from(pc.create_answer()).await.map_err(js)?)?;
        send_signal(&mut wr, Signal::Answer(answer.clone())).await?;
        JsFuture::from(pc.set_local_description(&description(RtcSdpType::Answer, &answer)))
            .await
            .map_err(js)?;
    }

    steps.described = since();
    // Trade candidates until ICE connects, woken by each change of the connection's state.
    let (on_state, mut state_changes) = notifier();
    pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
    let mut deadline = futures_timer::Delay::new(CONNECT_TIMEOUT).fuse();
    let mut remote_open = true;
    let mut sending = true;
    loop {
        match pc.connection_state() {
            RtcPeerConnectionState::Connected => break,
            RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed => {
                return Err(Error::Js(
                    "ICE failed: no route between the peers (a TURN server may be needed)".into(),
                ));
            }
            _ => {}
        }
        futures::select! {
            // Once the descriptions are traded, ICE decides, not the stream: the peer, whose
            // side may connect first, closes the relayed connection for the direct one, and a
            // candidate that can no longer be sent is not needed.
            c = candidates.next() => if let Some(json) = c {
                if sending {
                    if let Err(e) = send_signal(&mut wr, Signal::Candidate(Some(json))).await {
                        tracing::info!("webrtc: signaling stream closed while ICE runs: {e:?}");
                        sending = false;
                    }
                }
            },
            s = incoming.next() => match s {
                Some(Ok(Signal::Candidate(Some(json)))) if remote_open => {
                    let init: web_sys::RtcIceCandidateInit =
                        js_sys::JSON::parse(&json).map_err(js)?.unchecked_into();
                    if let Err(e) = JsFuture::from(
                        pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)),
                    )
                    .await
                    {
                        tracing::info!("webrtc: remote candidate refused: {e:?}");
                    }
                }
                Some(Ok(Signal::Candidate(_))) => {}
                Some(Ok(other)) => return Err(signaling(format!("unexpected {other:?}"))),
                Some(Err(e)) => return Err(e),
                None => remote_open = false,
            },
            _ = state_changes.next() => {},
            () = deadline => {
                tracing::warn!("webrtc: ICE timed out; {}", ice_report(pc).await);
                return Err(Error::Js(
                    "ICE timed out: no route between the peers (behind NAT, a STUN or TURN server is needed)".into(),
                ));
            }
        }
    }
    steps.connected = since();
    pc.set_onicecandidate(None);
    pc.set_onconnectionstatechange(None);
    drop(on_state);
    if let Some(init) = init {
        // js-libp2p waits for this channel to open before it calls the dial done.
        let (on_open, mut opened) = notifier();
        init.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        init.set_onclose(Some(on_open.as_ref().unchecked_ref()));
        if init.ready_state() == RtcDataChannelState::Connecting {
            let mut give_up = futures_timer::Delay::new(INIT_OPEN_WAIT).fuse();
            futures::select! {
                _ = opened.next() => {},
                () = give_up => {},
            }
        }
        init.set_onopen(None);
        init.set_onclose(None);
        init.close();
    }
    steps.ready = since();
    let _ = wr.close().await;
    reading.forget();
    Ok(steps)
}

/// The candidate pairs ICE tried, for the log when it fails: `local type address -> remote type
/// address: state, requests sent / responses received`.
async fn ice_report(pc: &RtcPeerConnection) -> String {
    let Ok(report) = JsFuture::from(pc.get_stats()).await else {
        return "no stats".into();
    };
    let get =
        |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).unwrap_or(JsValue::UNDEFINED);
    let text = |o: &JsValue, k: &str| {
        let v = get(o, k);
        v.as_string().or_else(|| v.as_f64().map(|n| n.to_string())).unwrap_or_default()
    };
    let values = get(&report, "values")
        .dyn_into::<js_sys::Function>()
        .ok()
        .and_then(|f| f.call0(&report).ok());
    let mut all = Vec::new();
    if let Some(Ok(Some(iter))) = values.map(|v| js_sys::try_iter(&v)) {
        all.extend(iter.flatten());
    }
    let candidate = |id: String| {
        all.iter()
            .find(|s| text(s, "id") == id)
            .map(|c| {
                format!("{} {}:{}", text(c, "candidateType"), text(c, "address"), text(c, "port"))
            })
            .unwrap_or(id)
    };
    let pairs: Vec<String> = all
        .iter()
        .filter(|s| text(s, "type") == "candidate-pair")
        .map(|p| {
            format!(
                "{} -> {}: {} {}/{}",
                candidate(text(p, "localCandidateId")),
                candidate(text(p, "remoteCandidateId")),
                text(p, "state"),
                text(p, "requestsSent"),
                text(p, "responsesReceived")
            )
        })
        .collect();
    format!("ICE {:?}, candidate pairs: [{}]", pc.ice_connection_state(), pairs.join("; "))
}

/// The transport. Created with the stream control of the swarm's `libp2p_stream::Behaviour`
/// (for the signaling streams); [`Transport::accept`] must be started once.
pub struct Transport {
    control: libp2p_stream::Control,
    listener: Option<ListenerId>,
    incoming: mpsc::Receiver<(PeerId, Connection)>,
}

/// Where negotiated inbound connections go.
#[derive(Clone)]
pub struct Inbound(mpsc::Sender<(PeerId, Connection)>);

impl Transport {
    pub fn new(control: libp2p_stream::Control) -> (Transport, Inbound) {
        let (tx, incoming) = mpsc::channel(INBOUND_QUEUE);
        (Transport { control, listener: None, incoming }, Inbound(tx))
    }

    /// Answer the signaling streams peers open to us, for as long as the node runs: as many
    /// negotiations at once as [`SIGNALING_PER_PEER`] and [`SIGNALING_TOTAL`] allow (each makes
    /// an `RTCPeerConnection`; the other streams are reset).
    pub fn accept(mut control: libp2p_stream::Control, inbound: Inbound) -> Result<(), String> {
        let mut streams = control.accept(SIGNALING).map_err(|e| e.to_string())?;
        let limit = InboundLimit::new(SIGNALING_PER_PEER, SIGNALING_TOTAL);
        wasm_bindgen_futures::spawn_local(async move {
            while let Some((peer, stream)) = streams.next().await {
                let Ok(admitted) = limit.admit(&peer).inspect_err(|e| {
                    tracing::debug!("webrtc: signaling stream from {peer} refused: {e}");
                }) else {
                    continue;
                };
                let mut inbound = inbound.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let _admitted = admitted; // until this negotiation is over
                    let result = async {
                        let p = Peer::new()?;
                        let steps = negotiate(&p, async { Ok(stream) }, false).await?;
                        Ok::<_, Error>((p, steps))
                    }
                    .await;
                    match result {
                        Ok((p, steps)) => {
                            tracing::info!("webrtc: direct connection from {peer} ({steps})");
                            let _ =
                                futures::SinkExt::send(&mut inbound.0, (peer, Connection::new(p)))
                                    .await;
                        }
                        Err(e) => tracing::warn!("webrtc: inbound from {peer}: {e}"),
                    }
                });
            }
        });
        Ok(())
    }
}

/// The peer of a `<relay>/p2p-circuit/webrtc/p2p/<peer>` address.
fn webrtc_peer(addr: &Multiaddr) -> Option<PeerId> {
    let protocols: Vec<Protocol> = addr.iter().collect();
    let at = protocols.iter().position(|p| matches!(p, Protocol::WebRTC))?;
    if at == 0 || !matches!(protocols[at - 1], Protocol::P2pCircuit) {
        return None;
    }
    match protocols.get(at + 1..)? {
        [Protocol::P2p(peer)] => Some(*peer),
        _ => None,
    }
}

impl libp2p::Transport for Transport {
    type Output = (PeerId, Connection);
    type Error = Error;
    type ListenerUpgrade = Ready<Result<Self::Output, Self::Error>>;
    type Dial = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Error>> {
        if addr.iter().collect::<Vec<_>>() != [Protocol::WebRTC] {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.listener = Some(id);
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        if self.listener == Some(id) {
            self.listener = None;
            return true;
        }
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Error>> {
        let Some(peer) = webrtc_peer(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let mut control = self.control.clone();
        let dial = async move {
            let started = crate::node::now_ms();
            let opened = std::cell::Cell::new(0.0);
            let stream = async {
                let stream = control.open_stream(peer, SIGNALING).await.map_err(signaling);
                opened.set(crate::node::now_ms() - started);
                stream
            };
            let p = Peer::new()?;
            let steps = negotiate(&p, stream, true).await?;
            tracing::info!(
                "webrtc: direct connection to {peer} (signaling stream open {:.0} ms; {steps})",
                opened.get()
            );
            Ok((peer, Connection::new(p)))
        };
        // `SendWrapper` checks at run time that the future stays on the thread that made it,
        // which on wasm is the only thread.
        Ok(Box::pin(SendWrapper::new(dial)))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        while let Poll::Ready(Some((peer, conn))) = self.incoming.poll_next_unpin(cx) {
            let Some(listener_id) = self.listener else { continue };
            return Poll::Ready(TransportEvent::Incoming {
                listener_id,
                upgrade: futures::future::ready(Ok((peer, conn))),
                local_addr: Multiaddr::empty().with(Protocol::WebRTC),
                send_back_addr: Multiaddr::empty().with(Protocol::WebRTC).with(Protocol::P2p(peer)),
            });
        }
        Poll::Pending
    }
}

/// A direct connection: an `RTCPeerConnection`, one data channel per stream.
pub struct Connection {
    inner: SendWrapper<ConnectionInner>,
}

struct ConnectionInner {
    peer: Peer,
    state_waker: Rc<RefCell<Option<Waker>>>,
    _on_state: Closure<dyn FnMut(web_sys::Event)>,
}

impl Connection {
    fn new(peer: Peer) -> Connection {
        let state_waker: Rc<RefCell<Option<Waker>>> = Rc::default();
        let on_state = Closure::<dyn FnMut(web_sys::Event)>::new({
            let waker = state_waker.clone();
            move |_: web_sys::Event| {
                if let Some(w) = waker.borrow_mut().take() {
                    w.wake();
                }
            }
        });
        peer.pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        Connection {
            inner: SendWrapper::new(ConnectionInner { peer, state_waker, _on_state: on_state }),
        }
    }
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = Error;

    fn poll_inbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        match self.inner.peer.channels.poll_next_unpin(cx) {
            Poll::Ready(Some(stream)) => Poll::Ready(Ok(stream)),
            Poll::Ready(None) => Poll::Ready(Err(Error::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_outbound(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        Poll::Ready(Ok(Stream::new(self.inner.peer.pc.create_data_channel(""))))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.peer.pc.close();
        Poll::Ready(Ok(()))
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Error>> {
        // "disconnected" is transient (consent checks missed under load); it recovers or
        // turns into "failed".
        match self.inner.peer.pc.connection_state() {
            RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed => {
                Poll::Ready(Err(Error::Closed))
            }
            _ => {
                *self.inner.state_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// One libp2p stream on one data channel.
pub struct Stream {
    inner: SendWrapper<StreamInner>,
}

struct StreamInner {
    dc: RtcDataChannel,
    shared: Rc<RefCell<Shared>>,
    handlers: Option<Handlers>,
}

/// The data channel's event handlers; they live as long as the channel is in use.
#[allow(dead_code)] // held, never read
struct Handlers {
    on_open: Closure<dyn FnMut(web_sys::Event)>,
    on_message: Closure<dyn FnMut(MessageEvent)>,
    on_close: Closure<dyn FnMut(web_sys::Event)>,
    on_low: Closure<dyn FnMut(web_sys::Event)>,
}

/// How long a stream dropped after a clean close waits for the peer to close its side.
const LINGER: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Shared {
    state: StreamState,
    error: Option<String>,
    closed: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl Shared {
    fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

/// The bytes of a message a peer sent on a data channel: only a binary message of at most
/// [`MAX_MESSAGE`] bytes. (Read as bytes without looking, a text message would be taken for a
/// length: `new Uint8Array("100000000")` is 100 MB of zeros.)
pub fn message_bytes(data: &JsValue) -> Result<Vec<u8>, String> {
    match data.dyn_ref::<js_sys::ArrayBuffer>() {
        Some(buf) if buf.byte_length() as usize <= MAX_MESSAGE => {
            Ok(js_sys::Uint8Array::new(buf).to_vec())
        }
        Some(buf) => Err(format!(
            "the peer sent a message of {} bytes (at most {MAX_MESSAGE})",
            buf.byte_length()
        )),
        None => Err("the peer sent a data-channel message that is not binary".to_owned()),
    }
}

fn send(dc: &RtcDataChannel, frame: &[u8]) -> std::io::Result<()> {
    dc.send_with_u8_array(frame)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, format!("{e:?}")))
}

impl Stream {
    fn new(dc: RtcDataChannel) -> Stream {
        dc.set_binary_type(RtcDataChannelType::Arraybuffer);
        dc.set_buffered_amount_low_threshold(LOW_WATER);
        let shared: Rc<RefCell<Shared>> = Rc::default();
        let waker = |shared: &Rc<RefCell<Shared>>| {
            let shared = shared.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_: web_sys::Event| {
                shared.borrow_mut().wake()
            })
        };
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new({
            let shared = shared.clone();
            let dc = dc.clone();
            move |ev: MessageEvent| {
                let mut s = shared.borrow_mut();
                let taken = message_bytes(&ev.data())
                    .and_then(|bytes| s.state.on_bytes(&bytes).map_err(|e| e.to_string()));
                if let Err(e) = taken {
                    s.error.get_or_insert(e);
                }
                while let Some(frame) = s.state.poll_outgoing() {
                    let _ = send(&dc, &frame);
                }
                s.wake();
            }
        });
        let on_close = Closure::<dyn FnMut(web_sys::Event)>::new({
            let shared = shared.clone();
            move |_: web_sys::Event| {
                let mut s = shared.borrow_mut();
                s.closed = true;
                s.wake();
            }
        });
        let on_open = waker(&shared);
        let on_low = waker(&shared);
        dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        dc.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        dc.set_onbufferedamountlow(Some(on_low.as_ref().unchecked_ref()));
        Stream {
            inner: SendWrapper::new(StreamInner {
                dc,
                shared,
                handlers: Some(Handlers { on_open, on_message, on_close, on_low }),
            }),
        }
    }
}

fn release(dc: &RtcDataChannel, handlers: Option<Handlers>) {
    dc.set_onopen(None);
    dc.set_onmessage(None);
    dc.set_onclose(None);
    dc.set_onbufferedamountlow(None);
    dc.close();
    drop(handlers);
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        let handlers = self.handlers.take();
        let (done, abandoned) = {
            let s = self.shared.borrow();
            (s.state.is_done() || s.closed, s.state.write_open())
        };
        if done {
            release(&self.dc, handlers);
        } else if abandoned {
            // Dropped mid-way: the peer must not wait for more.
            if let Some(reset) = self.shared.borrow_mut().state.reset() {
                let _ = send(&self.dc, &reset);
            }
            release(&self.dc, handlers);
        } else {
            // Closed cleanly on our side: let the peer finish reading and close its side (a
            // reset now could destroy data it has not read yet), then close the channel.
            let dc = self.dc.clone();
            let shared = self.shared.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let since = crate::node::now_ms();
                while crate::node::now_ms() - since < LINGER.as_millis() as f64 {
                    {
                        let s = shared.borrow();
                        if s.state.is_done() || s.closed {
                            break;
                        }
                    }
                    futures_timer::Delay::new(Duration::from_millis(50)).await;
                }
                release(&dc, handlers);
            });
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut s = self.inner.shared.borrow_mut();
        if let Some(e) = &s.error {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.clone(),
            )));
        }
        match s.state.read(buf) {
            Some(Ok(n)) => Poll::Ready(Ok(n)),
            Some(Err(e)) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                e.to_string(),
            ))),
            None if s.closed => Poll::Ready(Ok(0)),
            None => {
                s.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let dc = &self.inner.dc;
        let mut s = self.inner.shared.borrow_mut();
        if s.closed || dc.ready_state() == RtcDataChannelState::Closed {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        if dc.ready_state() == RtcDataChannelState::Connecting || dc.buffered_amount() > HIGH_WATER
        {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(MAX_WRITE);
        let frames = s
            .state
            .write(&buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e.to_string()))?;
        for frame in frames {
            send(dc, &frame)?;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let dc = &self.inner.dc;
        let mut s = self.inner.shared.borrow_mut();
        if dc.ready_state() == RtcDataChannelState::Connecting {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if let Some(fin) = s.state.close_write() {
            send(dc, &fin)?;
        }
        if s.state.write_closed() || s.closed {
            return Poll::Ready(Ok(()));
        }
        s.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
