//! The wire protocol between the coordinator, the workers and `legionc run`.
//!
//! Every message is a fixed 96-byte little-endian header followed by a payload:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic `LGN1` |
//! | 4 | kind ([`Kind`]) |
//! | 5..8 | zero |
//! | 8..40 | plan hash (sha256, raw) |
//! | 40..48 | frame id |
//! | 48..52 | group index |
//! | 52..56 | first row |
//! | 56..60 | end row (exclusive) |
//! | 60..64 | rank of the tensor (0: the payload is UTF-8 text) |
//! | 64..80 | shape, 4 × u32 (unused dims 0) |
//! | 80..88 | aux: compute time in µs in a band result; the sender's index in a piece |
//! | 88..96 | payload length in bytes |
//!
//! Tensors travel as little-endian f32.
//!
//! Every connection is authenticated with the fleet's key ([`Conn`]): the accepting side
//! first sends a random 16-byte nonce; every message is then followed by
//! HMAC-SHA256(key, nonce ‖ direction ‖ sequence number ‖ header ‖ payload), the sequence
//! counting each direction's messages from 0. A message without the key, altered, replayed
//! (on this connection or another) or out of order is refused and the connection closed,
//! before anything is answered; a payload larger than the connection's cap is refused before
//! it is read.

use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use tract_core::internal::*;

pub const MAGIC: &[u8; 4] = b"LGN1";
pub const HEADER_LEN: usize = 96;
/// Payloads larger than this are refused (a corrupt length must not allocate gigabytes); a
/// [`Conn`] has its own, smaller cap.
pub const MAX_PAYLOAD: u64 = 1 << 31;
/// Bytes of a message's authentication code.
pub const MAC_LEN: usize = 32;
/// Bytes of a connection's nonce.
pub const NONCE_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Ask a board who it is: answered with `HelloReply` whatever the plan.
    Hello = 1,
    /// Text payload: `name version`.
    HelloReply = 2,
    /// Compute output rows `rows` of `group` from the input band in the payload.
    Band = 3,
    BandResult = 4,
    /// Coordinator: run a whole frame.
    Infer = 5,
    /// The output tensor; followed by a `Report` message.
    InferResult = 6,
    /// Text payload: the frame's timing report (JSON).
    Report = 7,
    /// Text payload: what went wrong.
    Error = 8,
    /// Stop serving.
    Shutdown = 9,
    /// Mesh: the coordinator starts a frame on a worker; the payload is the worker's input
    /// band of the first group (none if it has no rows there). Answered with the worker's band
    /// of the last group (`BandResult`, empty without one) and a `Report` of its timings.
    MeshFrame = 10,
    /// Mesh: rows of a group's input from the board that computed them (aux: its index),
    /// one-way, on a connection of their own.
    Piece = 11,
    /// A board's slice of a split Dense layer of the tail: group is the split's index, rows
    /// the board's features, the payload the layer's input. Answered with `BandResult`.
    TailSlice = 12,
}

