//! HTTP/2 frames (RFC 9113, sections 4 and 6): reading them off a buffer
//! with every rule a single frame can break checked here (sizes, stream 0
//! or not, padding, setting values), and writing the ones a server sends.
//! Rules that span frames (stream states, CONTINUATION order, flow
//! control) belong to the connection. Every frame is the peer's: a bad one
//! is a connection or a stream error with the code the RFC names, never a
//! panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a client sends first (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's default and least value (6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The window each stream and the connection start with (6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

/// Error codes (RFC 9113, 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    pub const NO_ERROR: Self = Self(0x0);
    pub const PROTOCOL_ERROR: Self = Self(0x1);
    pub const INTERNAL_ERROR: Self = Self(0x2);
    pub const FLOW_CONTROL_ERROR: Self = Self(0x3);
    pub const STREAM_CLOSED: Self = Self(0x5);
    pub const FRAME_SIZE_ERROR: Self = Self(0x6);
    pub const REFUSED_STREAM: Self = Self(0x7);
    pub const CANCEL: Self = Self(0x8);
    pub const COMPRESSION_ERROR: Self = Self(0x9);
    pub const ENHANCE_YOUR_CALM: Self = Self(0xb);
}

/// A broken rule: the connection ends (GOAWAY with the code), or only the
/// stream does (RST_STREAM).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("connection error {0:?}: {1}")]
    Connection(ErrorCode, &'static str),
    #[error("stream {0} error {1:?}: {2}")]
    Stream(u32, ErrorCode, &'static str),
}

fn protocol(why: &'static str) -> FrameError {
    FrameError::Connection(ErrorCode::PROTOCOL_ERROR, why)
}

fn frame_size(why: &'static str) -> FrameError {
    FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR, why)
}

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Setting identifiers (6.5.2, and RFC 8441's).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// The settings a peer changed in one SETTINGS frame (the last value of
/// each, when repeated); those it did not name are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `data` without padding; `flow_len` is what flow control counts
    /// (the whole payload, padding included: 6.9.1).
    Data {
        stream: u32,
        end_stream: bool,
        data: Bytes,
        flow_len: u32,
    },
    /// The block fragment without padding or priority fields.
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        fragment: Bytes,
    },
    Priority {
        stream: u32,
    },
    RstStream {
        stream: u32,
        code: ErrorCode,
    },
    Settings(Settings),
    SettingsAck,
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: ErrorCode,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        fragment: Bytes,
    },
    /// A type this side does not know: ignored (RFC 9113 4.1), except that
    /// it may not come between HEADERS and its CONTINUATION.
    Unknown {
        stream: u32,
    },
}

/// Takes the first frame off `buf` if it is all there. A frame longer than
/// `max_frame_size` (what this side announced) is an error before its
/// payload arrives.
pub fn decode(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
    if len > max_frame_size {
        return Err(frame_size("a frame larger than SETTINGS_MAX_FRAME_SIZE"));
    }
    if buf.len() < HEADER_LEN + len as usize {
        return Ok(None);
    }
    let kind = buf[3];
    let flags = buf[4];
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & MAX_WINDOW;
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len as usize).freeze();
    parse(kind, flags, stream, payload).map(Some)
}

