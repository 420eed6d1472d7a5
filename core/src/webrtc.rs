//! libp2p WebRTC between browsers (`/webrtc`, the spec's "private to private"), the parts that
//! need no browser: the signaling messages exchanged over a relayed stream, and the framing of
//! each libp2p stream on its data channel, with the close handshake (FIN / FIN_ACK,
//! STOP_SENDING, RESET) as a sans-IO state machine.
//!
//! Why our own framing: the `libp2p-webrtc-utils` 0.5 codec stops at RESET and treats the
//! FIN_ACK that js-libp2p sends as invalid data, so a stream closed by a js peer fails and a
//! stream we close waits for the peer's timeout.

use std::collections::VecDeque;

/// Protocol of the signaling stream, opened by the dialer over the relayed connection.
pub const SIGNALING_PROTOCOL: &str = "/webrtc-signaling/0.0.1";
/// Largest framed message on a data channel, length prefix included (the spec's limit).
pub const MAX_FRAME: usize = 16 * 1024;
/// Largest payload in one frame: the limit less the prefix and the protobuf field overhead.
pub const MAX_PAYLOAD: usize = MAX_FRAME - 16;
/// Largest signaling message accepted (an SDP with many candidates is a few KiB).
pub const MAX_SIGNAL: usize = 64 * 1024;
/// Largest data-channel message taken from a peer (senders use at most [`MAX_FRAME`]; Chromium
/// refuses to send more than 256 KiB in one, Firefox would take up to a gigabyte).
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Bytes received and not yet read that one stream may hold; more is the peer's fault.
pub const MAX_READ_BUFFER: usize = 1024 * 1024;

pub mod pb {
    /// Signaling: `Message { optional Type type = 1; optional string data = 2; }`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Signal {
        /// 0 = SDP_OFFER, 1 = SDP_ANSWER, 2 = ICE_CANDIDATE.
        #[prost(int32, optional, tag = "1")]
        pub r#type: Option<i32>,
        #[prost(string, optional, tag = "2")]
        pub data: Option<String>,
    }

    /// A data-channel frame: `Message { optional Flag flag = 1; optional bytes message = 2; }`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Frame {
        /// 0 = FIN, 1 = STOP_SENDING, 2 = RESET, 3 = FIN_ACK.
        #[prost(int32, optional, tag = "1")]
        pub flag: Option<i32>,
        #[prost(bytes = "vec", optional, tag = "2")]
        pub message: Option<Vec<u8>>,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("malformed webrtc message: {0}")]
    Malformed(String),
    #[error("webrtc message of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("the stream was reset by the peer")]
    Reset,
    #[error("the stream is closed for writing")]
    WriteClosed,
    #[error("the peer sent more than {MAX_READ_BUFFER} unread bytes")]
    Overloaded,
}

fn malformed(e: impl std::fmt::Display) -> Error {
    Error::Malformed(e.to_string())
}

/// A signaling message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Offer(String),
    Answer(String),
    /// `RTCIceCandidateInit` as JSON (what js-libp2p sends); `None` is the end of candidates,
    /// sent as JSON `null`.
    Candidate(Option<String>),
}

