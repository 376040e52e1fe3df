//! The server side of one HTTP/2 connection (RFC 9113) as a state machine
//! over bytes, with no I/O: the caller hands it what the client sent
//! (`recv`) and gets back events (a request's head, body data, trailers, a
//! reset) and bytes to write (`output`): settings and their
//! acknowledgements, PING answers, window updates, the answers it is given
//! (`send_headers`, `send_data`) as flow control lets them go.
//!
//! Everything the client sends is hostile until checked. Rules between
//! frames are enforced here (stream states, CONTINUATION order, flow
//! control both ways, the concurrent-stream cap, what a request head may
//! hold, Content-Length against the DATA that came), and so are the limits
//! that keep one connection from costing the proxy much: a header block is
//! capped in bytes and frames, memory for request bodies in flight by the
//! windows this side grants, and streams the client resets or gets wrong
//! (rapid reset, CVE-2023-44487) by a budget that answered streams earn
//! back; past it the connection ends with ENHANCE_YOUR_CALM. `recv` stops
//! taking frames while the output it owes is large, so a client that sends
//! PINGs or SETTINGS without reading the answers is held back by its own
//! socket.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

use super::frame::{self, ErrorCode, Frame, FrameError, Settings};
use super::hpack::{self, Decoder, Encoder, Field};
use crate::field;

/// What this side grants and allows; `Default` is what the proxy uses.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_concurrent_streams: u32,
    /// The largest header list (RFC 9113 6.5.2's size) a request may have;
    /// a larger one is answered 431.
    pub max_header_list_size: u32,
    /// The window each stream's request body starts with.
    pub stream_window: u32,
    /// The window all request bodies on the connection share.
    pub connection_window: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            max_header_list_size: 16 * 1024,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
        }
    }
}

/// A header block may arrive in at most this many frames (HEADERS and
/// CONTINUATIONs): more is a flood of empty frames, not a head.
const MAX_BLOCK_FRAMES: usize = 64;
/// `recv` stops taking frames while this much output waits to be written.
const OUTPUT_HIGH: usize = 256 * 1024;

/// A request's head, checked (RFC 9113 8.3.1): the pseudo-header fields
/// apart, the rest as sent (lower-case names, no connection-specific
/// field, values without CR, LF or NUL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Bytes,
    /// `None` only for CONNECT.
    pub scheme: Option<Bytes>,
    pub authority: Option<Bytes>,
    /// `None` only for CONNECT.
    pub path: Option<Bytes>,
    pub fields: Vec<Field>,
    /// The body's length when the client gave one; DATA must add up to it.
    pub content_length: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A new stream's request; no body follows when `end_stream`.
    Request {
        stream: u32,
        head: RequestHead,
        end_stream: bool,
    },
    /// A piece of a request body. Once the caller is done with it, it
    /// gives the bytes back with `release`, which lets the client send more.
    Data { stream: u32, data: Bytes, end_stream: bool },
    /// The request's trailers; the body is complete.
    Trailers { stream: u32, fields: Vec<Field> },
    /// The stream is gone (the client reset it, or this side did over a
    /// broken rule): stop its work, drop what is buffered for it.
    Reset { stream: u32 },
}

/// Why the connection ended; its GOAWAY is already in the output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("HTTP/2 connection error {code:?}: {reason}")]
pub struct ConnectionError {
    pub code: ErrorCode,
    pub reason: &'static str,
}

#[derive(Debug)]
struct Stream {
    /// The client may still send body data (it has not ended its side).
    receiving: bool,
    /// This side has not yet queued the end of its answer.
    sending: bool,
    headers_sent: bool,
    send_window: i64,
    recv_window: i64,
    /// Body bytes given to the caller and not yet released.
    held: u32,
    /// Released bytes not yet given back to the client's stream window.
    released: u32,
    body_left: Option<u64>,
    /// Answer data waiting for window, and whether the answer ends after it.
    pending: VecDeque<Bytes>,
    pending_len: usize,
    pending_end: bool,
}

/// A header block still waiting for its CONTINUATIONs.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
    frames: usize,
}

#[derive(Debug)]
pub struct Connection {
    limits: Limits,
    decoder: Decoder,
    encoder: Encoder,
    out: BytesMut,
    preface_seen: bool,
    settings_seen: bool,
    streams: HashMap<u32, Stream>,
    /// Streams with answer data waiting, in the order they queued it.
    send_queue: VecDeque<u32>,
    last_stream: u32,
    open_block: Option<OpenBlock>,
    peer_max_frame_size: u32,
    peer_initial_window: u32,
    send_window: i64,
    recv_window: i64,
    /// Released bytes not yet given back to the connection's window.
    released: u32,
    /// Streams the client reset or got wrong, less those answered in full.
    misbehaviour: u32,
    /// This side sent GOAWAY: later streams are ignored.
    going_away: bool,
    /// The client sent GOAWAY.
    peer_going_away: bool,
    closed: Option<ConnectionError>,
}

impl Connection {
    /// A connection whose first output is this side's SETTINGS (and the
    /// connection window, where it differs from the default).
    pub fn new(limits: Limits) -> Self {
        let mut out = BytesMut::with_capacity(16 * 1024);
        frame::put_settings(
            &mut out,
            &[
                (frame::setting::MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams),
                (frame::setting::INITIAL_WINDOW_SIZE, limits.stream_window),
                (frame::setting::MAX_HEADER_LIST_SIZE, limits.max_header_list_size),
            ],
        );
        let connection_window = limits.connection_window.clamp(frame::DEFAULT_WINDOW, frame::MAX_WINDOW);
        if connection_window > frame::DEFAULT_WINDOW {
            frame::put_window_update(&mut out, 0, connection_window - frame::DEFAULT_WINDOW);
        }
        Self {
            decoder: Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            encoder: Encoder::default(),
            out,
            preface_seen: false,
            settings_seen: false,
            streams: HashMap::new(),
            send_queue: VecDeque::new(),
            last_stream: 0,
            open_block: None,
            peer_max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            peer_initial_window: frame::DEFAULT_WINDOW,
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_window: i64::from(connection_window),
            released: 0,
            misbehaviour: 0,
            going_away: false,
            peer_going_away: false,
            closed: None,
            limits,
        }
    }

