//! The browser node's transports: browser-to-browser WebRTC ([`crate::webrtc`]), circuit
//! relay, WebSocket and WebRTC-direct; the relay and WebSocket with Noise and Yamux.
//!
//! libp2p-websocket-websys 0.6.0 wakes a pending read or write only on `open` and `message`
//! events, never on `close` or `error`. A dial to a node that is down therefore hangs until the
//! 10 s upgrade timeout, and a connection whose node went away is noticed only on the next
//! write. [`Repoll`] works around it: while the socket is pending it polls again every
//! [`REPOLL`], so a closed socket is seen within that time. Remove it once upstream wakes on
//! close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use futures_timer::Delay;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, OptionalTransport};
use libp2p::core::upgrade;
use libp2p::identity::Keypair;
use libp2p::{noise, webrtc_websys, websocket_websys, yamux, PeerId, Transport};

/// How often a pending WebSocket is polled again.
const REPOLL: Duration = Duration::from_millis(250);

/// All transports, tried in this order: browser-to-browser WebRTC (`.../p2p-circuit/webrtc/...`
/// must not be taken for a plain relayed address), circuit relay, WebSocket, WebRTC-direct.
pub fn build(
    key: &Keypair,
    direct: crate::webrtc::Transport,
    relay: libp2p::relay::client::Transport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let direct = direct.map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
    let relay = relay
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    // WebSocket first: libp2p-webrtc-websys 0.5 asks for `window` on every dial, even of
    // addresses it will refuse, and panics where there is none.
    let ws = websocket_websys::Transport::default()
        .map(|conn, _| Repoll::new(conn))
        .upgrade(upgrade::Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let rtc = if web_sys::window().is_some() {
        OptionalTransport::some(
            webrtc_websys::Transport::new(webrtc_websys::Config::new(key))
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn))),
        )
    } else {
        OptionalTransport::none()
    };
    Ok(direct
        .or_transport(relay)
        .map(|either, _| either.into_inner())
        .or_transport(ws)
        .map(|either, _| either.into_inner())
        .or_transport(rtc)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// An I/O object that is polled again every [`REPOLL`] while it is pending.
pub struct Repoll<C> {
    inner: C,
    read_timer: Option<Delay>,
    write_timer: Option<Delay>,
}

impl<C> Repoll<C> {
    fn new(inner: C) -> Self {
        Repoll { inner, read_timer: None, write_timer: None }
    }
}

/// Pass `result` through; while it is pending, make sure the task is woken within [`REPOLL`]
/// even if the inner object never wakes it.
fn repoll<T>(result: Poll<T>, timer: &mut Option<Delay>, cx: &mut Context<'_>) -> Poll<T> {
    if result.is_pending() {
        let delay = timer.get_or_insert_with(|| Delay::new(REPOLL));
        if Pin::new(delay).poll(cx).is_ready() {
            *timer = None;
            cx.waker().wake_by_ref();
        }
    } else {
        *timer = None;
    }
    result
}

impl<C: AsyncRead + Unpin> AsyncRead for Repoll<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        repoll(Pin::new(&mut this.inner).poll_read(cx, buf), &mut this.read_timer, cx)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Repoll<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        repoll(Pin::new(&mut this.inner).poll_write(cx, buf), &mut this.write_timer, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Everything written is already queued in the browser's socket, which sends it by
        // itself (writes are held back above its buffer limit). libp2p-websocket-websys 0.6.0
        // instead waits for `bufferedAmount` to reach 0, which never happens once the socket is
        // closing with data queued: closing a connection (yamux flushes as it closes) then spun
        // in a busy loop that froze every extension page sharing the renderer.
        match Pin::new(&mut self.get_mut().inner).poll_flush(cx) {
            Poll::Pending => Poll::Ready(Ok(())),
            ready => ready,
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        repoll(Pin::new(&mut this.inner).poll_close(cx), &mut this.write_timer, cx)
    }
}