fn parse(kind: u8, flags: u8, stream: u32, mut payload: Bytes) -> Result<Frame, FrameError> {
    let len = payload.len();
    match kind {
        kind::DATA => {
            if stream == 0 {
                return Err(protocol("DATA on stream 0"));
            }
            let data = unpad(flags, payload)?;
            Ok(Frame::Data {
                stream,
                end_stream: flags & flag::END_STREAM != 0,
                data,
                flow_len: len as u32,
            })
        }
        kind::HEADERS => {
            if stream == 0 {
                return Err(protocol("HEADERS on stream 0"));
            }
            let mut fragment = unpad(flags, payload)?;
            if flags & flag::PRIORITY != 0 {
                if fragment.len() < 5 {
                    return Err(frame_size("HEADERS too short for its priority fields"));
                }
                // A stream error by the RFC (5.3.1), but its block would go
                // undecoded and leave HPACK out of step: the connection ends.
                if fragment.get_u32() & MAX_WINDOW == stream {
                    return Err(protocol("a stream that depends on itself"));
                }
                fragment.advance(1);
            }
            Ok(Frame::Headers {
                stream,
                end_stream: flags & flag::END_STREAM != 0,
                end_headers: flags & flag::END_HEADERS != 0,
                fragment,
            })
        }
        kind::PRIORITY => {
            if stream == 0 {
                return Err(protocol("PRIORITY on stream 0"));
            }
            if len != 5 {
                return Err(FrameError::Stream(
                    stream,
                    ErrorCode::FRAME_SIZE_ERROR,
                    "PRIORITY not 5 bytes",
                ));
            }
            if payload.get_u32() & MAX_WINDOW == stream {
                return Err(FrameError::Stream(
                    stream,
                    ErrorCode::PROTOCOL_ERROR,
                    "a stream that depends on itself",
                ));
            }
            Ok(Frame::Priority { stream })
        }
        kind::RST_STREAM => {
            if stream == 0 {
                return Err(protocol("RST_STREAM on stream 0"));
            }
            if len != 4 {
                return Err(frame_size("RST_STREAM not 4 bytes"));
            }
            Ok(Frame::RstStream {
                stream,
                code: ErrorCode(payload.get_u32()),
            })
        }
        kind::SETTINGS => {
            if stream != 0 {
                return Err(protocol("SETTINGS on a stream"));
            }
            if flags & flag::ACK != 0 {
                if len != 0 {
                    return Err(frame_size("a SETTINGS acknowledgement with a payload"));
                }
                return Ok(Frame::SettingsAck);
            }
            if len % 6 != 0 {
                return Err(frame_size("SETTINGS not a multiple of 6 bytes"));
            }
            settings(payload).map(Frame::Settings)
        }
        kind::PUSH_PROMISE => Ok(Frame::PushPromise { stream }),
        kind::PING => {
            if stream != 0 {
                return Err(protocol("PING on a stream"));
            }
            let payload: [u8; 8] = payload[..].try_into().map_err(|_| frame_size("PING not 8 bytes"))?;
            Ok(Frame::Ping {
                ack: flags & flag::ACK != 0,
                payload,
            })
        }
        kind::GOAWAY => {
            if stream != 0 {
                return Err(protocol("GOAWAY on a stream"));
            }
            if len < 8 {
                return Err(frame_size("GOAWAY shorter than 8 bytes"));
            }
            Ok(Frame::GoAway {
                last_stream: payload.get_u32() & MAX_WINDOW,
                code: ErrorCode(payload.get_u32()),
            })
        }
        kind::WINDOW_UPDATE => {
            if len != 4 {
                return Err(frame_size("WINDOW_UPDATE not 4 bytes"));
            }
            let increment = payload.get_u32() & MAX_WINDOW;
            if increment == 0 {
                return Err(match stream {
                    0 => protocol("a WINDOW_UPDATE of 0"),
                    _ => FrameError::Stream(stream, ErrorCode::PROTOCOL_ERROR, "a WINDOW_UPDATE of 0"),
                });
            }
            Ok(Frame::WindowUpdate { stream, increment })
        }
        kind::CONTINUATION => {
            if stream == 0 {
                return Err(protocol("CONTINUATION on stream 0"));
            }
            Ok(Frame::Continuation {
                stream,
                end_headers: flags & flag::END_HEADERS != 0,
                fragment: payload,
            })
        }
        _ => Ok(Frame::Unknown { stream }),
    }
}

/// Strips padding (6.1, 6.2): the pad length byte and that many bytes at
/// the end, which may not reach into the pad length itself.
fn unpad(flags: u8, mut payload: Bytes) -> Result<Bytes, FrameError> {
    if flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    let Some(&pad) = payload.first() else {
        return Err(frame_size("a padded frame without its pad length"));
    };
    payload.advance(1);
    let Some(keep) = payload.len().checked_sub(usize::from(pad)) else {
        return Err(protocol("padding longer than the frame"));
    };
    payload.truncate(keep);
    Ok(payload)
}