    /// The bytes to write to the client; the caller takes them (`split`).
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Reads the frames whole in `buf` (leaving a partial one), pushing
    /// what they mean onto `events`. Stops early while much output waits:
    /// write it, then call again. After an error the connection is over:
    /// write the output (its GOAWAY) and close.
    pub fn recv(&mut self, buf: &mut BytesMut, events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if let Some(closed) = &self.closed {
            return Err(closed.clone());
        }
        let result = self.recv_frames(buf, events);
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        result
    }

    /// Connections with no streams in flight whose end is due: a GOAWAY
    /// either way, or an error.
    pub fn is_done(&self) -> bool {
        self.closed.is_some() || ((self.going_away || self.peer_going_away) && self.streams.is_empty())
    }

    /// Streams in flight (not yet finished both ways).
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    fn recv_frames(&mut self, buf: &mut BytesMut, events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if !self.preface_seen {
            if buf.len() < frame::PREFACE.len() {
                return if frame::PREFACE.starts_with(buf) {
                    Ok(())
                } else {
                    Err(protocol("not the HTTP/2 preface"))
                };
            }
            if !buf.starts_with(frame::PREFACE) {
                return Err(protocol("not the HTTP/2 preface"));
            }
            let _ = buf.split_to(frame::PREFACE.len());
            self.preface_seen = true;
        }
        while self.out.len() < OUTPUT_HIGH {
            let frame = match frame::decode(buf, frame::DEFAULT_MAX_FRAME_SIZE) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(FrameError::Connection(code, reason)) => return Err(ConnectionError { code, reason }),
                Err(FrameError::Stream(stream, code, _)) => {
                    self.stream_error(stream, code, events)?;
                    continue;
                }
            };
            if !self.settings_seen && !matches!(frame, Frame::Settings(_)) {
                return Err(protocol("the first frame is not SETTINGS"));
            }
            if self.open_block.is_some() && !matches!(frame, Frame::Continuation { .. }) {
                return Err(protocol("a frame between HEADERS and its CONTINUATION"));
            }
            self.recv_frame(frame, events)?;
        }
        Ok(())
    }

    fn recv_frame(&mut self, frame: Frame, events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        match frame {
            Frame::Data {
                stream,
                end_stream,
                data,
                flow_len,
            } => self.recv_data(stream, end_stream, data, flow_len, events),
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                fragment,
            } => {
                if stream % 2 == 0 {
                    return Err(protocol("a client stream with an even number"));
                }
                let mut block = BytesMut::from(&fragment[..]);
                if !end_headers {
                    self.check_block_size(block.len())?;
                    self.open_block = Some(OpenBlock {
                        stream,
                        end_stream,
                        block,
                        frames: 1,
                    });
                    return Ok(());
                }
                let block = block.split().freeze();
                self.recv_block(stream, end_stream, block, events)
            }
            Frame::Continuation {
                stream,
                end_headers,
                fragment,
            } => {
                let Some(mut open) = self.open_block.take() else {
                    return Err(protocol("CONTINUATION without HEADERS"));
                };
                if open.stream != stream {
                    return Err(protocol("CONTINUATION on another stream"));
                }
                open.frames += 1;
                open.block.extend_from_slice(&fragment);
                if open.frames > MAX_BLOCK_FRAMES {
                    return Err(calm("a header block in too many frames"));
                }
                self.check_block_size(open.block.len())?;
                if !end_headers {
                    self.open_block = Some(open);
                    return Ok(());
                }
                self.recv_block(stream, open.end_stream, open.block.freeze(), events)
            }
            Frame::Priority { .. } | Frame::Unknown { .. } | Frame::SettingsAck => Ok(()),
            Frame::RstStream { stream, .. } => {
                if stream > self.last_stream {
                    return Err(protocol("RST_STREAM on an idle stream"));
                }
                if let Some(s) = self.streams.remove(&stream) {
                    self.recv_window_back(s.held);
                    if s.sending {
                        self.misbehaved()?;
                    }
                    events.push(Event::Reset { stream });
                }
                Ok(())
            }
            Frame::Settings(settings) => {
                self.settings_seen = true;
                self.apply_settings(settings)?;
                frame::put_settings_ack(&mut self.out);
                self.write_data();
                Ok(())
            }
            Frame::PushPromise { .. } => Err(protocol("PUSH_PROMISE from a client")),
            Frame::Ping { ack, payload } => {
                if !ack {
                    frame::put_ping(&mut self.out, true, payload);
                }
                Ok(())
            }
            Frame::GoAway { .. } => {
                self.peer_going_away = true;
                Ok(())
            }
            Frame::WindowUpdate { stream: 0, increment } => {
                self.send_window += i64::from(increment);
                if self.send_window > i64::from(frame::MAX_WINDOW) {
                    return Err(ConnectionError {
                        code: ErrorCode::FLOW_CONTROL_ERROR,
                        reason: "the connection window above 2^31-1",
                    });
                }
                self.write_data();
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => {
                if stream > self.last_stream {
                    return Err(protocol("WINDOW_UPDATE on an idle stream"));
                }
                let Some(s) = self.streams.get_mut(&stream) else {
                    return Ok(());
                };
                s.send_window += i64::from(increment);
                if s.send_window > i64::from(frame::MAX_WINDOW) {
                    return self.stream_error(stream, ErrorCode::FLOW_CONTROL_ERROR, events);
                }
                self.write_data();
                Ok(())
            }
        }
    }

    fn check_block_size(&self, len: usize) -> Result<(), ConnectionError> {
        // A compressed block is rarely larger than the list it codes; twice
        // the list limit leaves room for fields sent without compression.
        if len > 2 * self.limits.max_header_list_size as usize + 1024 {
            return Err(calm("a header block far past the header list limit"));
        }
        Ok(())
    }

    fn recv_data(
        &mut self,
        stream: u32,
        end_stream: bool,
        data: Bytes,
        flow_len: u32,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        if stream > self.last_stream {
            return Err(protocol("DATA on an idle stream"));
        }
        if i64::from(flow_len) > self.recv_window {
            return Err(ConnectionError {
                code: ErrorCode::FLOW_CONTROL_ERROR,
                reason: "DATA past the connection window",
            });
        }
        self.recv_window -= i64::from(flow_len);
        // Padding is never the caller's to release.
        let padding = flow_len - data.len() as u32;
        let Some(s) = self.streams.get_mut(&stream) else {
            // A stream already closed (reset by this side, say): its data
            // still counted against the connection's window.
            self.recv_window_back(flow_len);
            return Ok(());
        };
        if !s.receiving {
            self.recv_window_back(flow_len);
            return self.stream_error(stream, ErrorCode::STREAM_CLOSED, events);
        }
        if i64::from(flow_len) > s.recv_window {
            self.recv_window_back(flow_len);
            return self.stream_error(stream, ErrorCode::FLOW_CONTROL_ERROR, events);
        }
        s.recv_window -= i64::from(flow_len);
        s.released += padding;
        let len = data.len() as u64;
        let length_ok = match &mut s.body_left {
            Some(left) if len > *left => false,
            Some(left) => {
                *left -= len;
                !end_stream || *left == 0
            }
            None => true,
        };
        if !length_ok {
            self.recv_window_back(flow_len);
            return self.stream_error(stream, ErrorCode::PROTOCOL_ERROR, events);
        }
        s.held += data.len() as u32;
        if end_stream {
            s.receiving = false;
        }
        self.recv_window_back(padding);
        if !data.is_empty() || end_stream {
            events.push(Event::Data {
                stream,
                data,
                end_stream,
            });
        }
        self.finish_if_done(stream);
        Ok(())
    }

    /// A complete header block: a new request, trailers, or one for a
    /// stream already closed (decoded all the same, for the table's sake).
    fn recv_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: Bytes,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        let decoded = self
            .decoder
            .decode(&block, self.limits.max_header_list_size as usize)
            .map_err(|_| ConnectionError {
                code: ErrorCode::COMPRESSION_ERROR,
                reason: "a header block that does not decode",
            })?;
        if let Some(s) = self.streams.get_mut(&stream) {
            // Trailers: they end the body, and carry no pseudo-header.
            if !s.receiving {
                return self.stream_error(stream, ErrorCode::STREAM_CLOSED, events);
            }
            let valid = end_stream
                && !decoded.oversized
                && decoded.fields.iter().all(|(n, v)| valid_regular_field(n, v))
                && s.body_left.is_none_or(|left| left == 0);
            if !valid {
                return self.stream_error(stream, ErrorCode::PROTOCOL_ERROR, events);
            }
            s.receiving = false;
            events.push(Event::Trailers {
                stream,
                fields: decoded.fields,
            });
            self.finish_if_done(stream);
            return Ok(());
        }
        if stream <= self.last_stream || self.going_away {
            // Closed, or opened after this side's GOAWAY: ignored (6.8).
            self.last_stream = self.last_stream.max(stream);
            return Ok(());
        }
        self.last_stream = stream;
        if self.streams.len() >= self.limits.max_concurrent_streams as usize {
            frame::put_rst_stream(&mut self.out, stream, ErrorCode::REFUSED_STREAM);
            return self.misbehaved();
        }
        if decoded.oversized {
            // 431, and no body wanted (8.1: a full answer, then NO_ERROR).
            let mut block = BytesMut::new();
            self.encoder.begin(&mut block);
            self.encoder.status(431, &mut block);
            frame::put_headers(&mut self.out, stream, &block, true, self.peer_max_frame_size);
            if !end_stream {
                frame::put_rst_stream(&mut self.out, stream, ErrorCode::NO_ERROR);
            }
            return self.misbehaved();
        }
        let Some(head) = request_head(decoded.fields) else {
            frame::put_rst_stream(&mut self.out, stream, ErrorCode::PROTOCOL_ERROR);
            return self.misbehaved();
        };
        if end_stream && head.content_length.is_some_and(|len| len > 0) {
            frame::put_rst_stream(&mut self.out, stream, ErrorCode::PROTOCOL_ERROR);
            return self.misbehaved();
        }
        self.streams.insert(
            stream,
            Stream {
                receiving: !end_stream,
                sending: true,
                headers_sent: false,
                send_window: i64::from(self.peer_initial_window),
                recv_window: i64::from(self.limits.stream_window),
                held: 0,
                released: 0,
                body_left: head.content_length,
                pending: VecDeque::new(),
                pending_len: 0,
                pending_end: false,
            },
        );
        events.push(Event::Request {
            stream,
            head,
            end_stream,
        });
        Ok(())
    }

    fn apply_settings(&mut self, settings: Settings) -> Result<(), ConnectionError> {
        if settings.header_table_size.is_some() {
            self.encoder.peer_table_size_changed();
        }
        if let Some(size) = settings.max_frame_size {
            self.peer_max_frame_size = size;
        }
        if let Some(window) = settings.initial_window_size {
            let delta = i64::from(window) - i64::from(self.peer_initial_window);
            self.peer_initial_window = window;
            for s in self.streams.values_mut() {
                s.send_window += delta;
                if s.send_window > i64::from(frame::MAX_WINDOW) {
                    return Err(ConnectionError {
                        code: ErrorCode::FLOW_CONTROL_ERROR,
                        reason: "SETTINGS_INITIAL_WINDOW_SIZE took a stream window above 2^31-1",
                    });
                }
            }
        }
        Ok(())
    }

    /// A stream-level error: RST_STREAM, the stream forgotten, the caller
    /// told; it counts against the client's budget.
    fn stream_error(&mut self, stream: u32, code: ErrorCode, events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        frame::put_rst_stream(&mut self.out, stream, code);
        if let Some(s) = self.streams.remove(&stream) {
            self.recv_window_back(s.held);
            events.push(Event::Reset { stream });
        }
        self.misbehaved()
    }

    fn misbehaved(&mut self) -> Result<(), ConnectionError> {
        self.misbehaviour += 1;
        if self.misbehaviour > self.limits.max_concurrent_streams.max(100) {
            return Err(calm("too many streams reset or refused"));
        }
        Ok(())
    }

    fn fail(&mut self, error: ConnectionError) {
        frame::put_goaway(&mut self.out, self.last_stream, error.code);
        self.going_away = true;
        self.closed = Some(error);
    }

    /// Ends the connection gracefully: GOAWAY with the last stream taken;
    /// streams in flight finish, later ones are ignored; `is_done` says
    /// when the last one has.
    pub fn shutdown(&mut self) {
        if !self.going_away {
            frame::put_goaway(&mut self.out, self.last_stream, ErrorCode::NO_ERROR);
            self.going_away = true;
        }
    }

    /// The caller is done with `len` bytes of `stream`'s body: the client
    /// may send that much more.
    pub fn release(&mut self, stream: u32, len: usize) {
        let Some(s) = self.streams.get_mut(&stream) else { return };
        let len = (len as u32).min(s.held);
        s.held -= len;
        s.released += len;
        if s.receiving && s.released >= self.limits.stream_window / 2 {
            frame::put_window_update(&mut self.out, stream, s.released);
            s.recv_window += i64::from(s.released);
            s.released = 0;
        }
        self.recv_window_back(len);
    }

    fn recv_window_back(&mut self, len: u32) {
        self.released += len;
        if self.released >= self.limits.connection_window / 2 {
            frame::put_window_update(&mut self.out, 0, self.released);
            self.recv_window += i64::from(self.released);
            self.released = 0;
        }
    }

    /// Starts the answer on `stream`. Field names are lower-cased, and
    /// fields that only mean something on an HTTP/1.1 connection are
    /// dropped (RFC 9113 8.2.2). Returns false if the stream is gone.
    pub fn send_headers<'a>(
        &mut self,
        stream: u32,
        status: u16,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        end_stream: bool,
    ) -> bool {
        let Some(s) = self.streams.get_mut(&stream) else {
            return false;
        };
        if s.headers_sent || !s.sending {
            return false;
        }
        s.headers_sent = true;
        let mut block = BytesMut::with_capacity(256);
        self.encoder.begin(&mut block);
        self.encoder.status(status, &mut block);
        let mut lower = Vec::new();
        for (name, value) in fields {
            let name = if name.iter().any(u8::is_ascii_uppercase) {
                lower.clear();
                lower.extend(name.iter().map(u8::to_ascii_lowercase));
                &lower[..]
            } else {
                name
            };
            if CONNECTION_SPECIFIC.contains(&name) {
                continue;
            }
            let sensitive = name == b"set-cookie" || name == b"authorization";
            self.encoder.field(name, value, sensitive, &mut block);
        }
        frame::put_headers(&mut self.out, stream, &block, end_stream, self.peer_max_frame_size);
        if end_stream {
            s.sending = false;
            self.answered(stream);
        }
        true
    }

    /// Queues answer data; it goes out as the windows allow (`buffered`
    /// says how much still waits). Returns false if the stream is gone.
    pub fn send_data(&mut self, stream: u32, data: Bytes, end_stream: bool) -> bool {
        let Some(s) = self.streams.get_mut(&stream) else {
            return false;
        };
        if !s.headers_sent || !s.sending {
            return false;
        }
        if s.pending.is_empty() && !s.pending_end {
            self.send_queue.push_back(stream);
        }
        s.pending_len += data.len();
        if !data.is_empty() {
            s.pending.push_back(data);
        }
        s.pending_end = end_stream;
        if end_stream {
            s.sending = false;
        }
        self.write_data();
        true
    }

    /// Answer bytes queued on `stream` and not yet written for lack of
    /// window; the caller stops reading the answer's source while high.
    pub fn buffered(&self, stream: u32) -> usize {
        self.streams.get(&stream).map_or(0, |s| s.pending_len)
    }

    /// Resets a stream this side gives up on (its backend failed midway,
    /// say).
    pub fn reset(&mut self, stream: u32, code: ErrorCode) {
        if let Some(s) = self.streams.remove(&stream) {
            frame::put_rst_stream(&mut self.out, stream, code);
            self.recv_window_back(s.held);
        }
    }

    /// Writes queued answer data as far as the windows go, a frame per
    /// stream in turn.
    fn write_data(&mut self) {
        let mut rounds = self.send_queue.len();
        while rounds > 0 && self.send_window > 0 {
            rounds -= 1;
            let Some(stream) = self.send_queue.pop_front() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&stream) else {
                continue;
            };
            let mut wrote = false;
            while let Some(chunk) = s.pending.front_mut() {
                let room = s
                    .send_window
                    .min(self.send_window)
                    .min(i64::from(self.peer_max_frame_size));
                if room <= 0 {
                    break;
                }
                let take = chunk.len().min(room as usize);
                let piece = chunk.split_to(take);
                if chunk.is_empty() {
                    s.pending.pop_front();
                }
                s.pending_len -= take;
                s.send_window -= take as i64;
                self.send_window -= take as i64;
                let end = s.pending_end && s.pending.is_empty();
                frame::put_data(&mut self.out, stream, &piece, end);
                wrote = true;
                if end {
                    s.pending_end = false;
                    break;
                }
            }
            if s.pending_end && s.pending.is_empty() && !wrote {
                // The end with no data left (or none ever): an empty frame.
                frame::put_data(&mut self.out, stream, &[], true);
                s.pending_end = false;
            }
            let finished = !s.sending && s.pending.is_empty() && !s.pending_end;
            if finished {
                self.answered(stream);
            } else if !s.pending.is_empty() {
                self.send_queue.push_back(stream);
            }
        }
    }

    /// This side's answer on `stream` is complete: the stream earns back
    /// budget, and ends here if the client's side is done too; if the
    /// client is still sending a body nobody will read, it is told to stop
    /// (RST_STREAM NO_ERROR, 8.1).
    fn answered(&mut self, stream: u32) {
        self.misbehaviour = self.misbehaviour.saturating_sub(1);
        let Some(s) = self.streams.get(&stream) else { return };
        if s.receiving {
            frame::put_rst_stream(&mut self.out, stream, ErrorCode::NO_ERROR);
            let held = s.held;
            self.streams.remove(&stream);
            self.recv_window_back(held);
        } else {
            self.finish_if_done(stream);
        }
    }

    fn finish_if_done(&mut self, stream: u32) {
        let done = self
            .streams
            .get(&stream)
            .is_some_and(|s| !s.receiving && !s.sending && s.pending.is_empty() && !s.pending_end);
        if done {
            if let Some(s) = self.streams.remove(&stream) {
                self.recv_window_back(s.held);
            }
        }
    }
}

