//! Fuzzes the proxy's HTTP/2 server (`http2::server`) with arbitrary bytes
//! after a valid preface and SETTINGS, fed in small pieces so frames split
//! anywhere. Every request it reports is answered, so the sending side runs
//! too. Nothing may panic; what the server writes must always read back as
//! frames; and its events must keep the stream rules: one request per
//! stream, never body data for a stream after its end or before its head.

#![no_main]

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use flowgate::http2::frame;
use flowgate::http2::server::{Connection, Event, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut conn = Connection::new(Limits::default());
    let mut input = BytesMut::from(frame::PREFACE);
    frame::put_settings(&mut input, &[]);
    let mut events = Vec::new();
    let (mut open, mut seen) = (HashSet::new(), HashSet::new());
    for piece in data.chunks(7) {
        input.extend_from_slice(piece);
        let result = conn.recv(&mut input, &mut events);
        for event in events.drain(..) {
            match event {
                Event::Request { stream, end_stream, .. } => {
                    assert!(seen.insert(stream), "stream {stream} began twice");
                    if !end_stream {
                        open.insert(stream);
                    }
                    if conn.send_headers(stream, 200, [(&b"content-type"[..], &b"text/plain"[..])], false) {
                        conn.send_data(stream, Bytes::from_static(b"answer"), true);
                    }
                }
                Event::Data { stream, data, end_stream } => {
                    assert!(open.contains(&stream), "body data for stream {stream} outside its body");
                    conn.release(stream, data.len());
                    if end_stream {
                        open.remove(&stream);
                    }
                }
                Event::Trailers { stream, .. } => assert!(open.remove(&stream), "trailers outside a body"),
                Event::Reset { stream } => {
                    open.remove(&stream);
                }
            }
        }
        let mut out = conn.output().split();
        while frame::decode(&mut out, frame::MAX_MAX_FRAME_SIZE)
            .expect("the server writes only valid frames")
            .is_some()
        {}
        assert!(out.is_empty(), "the server wrote part of a frame");
        if result.is_err() {
            assert!(conn.is_done());
            break;
        }
    }
});