fn settings(mut payload: Bytes) -> Result<Settings, FrameError> {
    let mut out = Settings::default();
    while payload.has_remaining() {
        let id = payload.get_u16();
        let value = payload.get_u32();
        match id {
            setting::HEADER_TABLE_SIZE => out.header_table_size = Some(value),
            setting::ENABLE_PUSH | setting::ENABLE_CONNECT_PROTOCOL if value > 1 => {
                return Err(protocol("a boolean setting above 1"));
            }
            setting::MAX_CONCURRENT_STREAMS => out.max_concurrent_streams = Some(value),
            setting::INITIAL_WINDOW_SIZE if value > MAX_WINDOW => {
                return Err(FrameError::Connection(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                ));
            }
            setting::INITIAL_WINDOW_SIZE => out.initial_window_size = Some(value),
            setting::MAX_FRAME_SIZE if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) => {
                return Err(protocol("SETTINGS_MAX_FRAME_SIZE out of range"));
            }
            setting::MAX_FRAME_SIZE => out.max_frame_size = Some(value),
            setting::MAX_HEADER_LIST_SIZE => out.max_header_list_size = Some(value),
            // Push (a client may only turn it off) and unknown settings.
            _ => {}
        }
    }
    Ok(out)
}

pub fn put_header(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
    dst.put_slice(&(len as u32).to_be_bytes()[1..]);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream);
}

/// A header block as HEADERS and as many CONTINUATIONs as the peer's
/// frame size needs.
pub fn put_headers(dst: &mut BytesMut, stream: u32, block: &[u8], end_stream: bool, max_frame_size: u32) {
    let mut chunks = block.chunks(max_frame_size as usize).peekable();
    let mut first = true;
    let end = if end_stream { flag::END_STREAM } else { 0 };
    loop {
        let chunk = chunks.next().unwrap_or_default();
        let last = chunks.peek().is_none();
        let headers_flag = if last { flag::END_HEADERS } else { 0 };
        if first {
            put_header(dst, chunk.len(), kind::HEADERS, headers_flag | end, stream);
        } else {
            put_header(dst, chunk.len(), kind::CONTINUATION, headers_flag, stream);
        }
        dst.put_slice(chunk);
        first = false;
        if last {
            return;
        }
    }
}

/// One DATA frame; the caller keeps it within frame size and window.
pub fn put_data(dst: &mut BytesMut, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_header(dst, data.len(), kind::DATA, flags, stream);
    dst.put_slice(data);
}