impl Kind {
    fn from_u8(v: u8) -> Result<Kind> {
        use Kind::*;
        Ok(match v {
            1 => Hello,
            2 => HelloReply,
            3 => Band,
            4 => BandResult,
            5 => Infer,
            6 => InferResult,
            7 => Report,
            8 => Error,
            9 => Shutdown,
            10 => MeshFrame,
            11 => Piece,
            12 => TailSlice,
            _ => bail!("unknown message kind {v}"),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub kind: Kind,
    pub plan: [u8; 32],
    pub frame: u64,
    pub group: u32,
    pub rows: (u32, u32),
    pub shape: Vec<usize>,
    pub aux: u64,
    pub len: u64,
}

/// A message: header plus payload.
#[derive(Clone, Debug)]
pub struct Message {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn text(kind: Kind, plan: [u8; 32], frame: u64, text: &str) -> Message {
        let payload = text.as_bytes().to_vec();
        Message {
            header: Header { kind, plan, frame, group: 0, rows: (0, 0), shape: vec![], aux: 0, len: payload.len() as u64 },
            payload,
        }
    }

    pub fn tensor(kind: Kind, plan: [u8; 32], frame: u64, group: u32, rows: (u32, u32), t: &Tensor) -> Result<Message> {
        ensure!(t.rank() <= 4, "tensors of rank {} do not travel", t.rank());
        let view = t.to_plain_array_view::<f32>()?;
        let mut payload = Vec::with_capacity(4 * view.len());
        for v in view.iter() {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        Ok(Message {
            header: Header { kind, plan, frame, group, rows, shape: t.shape().to_vec(), aux: 0, len: payload.len() as u64 },
            payload,
        })
    }

    pub fn as_text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn to_tensor(&self) -> Result<Tensor> {
        let n = self.header.shape.iter().try_fold(4usize, |a, &d| a.checked_mul(d));
        ensure!(!self.header.shape.is_empty() && n == Some(self.payload.len()), "payload of {} bytes for shape {:?}", self.payload.len(), self.header.shape);
        let data: Vec<f32> = self.payload.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        Tensor::from_shape(&self.header.shape, &data)
    }

    fn encode_header(&self) -> [u8; HEADER_LEN] {
        let h = &self.header;
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = h.kind as u8;
        b[8..40].copy_from_slice(&h.plan);
        b[40..48].copy_from_slice(&h.frame.to_le_bytes());
        b[48..52].copy_from_slice(&h.group.to_le_bytes());
        b[52..56].copy_from_slice(&h.rows.0.to_le_bytes());
        b[56..60].copy_from_slice(&h.rows.1.to_le_bytes());
        b[60..64].copy_from_slice(&(h.shape.len() as u32).to_le_bytes());
        for (i, d) in h.shape.iter().enumerate() {
            b[64 + 4 * i..68 + 4 * i].copy_from_slice(&(*d as u32).to_le_bytes());
        }
        b[80..88].copy_from_slice(&h.aux.to_le_bytes());
        b[88..96].copy_from_slice(&h.len.to_le_bytes());
        b
    }

    fn decode_header(b: &[u8; HEADER_LEN]) -> Result<Header> {
        ensure!(&b[0..4] == MAGIC, "not a legion peer (bad magic)");
        let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let rank = u32at(60) as usize;
        ensure!(rank <= 4, "rank {rank} in a message header");
        let len = u64at(88);
        ensure!(len <= MAX_PAYLOAD, "payload of {len} bytes announced");
        Ok(Header {
            kind: Kind::from_u8(b[4])?,
            plan: b[8..40].try_into().unwrap(),
            frame: u64at(40),
            group: u32at(48),
            rows: (u32at(52), u32at(56)),
            shape: (0..rank).map(|i| u32at(64 + 4 * i) as usize).collect(),
            aux: u64at(80),
            len,
        })
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// The message's bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.encode_header()[..], &self.payload].concat()
    }

    /// Read one message from `stream`, unauthenticated (what a [`Conn`] checks comes after it);
    /// `Ok(None)` at a clean end before a header.
    pub fn read_from(stream: &mut dyn Read) -> Result<Option<Message>> {
        let mut head = [0u8; HEADER_LEN];
        match stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e).context("reading a message header"),
        }
        let header = Message::decode_header(&head)?;
        let mut payload = vec![0u8; header.len as usize];
        stream.read_exact(&mut payload).context("reading a message payload")?;
        Ok(Some(Message { header, payload }))
    }
}

/// Raw sha256 of a hex plan hash.
pub fn plan_bytes(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let t = Tensor::from_shape(&[1, 2, 3, 1], &[1f32, 2., 3., 4., 5., 6.]).unwrap();
        let m = Message::tensor(Kind::Band, [7; 32], 42, 3, (5, 8), &t).unwrap();
        let h = Message::decode_header(&m.encode_header()).unwrap();
        assert_eq!(h, m.header);
        let back = Message { header: h, payload: m.payload.clone() }.to_tensor().unwrap();
        assert_eq!(back, t);
        let mut bad = m.encode_header();
        bad[0] = b'X';
        assert!(Message::decode_header(&bad).is_err());
    }
}

/// The fleet's secret: 32 random bytes, kept in `OUT/fleet.key` (mode 0600) as 64 hex digits.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// `n` bytes from the kernel's random source.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("reading /dev/urandom")?;
    Ok(b)
}