fn protocol(reason: &'static str) -> ConnectionError {
    ConnectionError {
        code: ErrorCode::PROTOCOL_ERROR,
        reason,
    }
}

fn calm(reason: &'static str) -> ConnectionError {
    ConnectionError {
        code: ErrorCode::ENHANCE_YOUR_CALM,
        reason,
    }
}

/// Fields that mean something only on one HTTP/1.1 connection: malformed
/// in an HTTP/2 request, dropped from an answer (RFC 9113 8.2.2).
const CONNECTION_SPECIFIC: [&[u8]; 5] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
];

/// A field name as HTTP/2 allows it: a token, lower-case.
fn valid_name(name: &[u8]) -> bool {
    field::is_token(name) && !name.iter().any(u8::is_ascii_uppercase)
}

/// A field value as RFC 9113 8.2.1 allows it: no NUL, CR or LF, and no
/// space or tab at either end.
fn valid_value(value: &[u8]) -> bool {
    !value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n'))
        && !value.first().is_some_and(|&b| b == b' ' || b == b'\t')
        && !value.last().is_some_and(|&b| b == b' ' || b == b'\t')
}

fn valid_regular_field(name: &[u8], value: &[u8]) -> bool {
    valid_name(name)
        && valid_value(value)
        && !CONNECTION_SPECIFIC.contains(&name)
        && (name != b"te" || value == b"trailers")
}

