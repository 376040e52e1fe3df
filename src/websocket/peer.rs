//! A minimal WebSocket endpoint: whole frames in and out over any byte stream.
//!
//! The simulators and the load generator are WebSocket peers themselves (the
//! proxy is not: it only taps). Frames are small there, so a peer reads each
//! one whole, up to a size limit.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{self, Opcode};

/// Whether this end masks what it sends (clients must, servers must not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// One whole frame, payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub opcode: Opcode,
    pub fin: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == Opcode::Close && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Frames larger than this are refused by a peer (the simulators only echo).
pub const MAX_FRAME: u64 = 16 << 20;

pub struct Peer<S> {
    stream: S,
    buf: BytesMut,
    role: Role,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    /// Wraps a stream whose handshake is done; `already_read` holds bytes that
    /// arrived with the handshake.
    pub fn new(stream: S, role: Role, already_read: &[u8]) -> Self {
        Peer {
            stream,
            buf: BytesMut::from(already_read),
            role,
        }
    }

    /// Reads the next frame; `None` when the stream ended between frames.
    /// Safe to cancel: partial frames stay buffered for the next call.
    pub async fn read(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some((header, used)) = frame::parse_header(&self.buf).map_err(|e| invalid(e.to_string()))? {
                if header.payload_len > MAX_FRAME {
                    return Err(invalid(format!("frame of {} bytes is too large", header.payload_len)));
                }
                let total = used + header.payload_len as usize;
                if self.buf.len() >= total {
                    let mut payload = self.buf[used..total].to_vec();
                    if let Some(key) = header.mask {
                        frame::apply_mask(&mut payload, key, 0);
                    }
                    self.buf.advance(total);
                    return Ok(Some(Frame {
                        opcode: header.opcode,
                        fin: header.fin,
                        payload,
                    }));
                }
                self.buf.reserve(total - self.buf.len());
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a frame",
                ));
            }
        }
    }

    pub async fn send(&mut self, opcode: Opcode, fin: bool, payload: &[u8]) -> io::Result<()> {
        let mask = (self.role == Role::Client).then(super::random_bytes::<4>);
        let bytes = frame::encode(opcode, fin, payload, mask);
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await
    }

    pub async fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.send(Opcode::Close, true, &frame::close_payload(code, reason))
            .await
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

/// Performs the client side of the opening handshake on `stream` and returns
/// the peer. `host` is sent as the Host header; `extra` adds headers.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> io::Result<Peer<S>> {
    let key = super::new_key();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let head_end = loop {
        if let Some(pos) = find_head_end(&buf) {
            break pos;
        }
        if buf.len() > 16 * 1024 {
            return Err(invalid("handshake response head is larger than 16 KiB"));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "101" {
        return Err(invalid(format!(
            "handshake answered with '{status_line}' instead of 101"
        )));
    }
    let expected = super::accept_key(key.as_bytes());
    let accepted = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
        })
    });
    if !accepted {
        return Err(invalid(
            "handshake response has a wrong or missing Sec-WebSocket-Accept",
        ));
    }
    Ok(Peer::new(stream, Role::Client, &buf[head_end..]))
}

/// Where an HTTP head ends: after its empty line, whether lines end in
/// CRLF or (as some clients send them) a bare LF.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = buf[from..].iter().position(|&b| b == b'\n') {
        let end = from + pos + 1;
        match buf.get(end..) {
            Some([b'\n', ..]) => return Some(end + 1),
            Some([b'\r', b'\n', ..]) => return Some(end + 2),
            _ => from = end,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_after_an_empty_line_with_crlf_or_bare_lf() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: a\n\nbody"), Some(24));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n"), None);
        assert_eq!(find_head_end(b""), None);
    }

    #[tokio::test]
    async fn client_and_server_exchange_frames() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut client = Peer::new(a, Role::Client, &[]);
        let mut server = Peer::new(b, Role::Server, &[]);
        client.send(Opcode::Text, true, b"hello").await.unwrap();
        let got = server.read().await.unwrap().unwrap();
        assert_eq!((got.opcode, got.payload.as_slice()), (Opcode::Text, &b"hello"[..]));
        server.send_close(1001, "bye").await.unwrap();
        assert_eq!(client.read().await.unwrap().unwrap().close_code(), Some(1001));
        drop(server);
        assert_eq!(client.read().await.unwrap(), None);
    }
}