impl Key {
    /// A new random key.
    pub fn generate() -> Result<Key> {
        Ok(Key(random_bytes(32)?.try_into().expect("32 bytes")))
    }

    /// The key as its file holds it.
    pub fn to_hex(&self) -> String {
        crate::plan::hex(&self.0)
    }

    /// Parse a key file's text.
    pub fn parse(text: &str) -> Result<Key> {
        let t = text.trim();
        ensure!(t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit()), "a fleet key is 64 hex digits");
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).expect("hex digits");
        }
        Ok(Key(k))
    }

    /// Read a key file.
    pub fn read(path: &std::path::Path) -> Result<Key> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the fleet key {}", path.display()))?;
        Key::parse(&text).with_context(|| format!("the fleet key {}", path.display()))
    }

    fn mac(&self) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

/// One authenticated connection (see the module's documentation).
pub struct Conn {
    stream: TcpStream,
    key: Key,
    nonce: [u8; NONCE_LEN],
    /// 0 on the connecting side, 1 on the accepting side: the direction of what it sends.
    side: u8,
    sent: u64,
    received: u64,
    max_payload: u64,
}

impl Conn {
    /// The accepting side: sends the connection's nonce.
    pub fn accept(mut stream: TcpStream, key: Key, max_payload: u64) -> Result<Conn> {
        let nonce: [u8; NONCE_LEN] = random_bytes(NONCE_LEN)?.try_into().expect("16 bytes");
        stream.write_all(&nonce).context("sending the connection's nonce")?;
        Ok(Conn { stream, key, nonce, side: 1, sent: 0, received: 0, max_payload })
    }

    /// The connecting side: reads the nonce (within the stream's read deadline).
    pub fn connect(mut stream: TcpStream, key: Key, max_payload: u64) -> Result<Conn> {
        let mut nonce = [0u8; NONCE_LEN];
        stream.read_exact(&mut nonce).context("reading the connection's nonce")?;
        Ok(Conn { stream, key, nonce, side: 0, sent: 0, received: 0, max_payload })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn code(&self, side: u8, seq: u64, head: &[u8], payload: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut m = self.key.mac();
        m.update(&self.nonce);
        m.update(&[side]);
        m.update(&seq.to_le_bytes());
        m.update(head);
        m.update(payload);
        m
    }

    /// Send `msg` with its authentication code.
    pub fn send(&mut self, msg: &Message) -> Result<()> {
        use hmac::Mac;
        let head = msg.encode_header();
        let tag = self.code(self.side, self.sent, &head, &msg.payload).finalize().into_bytes();
        self.sent += 1;
        self.stream.write_all(&head)?;
        self.stream.write_all(&msg.payload)?;
        self.stream.write_all(&tag)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Receive a message and check it; `Ok(None)` when the peer closed the connection cleanly
    /// between messages. A message that fails its check is an error (the caller closes).
    pub fn recv(&mut self) -> Result<Option<Message>> {
        use hmac::Mac;
        let mut head = [0u8; HEADER_LEN];
        match self.stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e).context("reading a message header"),
        }
        let header = Message::decode_header(&head)?;
        ensure!(header.len <= self.max_payload, "a payload of {} bytes announced, more than the {} this connection takes", header.len, self.max_payload);
        let mut payload = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut payload).context("reading a message payload")?;
        let mut tag = [0u8; MAC_LEN];
        self.stream.read_exact(&mut tag).context("reading a message's authentication code")?;
        self.code(1 - self.side, self.received, &head, &payload).verify_slice(&tag).map_err(|_| anyhow::anyhow!("a message failed its authentication (no or another fleet key, altered, replayed or out of order)"))?;
        self.received += 1;
        Ok(Some(Message { header, payload }))
    }
}