pub fn put_settings(dst: &mut BytesMut, values: &[(u16, u32)]) {
    put_header(dst, values.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in values {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

pub fn put_settings_ack(dst: &mut BytesMut) {
    put_header(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn put_ping(dst: &mut BytesMut, ack: bool, payload: [u8; 8]) {
    put_header(dst, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    dst.put_slice(&payload);
}

pub fn put_goaway(dst: &mut BytesMut, last_stream: u32, code: ErrorCode) {
    put_header(dst, 8, kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream);
    dst.put_u32(code.0);
}

pub fn put_rst_stream(dst: &mut BytesMut, stream: u32, code: ErrorCode) {
    put_header(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(code.0);
}

pub fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_header(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        put_header(&mut buf, payload.len(), kind, flags, stream);
        buf.put_slice(payload);
        buf
    }

    fn one(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<Frame, FrameError> {
        let mut buf = raw(kind, flags, stream, payload);
        let frame = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).map(|f| f.expect("a whole frame"));
        if frame.is_ok() {
            assert!(buf.is_empty());
        }
        frame
    }

    fn code(result: Result<Frame, FrameError>) -> (Option<u32>, ErrorCode) {
        match result {
            Err(FrameError::Connection(code, _)) => (None, code),
            Err(FrameError::Stream(stream, code, _)) => (Some(stream), code),
            Ok(frame) => panic!("accepted {frame:?}"),
        }
    }

    #[test]
    fn a_frame_is_read_only_once_whole() {
        let mut buf = raw(kind::PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let tail = buf.split_off(10);
        assert_eq!(decode(&mut buf, DEFAULT_MAX_FRAME_SIZE), Ok(None));
        buf.unsplit(tail);
        assert_eq!(
            decode(&mut buf, DEFAULT_MAX_FRAME_SIZE),
            Ok(Some(Frame::Ping {
                ack: false,
                payload: [1, 2, 3, 4, 5, 6, 7, 8]
            }))
        );
    }

    #[test]
    fn a_frame_over_the_size_limit_is_refused_from_its_header() {
        let mut buf = BytesMut::new();
        put_header(&mut buf, 16_385, kind::DATA, 0, 1);
        assert_eq!(
            code(decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).map(|f| f.unwrap())),
            (None, ErrorCode::FRAME_SIZE_ERROR)
        );
    }

    #[test]
    fn padding_is_removed_and_counted_by_flow_control() {
        let frame = one(kind::DATA, flag::PADDED | flag::END_STREAM, 3, &[2, b'h', b'i', 0, 0]).unwrap();
        assert_eq!(
            frame,
            Frame::Data {
                stream: 3,
                end_stream: true,
                data: Bytes::from_static(b"hi"),
                flow_len: 5
            }
        );
        assert_eq!(
            code(one(kind::DATA, flag::PADDED, 3, &[5, 0, 0])),
            (None, ErrorCode::PROTOCOL_ERROR)
        );
        assert_eq!(
            code(one(kind::DATA, flag::PADDED, 3, &[])),
            (None, ErrorCode::FRAME_SIZE_ERROR)
        );
    }

    #[test]
    fn headers_lose_their_priority_fields() {
        let frame = one(
            kind::HEADERS,
            flag::PRIORITY | flag::END_HEADERS,
            5,
            &[0, 0, 0, 3, 16, 0x82],
        )
        .unwrap();
        assert_eq!(
            frame,
            Frame::Headers {
                stream: 5,
                end_stream: false,
                end_headers: true,
                fragment: Bytes::from_static(&[0x82])
            }
        );
        assert_eq!(
            code(one(kind::HEADERS, flag::PRIORITY, 5, &[0, 0, 0, 5, 16])),
            (None, ErrorCode::PROTOCOL_ERROR)
        );
        assert_eq!(
            code(one(kind::HEADERS, flag::PRIORITY, 5, &[0, 0])),
            (None, ErrorCode::FRAME_SIZE_ERROR)
        );
    }

    #[test]
    fn each_frame_type_checks_its_size_and_stream() {
        type Case = (u8, u8, u32, &'static [u8], (Option<u32>, ErrorCode));
        let cases: &[Case] = &[
            (kind::DATA, 0, 0, b"x", (None, ErrorCode::PROTOCOL_ERROR)),
            (kind::HEADERS, 0, 0, b"", (None, ErrorCode::PROTOCOL_ERROR)),
            (kind::PRIORITY, 0, 1, &[0; 4], (Some(1), ErrorCode::FRAME_SIZE_ERROR)),
            (kind::PRIORITY, 0, 0, &[0; 5], (None, ErrorCode::PROTOCOL_ERROR)),
            (kind::RST_STREAM, 0, 1, &[0; 3], (None, ErrorCode::FRAME_SIZE_ERROR)),
            (kind::RST_STREAM, 0, 0, &[0; 4], (None, ErrorCode::PROTOCOL_ERROR)),
            (kind::SETTINGS, 0, 1, b"", (None, ErrorCode::PROTOCOL_ERROR)),
            (kind::SETTINGS, 0, 0, &[0; 5], (None, ErrorCode::FRAME_SIZE_ERROR)),
            (
                kind::SETTINGS,
                flag::ACK,
                0,
                &[0; 6],
                (None, ErrorCode::FRAME_SIZE_ERROR),
            ),
            (
                kind::SETTINGS,
                0,
                0,
                &[0, 2, 0, 0, 0, 2],
                (None, ErrorCode::PROTOCOL_ERROR),
            ),
            (
                kind::SETTINGS,
                0,
                0,
                &[0, 4, 0x80, 0, 0, 0],
                (None, ErrorCode::FLOW_CONTROL_ERROR),
            ),
            (
                kind::SETTINGS,
                0,
                0,
                &[0, 5, 0, 0, 0x3f, 0xff],
                (None, ErrorCode::PROTOCOL_ERROR),
            ),
            (
                kind::SETTINGS,
                0,
                0,
                &[0, 5, 1, 0, 0, 0],
                (None, ErrorCode::PROTOCOL_ERROR),
            ),
            (kind::PING, 0, 0, &[0; 7], (None, ErrorCode::FRAME_SIZE_ERROR)),
            (kind::PING, 0, 1, &[0; 8], (None, ErrorCode::PROTOCOL_ERROR)),
            (kind::GOAWAY, 0, 0, &[0; 7], (None, ErrorCode::FRAME_SIZE_ERROR)),
            (kind::GOAWAY, 0, 3, &[0; 8], (None, ErrorCode::PROTOCOL_ERROR)),
            (kind::WINDOW_UPDATE, 0, 0, &[0; 5], (None, ErrorCode::FRAME_SIZE_ERROR)),
            (
                kind::WINDOW_UPDATE,
                0,
                0,
                &[0x80, 0, 0, 0],
                (None, ErrorCode::PROTOCOL_ERROR),
            ),
            (kind::WINDOW_UPDATE, 0, 7, &[0; 4], (Some(7), ErrorCode::PROTOCOL_ERROR)),
            (kind::CONTINUATION, 0, 0, b"", (None, ErrorCode::PROTOCOL_ERROR)),
        ];
        for &(kind, flags, stream, payload, expected) in cases {
            assert_eq!(
                code(one(kind, flags, stream, payload)),
                expected,
                "type {kind} flags {flags} stream {stream}"
            );
        }
    }

    #[test]
    fn settings_keep_the_last_value_and_skip_unknown_ones() {
        let payload = [
            0, 4, 0, 1, 0, 0, //
            0, 0x99, 0xff, 0xff, 0xff, 0xff, //
            0, 4, 0, 2, 0, 0, //
            0, 1, 0, 0, 0, 0,
        ];
        assert_eq!(
            one(kind::SETTINGS, 0, 0, &payload),
            Ok(Frame::Settings(Settings {
                header_table_size: Some(0),
                initial_window_size: Some(0x20000),
                ..Settings::default()
            }))
        );
    }

    #[test]
    fn unknown_types_pass_and_the_reserved_bit_is_ignored() {
        assert_eq!(one(0xfa, 0xff, 9, b"anything"), Ok(Frame::Unknown { stream: 9 }));
        assert_eq!(
            one(kind::WINDOW_UPDATE, 0, 0x8000_0003, &[0x80, 0, 0, 1]),
            Ok(Frame::WindowUpdate {
                stream: 3,
                increment: 1
            })
        );
    }

    #[test]
    fn a_large_block_goes_out_as_headers_then_continuations() {
        let block = vec![7u8; 40_000];
        let mut out = BytesMut::new();
        put_headers(&mut out, 1, &block, true, DEFAULT_MAX_FRAME_SIZE);
        let mut frames = Vec::new();
        while let Some(frame) = decode(&mut out, DEFAULT_MAX_FRAME_SIZE).unwrap() {
            frames.push(frame);
        }
        assert_eq!(frames.len(), 3);
        let Frame::Headers {
            end_stream: true,
            end_headers: false,
            ref fragment,
            ..
        } = frames[0]
        else {
            panic!("{:?}", frames[0]);
        };
        assert_eq!(fragment.len(), 16_384);
        assert!(matches!(
            frames[2],
            Frame::Continuation { end_headers: true, ref fragment, .. } if fragment.len() == 40_000 - 2 * 16_384
        ));
        let mut empty = BytesMut::new();
        put_headers(&mut empty, 1, &[], false, DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(
            decode(&mut empty, DEFAULT_MAX_FRAME_SIZE),
            Ok(Some(Frame::Headers {
                stream: 1,
                end_stream: false,
                end_headers: true,
                fragment: Bytes::new()
            }))
        );
    }
}