/// Checks a request's fields (RFC 9113 8.3.1 and 8.2): pseudo-header
/// fields first, each once, only the request's four; then regular ones.
/// `None` when malformed.
pub fn request_head(fields: Vec<Field>) -> Option<RequestHead> {
    let mut method = None;
    let mut scheme = None;
    let mut authority = None;
    let mut path = None;
    let mut regular = Vec::with_capacity(fields.len());
    let mut content_length: Option<u64> = None;
    for (name, value) in fields {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if !regular.is_empty() {
                return None;
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"authority" => &mut authority,
                b"path" => &mut path,
                _ => return None,
            };
            if slot.is_some() || !valid_value(&value) {
                return None;
            }
            *slot = Some(value);
            continue;
        }
        if !valid_regular_field(&name, &value) {
            return None;
        }
        if name == "content-length" {
            let len = field::content_length(&value)?;
            if content_length.is_some_and(|seen| seen != len) {
                return None;
            }
            content_length = Some(len);
        }
        regular.push((name, value));
    }
    let method = method?;
    if !field::is_token(&method) {
        return None;
    }
    if method == "CONNECT" {
        if scheme.is_some() || path.is_some() || authority.is_none() {
            return None;
        }
    } else if scheme.as_ref().is_none_or(Bytes::is_empty) || path.as_ref().is_none_or(Bytes::is_empty) {
        return None;
    }
    Some(RequestHead {
        method,
        scheme,
        authority,
        path,
        fields: regular,
        content_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::frame::{flag, kind, setting};

    /// A client's side of the exchange, written by hand.
    struct Client {
        encoder: Encoder,
        decoder: Decoder,
        to_server: BytesMut,
    }

    impl Client {
        fn new() -> Self {
            let mut to_server = BytesMut::from(frame::PREFACE);
            frame::put_settings(&mut to_server, &[]);
            Self {
                encoder: Encoder::default(),
                decoder: Decoder::default(),
                to_server,
            }
        }

        fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
            let mut block = BytesMut::new();
            self.encoder.begin(&mut block);
            for (name, value) in fields {
                self.encoder.field(name.as_bytes(), value.as_bytes(), false, &mut block);
            }
            frame::put_headers(&mut self.to_server, stream, &block, end_stream, 16_384);
        }

        fn get(&mut self, stream: u32, path: &str) {
            self.headers(stream, &get(path), true);
        }

        /// Feeds what the client wrote to `server`; the events and the
        /// frames the server wrote back, with header blocks decoded.
        fn exchange(&mut self, server: &mut Connection) -> (Result<(), ConnectionError>, Vec<Event>, Vec<Seen>) {
            let mut events = Vec::new();
            let result = server.recv(&mut self.to_server, &mut events);
            (result, events, self.read(server))
        }

        fn read(&mut self, server: &mut Connection) -> Vec<Seen> {
            let mut out = server.output().split();
            let mut seen = Vec::new();
            while let Some(f) = frame::decode(&mut out, frame::MAX_MAX_FRAME_SIZE).unwrap() {
                seen.push(match f {
                    Frame::Headers {
                        stream,
                        end_stream,
                        fragment,
                        ..
                    } => Seen::Headers(
                        stream,
                        self.decoder.decode(&fragment, 1 << 20).unwrap().fields,
                        end_stream,
                    ),
                    other => Seen::Frame(other),
                });
            }
            seen
        }
    }

    #[derive(Debug, PartialEq)]
    enum Seen {
        Headers(u32, Vec<Field>, bool),
        Frame(Frame),
    }

    fn get(path: &str) -> Vec<(&'static str, &str)> {
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "flow.example.com"),
            (":path", path),
        ]
    }

    fn resets(seen: &[Seen]) -> Vec<(u32, ErrorCode)> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::Frame(Frame::RstStream { stream, code }) => Some((*stream, *code)),
                _ => None,
            })
            .collect()
    }

    fn goaway(seen: &[Seen]) -> Option<ErrorCode> {
        seen.iter().find_map(|s| match s {
            Seen::Frame(Frame::GoAway { code, .. }) => Some(*code),
            _ => None,
        })
    }

    fn started() -> (Connection, Client) {
        let mut server = Connection::new(Limits::default());
        let mut client = Client::new();
        let (result, events, seen) = client.exchange(&mut server);
        result.unwrap();
        assert!(events.is_empty());
        assert!(matches!(seen[0], Seen::Frame(Frame::Settings(_))));
        assert_eq!(
            seen[1],
            Seen::Frame(Frame::WindowUpdate {
                stream: 0,
                increment: 1024 * 1024 - 65_535
            })
        );
        assert_eq!(seen[2], Seen::Frame(Frame::SettingsAck));
        (server, client)
    }

    #[test]
    fn a_get_and_its_answer() {
        let (mut server, mut client) = started();
        client.get(1, "/x?y=1");
        let (result, events, _) = client.exchange(&mut server);
        result.unwrap();
        let [
            Event::Request {
                stream: 1,
                head,
                end_stream: true,
            },
        ] = &events[..]
        else {
            panic!("{events:?}");
        };
        assert_eq!(head.method, "GET");
        assert_eq!(head.path.as_deref(), Some(&b"/x?y=1"[..]));
        assert_eq!(head.authority.as_deref(), Some(&b"flow.example.com"[..]));
        let fields: [(&[u8], &[u8]); 3] = [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"keep-alive"),
            (b"Transfer-Encoding", b"chunked"),
        ];
        assert!(server.send_headers(1, 200, fields, false));
        assert!(server.send_data(1, Bytes::from_static(b"hello"), true));
        let seen = client.read(&mut server);
        assert_eq!(
            seen,
            [
                Seen::Headers(
                    1,
                    vec![
                        (Bytes::from(":status"), Bytes::from("200")),
                        (Bytes::from("content-type"), Bytes::from("text/plain"))
                    ],
                    false
                ),
                Seen::Frame(Frame::Data {
                    stream: 1,
                    end_stream: true,
                    data: Bytes::from("hello"),
                    flow_len: 5
                })
            ]
        );
        assert_eq!(server.active_streams(), 0);
        assert!(
            !server.send_data(1, Bytes::from_static(b"more"), true),
            "the stream is over"
        );
    }

    #[test]
    fn answers_wait_for_the_clients_windows() {
        let (mut server, mut client) = started();
        frame::put_settings(&mut client.to_server, &[(setting::INITIAL_WINDOW_SIZE, 10)]);
        client.get(1, "/");
        client.exchange(&mut server).0.unwrap();
        server.send_headers(1, 200, [], false);
        server.send_data(1, Bytes::from(vec![b'a'; 25]), true);
        let data = |seen: &[Seen]| -> Vec<(usize, bool)> {
            seen.iter()
                .filter_map(|s| match s {
                    Seen::Frame(Frame::Data { data, end_stream, .. }) => Some((data.len(), *end_stream)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(data(&client.read(&mut server)), [(10, false)]);
        assert_eq!(server.buffered(1), 15);
        frame::put_window_update(&mut client.to_server, 1, 5);
        assert_eq!(data(&client.exchange(&mut server).2), [(5, false)]);
        // A larger initial window opens every stream's by the difference.
        frame::put_settings(&mut client.to_server, &[(setting::INITIAL_WINDOW_SIZE, 100)]);
        assert_eq!(data(&client.exchange(&mut server).2), [(10, true)]);
        assert_eq!(server.active_streams(), 0);
    }

    #[test]
    fn the_connection_window_is_shared() {
        let (mut server, mut client) = started();
        client.get(1, "/a");
        client.get(3, "/b");
        client.exchange(&mut server).0.unwrap();
        for stream in [1, 3] {
            server.send_headers(stream, 200, [], false);
            server.send_data(stream, Bytes::from(vec![b'a'; 40_000]), true);
        }
        let sent = |seen: Vec<Seen>| -> usize {
            seen.iter()
                .map(|s| match s {
                    Seen::Frame(Frame::Data { data, .. }) => data.len(),
                    _ => 0,
                })
                .sum()
        };
        assert_eq!(sent(client.read(&mut server)), 65_535);
        frame::put_window_update(&mut client.to_server, 0, 10_000);
        assert_eq!(sent(client.exchange(&mut server).2), 10_000);
        // A frame each in turn: stream 1 had its 40,000 first.
        assert_eq!(server.active_streams(), 1);
        frame::put_window_update(&mut client.to_server, 0, 4_465);
        assert_eq!(sent(client.exchange(&mut server).2), 4_465);
        assert_eq!(server.active_streams(), 0);
    }

    #[test]
    fn a_request_body_is_counted_and_its_window_given_back() {
        let (mut server, mut client) = started();
        let mut head = get("/upload");
        head[0] = (":method", "POST");
        head.push(("content-length", "5"));
        client.headers(1, &head, false);
        frame::put_data(&mut client.to_server, 1, b"hel", false);
        frame::put_data(&mut client.to_server, 1, b"lo", true);
        let (result, events, _) = client.exchange(&mut server);
        result.unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[2],
            Event::Data {
                stream: 1,
                data: Bytes::from("lo"),
                end_stream: true
            }
        );
        // Too much body for the length announced: the stream is reset.
        head[3] = (":path", "/other");
        client.headers(3, &head, false);
        frame::put_data(&mut client.to_server, 3, b"123456", true);
        let (result, events, seen) = client.exchange(&mut server);
        result.unwrap();
        assert_eq!(resets(&seen), [(3, ErrorCode::PROTOCOL_ERROR)]);
        assert_eq!(events.last(), Some(&Event::Reset { stream: 3 }));
        // Half the stream window released: a WINDOW_UPDATE for it.
        let mut head = get("/big");
        head[0] = (":method", "PUT");
        client.headers(5, &head, false);
        let chunk = vec![0u8; 16_384];
        for _ in 0..8 {
            frame::put_data(&mut client.to_server, 5, &chunk, false);
        }
        client.exchange(&mut server).0.unwrap();
        server.release(5, 8 * 16_384);
        let seen = client.read(&mut server);
        assert!(
            seen.contains(&Seen::Frame(Frame::WindowUpdate {
                stream: 5,
                increment: 8 * 16_384
            })),
            "{seen:?}"
        );
    }

    #[test]
    fn data_past_a_window_is_an_error() {
        let (mut server, mut client) = started();
        client.headers(1, &[(":method", "POST"), (":scheme", "https"), (":path", "/")], false);
        let chunk = vec![0u8; 16_384];
        for _ in 0..17 {
            frame::put_data(&mut client.to_server, 1, &chunk, false);
        }
        let (result, _, seen) = client.exchange(&mut server);
        result.unwrap();
        assert_eq!(resets(&seen), [(1, ErrorCode::FLOW_CONTROL_ERROR)]);
        // The connection's window: 1 MiB, never released by the caller.
        let mut server = Connection::new(Limits::default());
        let mut client = Client::new();
        for i in 0..5 {
            let stream = 1 + 2 * i;
            client.headers(
                stream,
                &[(":method", "POST"), (":scheme", "https"), (":path", "/")],
                false,
            );
            for _ in 0..15 {
                frame::put_data(&mut client.to_server, stream, &chunk, false);
            }
        }
        let (result, _, seen) = client.exchange(&mut server);
        assert_eq!(result.unwrap_err().code, ErrorCode::FLOW_CONTROL_ERROR);
        assert_eq!(goaway(&seen), Some(ErrorCode::FLOW_CONTROL_ERROR));
    }

    #[test]
    fn malformed_heads_reset_their_stream_only() {
        let cases: &[&[(&str, &str)]] = &[
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("X-Upper", "1"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("connection", "close"),
            ],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("te", "gzip")],
            &[(":method", "GET"), (":scheme", "https"), ("x", "1"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "https")],
            &[
                (":method", "GET"),
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                (":protocol", "websocket"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("x", "a\r\nb: c"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("x", " padded"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("content-length", "1, 2"),
            ],
            &[(":method", "CONNECT"), (":authority", "a:443"), (":path", "/")],
            &[(":status", "200")],
        ];
        let (mut server, mut client) = started();
        for (i, fields) in cases.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            client.headers(stream, fields, true);
            let (result, events, seen) = client.exchange(&mut server);
            result.unwrap();
            assert!(events.is_empty(), "{fields:?}: {events:?}");
            assert_eq!(resets(&seen), [(stream, ErrorCode::PROTOCOL_ERROR)], "{fields:?}");
        }
        client.get(99, "/");
        let (_, events, _) = client.exchange(&mut server);
        assert!(matches!(events[..], [Event::Request { stream: 99, .. }]));
    }

    #[test]
    fn rapid_reset_ends_the_connection() {
        let (mut server, mut client) = started();
        let mut result = Ok(());
        let mut requests = 0;
        for i in 0..1000 {
            let stream = 1 + 2 * i;
            client.get(stream, "/slow");
            frame::put_rst_stream(&mut client.to_server, stream, ErrorCode::CANCEL);
            let (r, events, seen) = client.exchange(&mut server);
            requests += events.iter().filter(|e| matches!(e, Event::Request { .. })).count();
            result = r;
            if result.is_err() {
                assert_eq!(goaway(&seen), Some(ErrorCode::ENHANCE_YOUR_CALM));
                break;
            }
        }
        assert_eq!(result.unwrap_err().code, ErrorCode::ENHANCE_YOUR_CALM);
        assert!(requests <= 101, "{requests}");
    }

    #[test]
    fn answered_streams_earn_back_the_budget() {
        let (mut server, mut client) = started();
        for i in 0..1000 {
            let stream = 1 + 4 * i;
            // One reset, one answered, for ever: never past the budget.
            client.get(stream, "/");
            frame::put_rst_stream(&mut client.to_server, stream, ErrorCode::CANCEL);
            client.get(stream + 2, "/");
            client.exchange(&mut server).0.unwrap();
            assert!(server.send_headers(stream + 2, 204, [], true));
        }
        assert_eq!(server.active_streams(), 0);
    }

    #[test]
    fn header_blocks_are_bounded_in_bytes_and_frames() {
        let (mut server, mut client) = started();
        let mut block = BytesMut::new();
        client.encoder.begin(&mut block);
        client.encoder.field(b":method", b"GET", false, &mut block);
        frame::put_header(&mut client.to_server, block.len(), kind::HEADERS, 0, 1);
        client.to_server.extend_from_slice(&block);
        for _ in 0..10 {
            frame::put_header(&mut client.to_server, 16_000, kind::CONTINUATION, 0, 1);
            client.to_server.extend_from_slice(&[b'a'; 16_000]);
        }
        let (result, _, seen) = client.exchange(&mut server);
        assert_eq!(result.unwrap_err().code, ErrorCode::ENHANCE_YOUR_CALM);
        assert_eq!(goaway(&seen), Some(ErrorCode::ENHANCE_YOUR_CALM));
        // Empty CONTINUATIONs: bounded by count.
        let (mut server, mut client) = started();
        frame::put_header(&mut client.to_server, 0, kind::HEADERS, 0, 1);
        for _ in 0..100 {
            frame::put_header(&mut client.to_server, 0, kind::CONTINUATION, 0, 1);
        }
        assert_eq!(
            client.exchange(&mut server).0.unwrap_err().code,
            ErrorCode::ENHANCE_YOUR_CALM
        );
        // Another frame in the middle of a block.
        let (mut server, mut client) = started();
        frame::put_header(&mut client.to_server, 0, kind::HEADERS, 0, 1);
        frame::put_ping(&mut client.to_server, false, [0; 8]);
        assert_eq!(
            client.exchange(&mut server).0.unwrap_err().code,
            ErrorCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn a_head_past_the_list_limit_is_answered_431() {
        let (mut server, mut client) = started();
        let big = "b".repeat(17_000);
        let mut fields = get("/");
        fields.push(("x-big", &big));
        client.headers(1, &fields, true);
        let (result, events, seen) = client.exchange(&mut server);
        result.unwrap();
        assert!(events.is_empty());
        assert_eq!(
            seen,
            [Seen::Headers(
                1,
                vec![(Bytes::from(":status"), Bytes::from("431"))],
                true
            )]
        );
    }

    #[test]
    fn streams_past_the_cap_are_refused() {
        let (mut server, mut client) = started();
        for i in 0..101 {
            client.get(1 + 2 * i, "/");
        }
        let (result, events, seen) = client.exchange(&mut server);
        result.unwrap();
        assert_eq!(events.len(), 100);
        assert_eq!(resets(&seen), [(201, ErrorCode::REFUSED_STREAM)]);
    }

    #[test]
    fn stream_rules_between_frames() {
        let protocol_errors: &[fn(&mut BytesMut)] = &[
            |b| frame::put_data(b, 1, b"x", true),
            |b| frame::put_rst_stream(b, 1, ErrorCode::CANCEL),
            |b| frame::put_window_update(b, 1, 1),
            |b| frame::put_header(b, 0, kind::HEADERS, flag::END_HEADERS, 2),
            |b| frame::put_header(b, 0, kind::CONTINUATION, flag::END_HEADERS, 1),
            |b| {
                frame::put_header(b, 4, kind::PUSH_PROMISE, flag::END_HEADERS, 1);
                b.extend_from_slice(&[0, 0, 0, 2]);
            },
        ];
        for (i, write) in protocol_errors.iter().enumerate() {
            let (mut server, mut client) = started();
            write(&mut client.to_server);
            let (result, _, seen) = client.exchange(&mut server);
            assert_eq!(result.unwrap_err().code, ErrorCode::PROTOCOL_ERROR, "case {i}");
            assert_eq!(goaway(&seen), Some(ErrorCode::PROTOCOL_ERROR), "case {i}");
            assert!(server.is_done());
        }
        // A stream counted down from its initial window past 2^31-1.
        let (mut server, mut client) = started();
        client.get(1, "/");
        frame::put_window_update(&mut client.to_server, 1, frame::MAX_WINDOW);
        let (result, _, seen) = client.exchange(&mut server);
        result.unwrap();
        assert_eq!(resets(&seen), [(1, ErrorCode::FLOW_CONTROL_ERROR)]);
        frame::put_window_update(&mut client.to_server, 0, frame::MAX_WINDOW);
        assert_eq!(
            client.exchange(&mut server).0.unwrap_err().code,
            ErrorCode::FLOW_CONTROL_ERROR
        );
    }

    #[test]
    fn the_preface_and_settings_come_first() {
        let mut server = Connection::new(Limits::default());
        let mut events = Vec::new();
        let mut partial = BytesMut::from(&frame::PREFACE[..10]);
        server.recv(&mut partial, &mut events).unwrap();
        let mut wrong = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
        assert!(
            Connection::new(Limits::default())
                .recv(&mut wrong, &mut events)
                .is_err()
        );
        let mut no_settings = BytesMut::from(frame::PREFACE);
        frame::put_ping(&mut no_settings, false, [0; 8]);
        assert!(
            Connection::new(Limits::default())
                .recv(&mut no_settings, &mut events)
                .is_err()
        );
    }

    #[test]
    fn a_ping_flood_waits_for_its_answers_to_be_written() {
        let (mut server, mut client) = started();
        for _ in 0..100_000 {
            frame::put_ping(&mut client.to_server, false, [7; 8]);
        }
        let mut events = Vec::new();
        server.recv(&mut client.to_server, &mut events).unwrap();
        assert!(server.output().len() < OUTPUT_HIGH + 64);
        assert!(!client.to_server.is_empty(), "the rest waits in the client's buffer");
    }

    #[test]
    fn shutdown_lets_streams_in_flight_finish() {
        let (mut server, mut client) = started();
        client.get(1, "/");
        client.exchange(&mut server).0.unwrap();
        server.shutdown();
        client.get(3, "/late");
        let (result, events, seen) = client.exchange(&mut server);
        result.unwrap();
        assert!(events.is_empty(), "a stream after GOAWAY is ignored");
        assert_eq!(goaway(&seen), Some(ErrorCode::NO_ERROR));
        assert!(!server.is_done());
        server.send_headers(1, 200, [], true);
        assert!(server.is_done());
    }

    #[test]
    fn an_early_answer_stops_the_upload() {
        let (mut server, mut client) = started();
        client.headers(1, &[(":method", "POST"), (":scheme", "https"), (":path", "/")], false);
        client.exchange(&mut server).0.unwrap();
        server.send_headers(1, 413, [], true);
        let seen = client.read(&mut server);
        assert_eq!(resets(&seen), [(1, ErrorCode::NO_ERROR)]);
        // What the client had in flight is still counted, and given back.
        frame::put_data(&mut client.to_server, 1, &[0; 1000], false);
        client.exchange(&mut server).0.unwrap();
        assert_eq!(server.active_streams(), 0);
    }
}