impl Signal {
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message as _;
        let (t, data) = match self {
            Signal::Offer(sdp) => (0, sdp.clone()),
            Signal::Answer(sdp) => (1, sdp.clone()),
            Signal::Candidate(c) => (2, c.clone().unwrap_or_else(|| "null".into())),
        };
        pb::Signal { r#type: Some(t), data: Some(data) }.encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Signal, Error> {
        use prost::Message as _;
        if bytes.len() > MAX_SIGNAL {
            return Err(Error::TooLarge(bytes.len()));
        }
        let m = pb::Signal::decode(bytes).map_err(malformed)?;
        let data = m.data.unwrap_or_default();
        match m.r#type {
            Some(0) => Ok(Signal::Offer(data)),
            Some(1) => Ok(Signal::Answer(data)),
            Some(2) => {
                let trimmed = data.trim();
                if trimmed.is_empty() || trimmed == "null" {
                    Ok(Signal::Candidate(None))
                } else {
                    Ok(Signal::Candidate(Some(data)))
                }
            }
            other => Err(malformed(format!("unknown signaling message type {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Fin = 0,
    StopSending = 1,
    Reset = 2,
    FinAck = 3,
}

impl Flag {
    fn from_i32(n: i32) -> Option<Flag> {
        match n {
            0 => Some(Flag::Fin),
            1 => Some(Flag::StopSending),
            2 => Some(Flag::Reset),
            3 => Some(Flag::FinAck),
            _ => None,
        }
    }
}

/// Encode one frame with its length prefix.
pub fn encode_frame(flag: Option<Flag>, payload: Option<&[u8]>) -> Vec<u8> {
    use prost::Message as _;
    let body = pb::Frame { flag: flag.map(|f| f as i32), message: payload.map(<[u8]>::to_vec) }
        .encode_to_vec();
    let mut buf = unsigned_varint::encode::usize_buffer();
    let prefix = unsigned_varint::encode::usize(body.len(), &mut buf);
    let mut out = Vec::with_capacity(prefix.len() + body.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&body);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadHalf {
    Open,
    /// The peer sent FIN: everything has been received.
    Finished,
    /// We sent STOP_SENDING: data that still arrives is dropped.
    Stopped,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteHalf {
    Open,
    /// We sent FIN and wait for FIN_ACK.
    FinSent,
    /// The peer acknowledged our FIN (or asked us to stop sending).
    Closed,
    Reset,
}

/// The state of one libp2p stream on a data channel. Bytes that arrive go in through
/// [`StreamState::on_bytes`]; the data read comes out of [`StreamState::read`]; what the state
/// machine needs to send (FIN_ACK) comes out of [`StreamState::poll_outgoing`].
#[derive(Debug)]
pub struct StreamState {
    /// Bytes received that do not yet make a whole frame.
    partial: Vec<u8>,
    /// The bytes received broke the framing (reported once; what follows is dropped).
    failed: bool,
    /// Payload received and not yet read.
    readable: VecDeque<u8>,
    read: ReadHalf,
    write: WriteHalf,
    outgoing: VecDeque<Vec<u8>>,
}

impl Default for StreamState {
    fn default() -> Self {
        StreamState {
            partial: Vec::new(),
            failed: false,
            readable: VecDeque::new(),
            read: ReadHalf::Open,
            write: WriteHalf::Open,
            outgoing: VecDeque::new(),
        }
    }
}

impl StreamState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes that arrived on the data channel (frames may span several channel messages, and
    /// one message may hold several frames). After the first error (which is returned) the
    /// stream's framing is lost: whatever comes later is dropped, not kept.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.failed {
            return Ok(());
        }
        let taken = self.take_bytes(bytes);
        if taken.is_err() {
            self.failed = true;
            self.partial = Vec::new();
        }
        taken
    }

    fn take_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.partial.is_empty() {
            // The common case: a message that starts at a frame's start, read where it lies.
            let used = self.take_frames(bytes)?;
            self.partial.extend_from_slice(&bytes[used..]);
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(bytes);
            let used = self.take_frames(&joined)?;
            joined.drain(..used);
            self.partial = joined;
        }
        Ok(())
    }

    /// Take the whole frames at the start of `bytes`; returns how many bytes they filled. One
    /// pass: a message of many tiny frames (an empty frame is one byte) costs its length, not
    /// its length squared.
    fn take_frames(&mut self, bytes: &[u8]) -> Result<usize, Error> {
        let mut used = 0;
        loop {
            let (len, rest) = match unsigned_varint::decode::usize(&bytes[used..]) {
                Ok(v) => v,
                Err(unsigned_varint::decode::Error::Insufficient) => return Ok(used),
                Err(e) => return Err(malformed(e)),
            };
            if len > MAX_FRAME {
                return Err(Error::TooLarge(len));
            }
            if rest.len() < len {
                return Ok(used);
            }
            self.on_frame(&rest[..len])?;
            used = bytes.len() - rest.len() + len;
        }
    }

    fn on_frame(&mut self, body: &[u8]) -> Result<(), Error> {
        use prost::Message as _;
        let frame = pb::Frame::decode(body).map_err(malformed)?;
        if let Some(data) = frame.message.filter(|d| !d.is_empty()) {
            match self.read {
                ReadHalf::Open => {
                    if self.readable.len() + data.len() > MAX_READ_BUFFER {
                        return Err(Error::Overloaded);
                    }
                    self.readable.extend(data);
                }
                // Data after FIN or after we asked to stop, or on a reset stream: dropped.
                ReadHalf::Finished | ReadHalf::Stopped | ReadHalf::Reset => {}
            }
        }
        match frame.flag.map(Flag::from_i32) {
            None => {}
            Some(None) => return Err(malformed("unknown flag")),
            Some(Some(Flag::Fin)) => {
                // Acknowledged once: a peer repeating FIN does not make us queue answers.
                if self.read != ReadHalf::Finished {
                    self.outgoing.push_back(encode_frame(Some(Flag::FinAck), None));
                }
                if self.read != ReadHalf::Reset {
                    self.read = ReadHalf::Finished;
                }
            }
            Some(Some(Flag::FinAck)) if self.write == WriteHalf::FinSent => {
                self.write = WriteHalf::Closed;
            }
            Some(Some(Flag::FinAck)) => {}
            Some(Some(Flag::StopSending)) => {
                if matches!(self.write, WriteHalf::Open | WriteHalf::FinSent) {
                    self.write = WriteHalf::Closed;
                }
            }
            Some(Some(Flag::Reset)) => {
                self.read = ReadHalf::Reset;
                self.write = WriteHalf::Reset;
                self.readable.clear();
            }
        }
        Ok(())
    }

    /// Take up to `buf.len()` received bytes. `Ok(0)` with a non-empty `buf` is the end of the
    /// stream; `Err(WouldBlock)`-like emptiness is `None`.
    pub fn read(&mut self, buf: &mut [u8]) -> Option<Result<usize, Error>> {
        if !self.readable.is_empty() {
            // Copied slice by slice (a byte at a time was the fetching browser's largest cost in
            // wasm).
            let n = buf.len().min(self.readable.len());
            let (front, back) = self.readable.as_slices();
            let from_front = n.min(front.len());
            buf[..from_front].copy_from_slice(&front[..from_front]);
            buf[from_front..n].copy_from_slice(&back[..n - from_front]);
            self.readable.drain(..n);
            return Some(Ok(n));
        }
        match self.read {
            ReadHalf::Open => None,
            ReadHalf::Finished | ReadHalf::Stopped => Some(Ok(0)),
            ReadHalf::Reset => Some(Err(Error::Reset)),
        }
    }

    /// Frame `data` for sending: frames of at most [`MAX_FRAME`] bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        match self.write {
            WriteHalf::Open => {}
            WriteHalf::Reset => return Err(Error::Reset),
            WriteHalf::FinSent | WriteHalf::Closed => return Err(Error::WriteClosed),
        }
        Ok(data.chunks(MAX_PAYLOAD).map(|c| encode_frame(None, Some(c))).collect())
    }

    /// Close our writing half: the FIN frame to send (none if already closing).
    pub fn close_write(&mut self) -> Option<Vec<u8>> {
        if self.write != WriteHalf::Open {
            return None;
        }
        self.write = WriteHalf::FinSent;
        Some(encode_frame(Some(Flag::Fin), None))
    }

    /// Whether we may still write (no FIN sent, no reset).
    pub fn write_open(&self) -> bool {
        self.write == WriteHalf::Open
    }

    /// Whether our FIN was acknowledged (or the stream ended another way): the channel may be
    /// closed once reading is over too.
    pub fn write_closed(&self) -> bool {
        matches!(self.write, WriteHalf::Closed | WriteHalf::Reset)
    }

    /// Stop reading: the STOP_SENDING frame to send (none if reading is already over).
    pub fn stop_reading(&mut self) -> Option<Vec<u8>> {
        if self.read != ReadHalf::Open {
            return None;
        }
        self.read = ReadHalf::Stopped;
        self.readable.clear();
        Some(encode_frame(Some(Flag::StopSending), None))
    }

    /// Abort both halves: the RESET frame to send (none if already reset).
    pub fn reset(&mut self) -> Option<Vec<u8>> {
        if self.read == ReadHalf::Reset && self.write == WriteHalf::Reset {
            return None;
        }
        self.read = ReadHalf::Reset;
        self.write = WriteHalf::Reset;
        self.readable.clear();
        Some(encode_frame(Some(Flag::Reset), None))
    }

    /// Whether both halves are over: the data channel can be closed.
    pub fn is_done(&self) -> bool {
        self.read != ReadHalf::Open && self.write_closed()
    }

    /// A frame the state machine wants sent (FIN_ACK).
    pub fn poll_outgoing(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(s: &mut StreamState) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        while let Some(Ok(n)) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn signals_round_trip_and_null_candidates_end_the_list() {
        for s in [
            Signal::Offer("v=0\r\n".into()),
            Signal::Answer("v=0\r\n".into()),
            Signal::Candidate(Some(
                r#"{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0"}"#
                    .into(),
            )),
            Signal::Candidate(None),
        ] {
            assert_eq!(Signal::decode(&s.encode()).expect("decode"), s);
        }
        use prost::Message as _;
        let empty = pb::Signal { r#type: Some(2), data: Some(String::new()) }.encode_to_vec();
        assert_eq!(Signal::decode(&empty).expect("decode"), Signal::Candidate(None));
        let unknown = pb::Signal { r#type: Some(7), data: None }.encode_to_vec();
        assert!(Signal::decode(&unknown).is_err());
        assert!(matches!(Signal::decode(&vec![0; MAX_SIGNAL + 1]), Err(Error::TooLarge(_))));
    }

    #[test]
    fn data_crosses_in_frames_under_the_limit_whatever_the_message_boundaries() {
        let mut tx = StreamState::new();
        let mut rx = StreamState::new();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let frames = tx.write(&data).expect("write");
        assert!(frames.iter().all(|f| f.len() <= MAX_FRAME));
        // The channel may cut and join frames anyhow (js sends prefix and body apart).
        let wire: Vec<u8> = frames.concat();
        for piece in wire.chunks(777) {
            rx.on_bytes(piece).expect("bytes");
        }
        assert_eq!(read_all(&mut rx), data);
        // Read while more arrives, less at a time than comes in: what waits wraps around the
        // buffer's end, and reads cross it.
        let mut rx = StreamState::new();
        let mut got = Vec::new();
        for piece in wire.chunks(777) {
            rx.on_bytes(piece).expect("bytes");
            let mut buf = [0u8; 613];
            if let Some(Ok(n)) = rx.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        got.extend(read_all(&mut rx));
        assert!(got == data, "the same bytes, in order");
    }

    #[test]
    fn fin_is_acknowledged_and_closes_the_writer() {
        let mut a = StreamState::new();
        let mut b = StreamState::new();
        let fin = a.close_write().expect("fin");
        assert!(a.close_write().is_none(), "one FIN only");
        assert!(matches!(a.write(b"late"), Err(Error::WriteClosed)));
        b.on_bytes(&fin).expect("fin");
        let mut buf = [0u8; 4];
        assert_eq!(b.read(&mut buf), Some(Ok(0)), "end of stream at B");
        let ack = b.poll_outgoing().expect("B answers FIN_ACK");
        assert!(!a.write_closed());
        a.on_bytes(&ack).expect("ack");
        assert!(a.write_closed());
        // B closes too: both done.
        a.on_bytes(&b.close_write().expect("fin")).expect("fin");
        b.on_bytes(&a.poll_outgoing().expect("ack")).expect("ack");
        assert!(a.is_done() && b.is_done());
    }

    #[test]
    fn a_repeated_fin_is_acknowledged_once() {
        let mut a = StreamState::new();
        let mut b = StreamState::new();
        let fin = a.close_write().expect("fin");
        b.on_bytes(&fin.repeat(1000)).expect("fins");
        assert!(b.poll_outgoing().is_some(), "FIN_ACK");
        assert!(b.poll_outgoing().is_none(), "and only one");
    }

    #[test]
    fn a_message_of_tiny_frames_is_read_in_one_pass() {
        // 4 MiB of empty frames (one byte each) in one message, and again cut across frame
        // starts: a pass that moved the rest after every frame would take hours here.
        let started = std::time::Instant::now();
        let mut rx = StreamState::new();
        let zeros = vec![0u8; 4 << 20];
        rx.on_bytes(&zeros).expect("empty frames");
        let mut rx = StreamState::new();
        let mut data = StreamState::new().write(b"after").expect("w").concat();
        data.splice(0..0, vec![0u8; 4 << 20]);
        let (first, second) = data.split_at(data.len() - 3);
        rx.on_bytes(first).expect("first part");
        rx.on_bytes(second).expect("second part");
        assert_eq!(read_all(&mut rx), b"after");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    }

    #[test]
    fn reset_and_stop_sending() {
        let mut a = StreamState::new();
        let mut b = StreamState::new();
        b.on_bytes(&a.write(b"hello").expect("w").concat()).expect("data");
        b.on_bytes(&a.reset().expect("reset")).expect("reset");
        let mut buf = [0u8; 8];
        assert_eq!(b.read(&mut buf), Some(Err(Error::Reset)), "unread data goes with a reset");
        assert!(matches!(b.write(b"x"), Err(Error::Reset)));

        let mut c = StreamState::new();
        let mut d = StreamState::new();
        c.on_bytes(&d.stop_reading().expect("stop")).expect("stop");
        assert!(matches!(c.write(b"x"), Err(Error::WriteClosed)));
        assert_eq!(d.read(&mut buf), Some(Ok(0)));
    }

    #[test]
    fn hostile_input_is_an_error() {
        let mut s = StreamState::new();
        let mut huge = Vec::new();
        let mut b = unsigned_varint::encode::usize_buffer();
        huge.extend_from_slice(unsigned_varint::encode::usize(MAX_FRAME + 1, &mut b));
        assert!(matches!(s.on_bytes(&huge), Err(Error::TooLarge(_))));
        // Once the framing is lost, what the peer sends after is dropped, not kept.
        for _ in 0..64 {
            assert!(s.on_bytes(&[0; 64 * 1024]).is_ok());
        }
        assert!(s.partial.is_empty(), "{} bytes kept after the error", s.partial.len());
        let mut s = StreamState::new();
        assert!(s.on_bytes(&encode_frame(None, None)[..1]).is_ok(), "half a frame waits");
        let mut s = StreamState::new();
        let bad_flag = {
            use prost::Message as _;
            let body = pb::Frame { flag: Some(9), message: None }.encode_to_vec();
            let mut out = vec![body.len() as u8];
            out.extend(body);
            out
        };
        assert!(s.on_bytes(&bad_flag).is_err());
        let mut s = StreamState::new();
        let mut t = StreamState::new();
        let flood = t.write(&vec![1u8; MAX_READ_BUFFER + MAX_PAYLOAD]).expect("w").concat();
        assert_eq!(s.on_bytes(&flood), Err(Error::Overloaded));
    }
}
