//! An incremental RFC 6455 frame parser for bytes flowing through the proxy.
//!
//! The proxy copies WebSocket bytes between client and backend unchanged; the
//! tap watches them on the way past to count frames, heartbeats and close
//! codes. It keeps at most one frame header and a short payload prefix, never
//! a whole message, so a session costs the same memory whatever its traffic.

use super::frame::{self, FrameError, FrameHeader, MAX_HEADER_LEN, Opcode};

/// How many payload bytes of each frame the tap keeps (unmasked): enough for
/// a close code and reason, or to recognise a heartbeat message.
pub const PREFIX_LEN: usize = 128;

/// One frame the tap has seen in full.
#[derive(Debug)]
pub struct FrameSeen<'a> {
    pub opcode: Opcode,
    pub fin: bool,
    pub payload_len: u64,
    /// The opcode of the message this frame belongs to: `Text` for a
    /// continuation of a text message.
    pub message_opcode: Opcode,
    /// Up to [`PREFIX_LEN`] bytes of the payload, unmasked.
    pub prefix: &'a [u8],
}

impl FrameSeen<'_> {
    /// The status code of a close frame, when it carries one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == Opcode::Close && self.prefix.len() >= 2)
            .then(|| u16::from_be_bytes([self.prefix[0], self.prefix[1]]))
    }
}

#[derive(Debug)]
struct InFrame {
    header: FrameHeader,
    consumed: u64,
}

/// Parser state for one direction of one WebSocket session.
#[derive(Debug)]
pub struct FrameTap {
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    frame: Option<InFrame>,
    /// The opcode of the fragmented data message in progress, if any.
    message: Option<Opcode>,
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    /// Frames must be masked: they come from a client (RFC 6455, 5.1).
    from_client: bool,
}

impl Default for FrameTap {
    fn default() -> Self {
        FrameTap {
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            frame: None,
            message: None,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            from_client: false,
        }
    }
}

impl FrameTap {
    pub fn new() -> Self {
        Self::default()
    }

    /// A tap on what a client sends: an unmasked frame is a protocol error.
    pub fn from_client() -> Self {
        FrameTap {
            from_client: true,
            ..Self::default()
        }
    }

    /// True between frames: a frame written to this direction now would not
    /// split another one.
    pub fn at_boundary(&self) -> bool {
        self.frame.is_none() && self.header_len == 0
    }

    /// Feeds the next bytes of the stream, calling `on_frame` for every frame
    /// completed by them. After an error the stream cannot be followed any
    /// more; the caller should stop feeding this tap.
    pub fn feed(&mut self, mut data: &[u8], on_frame: &mut impl FnMut(&FrameSeen<'_>)) -> Result<(), FrameError> {
        while !data.is_empty() {
            if self.frame.is_none() {
                data = self.take_header(data)?;
                if self.frame.is_none() {
                    continue;
                }
                // A frame with no payload is complete as soon as its header is.
                self.finish_if_done(on_frame);
                continue;
            }
            let Some(current) = self.frame.as_mut() else {
                continue;
            };
            let remaining = current.header.payload_len - current.consumed;
            let take = (remaining.min(data.len() as u64)) as usize;
            let room = PREFIX_LEN - self.prefix_len;
            if room > 0 {
                let keep = take.min(room);
                let dst = &mut self.prefix[self.prefix_len..self.prefix_len + keep];
                dst.copy_from_slice(&data[..keep]);
                if let Some(key) = current.header.mask {
                    frame::apply_mask(dst, key, current.consumed);
                }
                self.prefix_len += keep;
            }
            current.consumed += take as u64;
            data = &data[take..];
            self.finish_if_done(on_frame);
        }
        Ok(())
    }

    /// Moves header bytes from `data` into the header buffer and, once a whole
    /// header is there, starts the frame. Returns the unconsumed bytes.
    fn take_header<'d>(&mut self, data: &'d [u8]) -> Result<&'d [u8], FrameError> {
        let before = self.header_len;
        let copy = (MAX_HEADER_LEN - before).min(data.len());
        self.header[before..before + copy].copy_from_slice(&data[..copy]);
        self.header_len += copy;
        match frame::parse_header(&self.header[..self.header_len])? {
            None => {
                self.header_len = before + copy;
                Ok(&data[copy..])
            }
            Some((header, used)) => {
                if self.from_client && header.mask.is_none() {
                    return Err(FrameError::Unmasked);
                }
                self.check_sequence(&header)?;
                self.header_len = 0;
                self.prefix_len = 0;
                self.frame = Some(InFrame { header, consumed: 0 });
                Ok(&data[used - before..])
            }
        }
    }

    fn check_sequence(&mut self, header: &FrameHeader) -> Result<(), FrameError> {
        match header.opcode {
            Opcode::Continuation if self.message.is_none() => Err(FrameError::UnexpectedContinuation),
            Opcode::Text | Opcode::Binary if self.message.is_some() => Err(FrameError::UnfinishedMessage),
            _ => Ok(()),
        }
    }

    fn finish_if_done(&mut self, on_frame: &mut impl FnMut(&FrameSeen<'_>)) {
        let Some(current) = &self.frame else { return };
        if current.consumed < current.header.payload_len {
            return;
        }
        let header = current.header;
        let message_opcode = match header.opcode {
            Opcode::Continuation => self.message.unwrap_or(Opcode::Continuation),
            other => other,
        };
        on_frame(&FrameSeen {
            opcode: header.opcode,
            fin: header.fin,
            payload_len: header.payload_len,
            message_opcode,
            prefix: &self.prefix[..self.prefix_len],
        });
        match header.opcode {
            Opcode::Text | Opcode::Binary if !header.fin => self.message = Some(header.opcode),
            Opcode::Continuation if header.fin => self.message = None,
            _ => {}
        }
        self.frame = None;
        self.prefix_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::frame::{close_payload, encode};

    #[derive(Debug, PartialEq)]
    struct Seen {
        opcode: Opcode,
        message_opcode: Opcode,
        fin: bool,
        len: u64,
        prefix: Vec<u8>,
    }

    impl Seen {
        fn of(f: &FrameSeen<'_>) -> Self {
            Seen {
                opcode: f.opcode,
                message_opcode: f.message_opcode,
                fin: f.fin,
                len: f.payload_len,
                prefix: f.prefix.to_vec(),
            }
        }
    }

    fn run(tap: &mut FrameTap, chunks: &[&[u8]]) -> Result<Vec<Seen>, FrameError> {
        let mut seen = Vec::new();
        for chunk in chunks {
            tap.feed(chunk, &mut |f| seen.push(Seen::of(f)))?;
        }
        Ok(seen)
    }

    /// A small deterministic generator, so the randomised tests below repeat.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn unmasks_the_prefix_and_reads_close_codes() {
        let mut tap = FrameTap::new();
        let close = encode(
            Opcode::Close,
            true,
            &close_payload(1001, "going away"),
            Some([5, 6, 7, 8]),
        );
        let mut code = None;
        tap.feed(&close, &mut |f| code = f.close_code()).unwrap();
        assert_eq!(code, Some(1001));
        assert!(tap.at_boundary());
    }

    #[test]
    fn follows_fragmented_messages_with_interleaved_control_frames() {
        let mut stream = encode(Opcode::Text, false, b"heart", Some([1, 1, 1, 1]));
        stream.extend(encode(Opcode::Ping, true, b"", Some([2, 2, 2, 2])));
        stream.extend(encode(Opcode::Continuation, true, b"beat", Some([3, 3, 3, 3])));
        let seen = run(&mut FrameTap::new(), &[&stream]).unwrap();
        let kinds: Vec<_> = seen.iter().map(|s| (s.opcode, s.message_opcode, s.fin)).collect();
        assert_eq!(
            kinds,
            vec![
                (Opcode::Text, Opcode::Text, false),
                (Opcode::Ping, Opcode::Ping, true),
                (Opcode::Continuation, Opcode::Text, true),
            ]
        );
        assert_eq!(seen[0].prefix, b"heart");
        assert_eq!(seen[2].prefix, b"beat");
    }

    #[test]
    fn rejects_continuation_without_a_message_and_interrupted_messages() {
        let lone = encode(Opcode::Continuation, true, b"x", None);
        assert_eq!(
            run(&mut FrameTap::new(), &[&lone]).unwrap_err(),
            FrameError::UnexpectedContinuation
        );
        let mut stream = encode(Opcode::Binary, false, b"a", None);
        stream.extend(encode(Opcode::Text, true, b"b", None));
        assert_eq!(
            run(&mut FrameTap::new(), &[&stream]).unwrap_err(),
            FrameError::UnfinishedMessage
        );
    }

    #[test]
    fn keeps_only_a_prefix_of_large_frames() {
        let payload = vec![b'z'; 1 << 20];
        let frame = encode(Opcode::Binary, true, &payload, Some([9, 8, 7, 6]));
        let seen = run(&mut FrameTap::new(), &[&frame]).unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].len, 1 << 20);
        assert_eq!(seen[0].prefix, vec![b'z'; PREFIX_LEN]);
    }

    /// Property: however a stream of valid frames is cut into chunks, the tap
    /// reports the same frames, with the same unmasked prefixes, and is at a
    /// boundary exactly when a whole number of frames has been fed.
    #[test]
    fn any_chunking_reports_the_same_frames() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..300 {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            let mut boundaries = vec![0usize];
            let mut in_message: Option<Opcode> = None;
            for _ in 0..rng.below(12) + 1 {
                let control = rng.below(4) == 0;
                let (opcode, fin) = if control {
                    (if rng.below(2) == 0 { Opcode::Ping } else { Opcode::Pong }, true)
                } else {
                    let fin = rng.below(3) != 0;
                    match in_message {
                        Some(_) => (Opcode::Continuation, fin),
                        None => (
                            if rng.below(2) == 0 {
                                Opcode::Text
                            } else {
                                Opcode::Binary
                            },
                            fin,
                        ),
                    }
                };
                let len = if control {
                    rng.below(126) as usize
                } else {
                    [0, 1, 125, 126, 300, 70_000][rng.below(6) as usize]
                };
                let payload: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                let mask = (rng.below(2) == 0).then(|| (rng.next() as u32).to_be_bytes());
                stream.extend(encode(opcode, fin, &payload, mask));
                boundaries.push(stream.len());
                let message_opcode = match opcode {
                    Opcode::Continuation => in_message.unwrap_or(opcode),
                    other => other,
                };
                match opcode {
                    Opcode::Text | Opcode::Binary if !fin => in_message = Some(opcode),
                    Opcode::Continuation if fin => in_message = None,
                    _ => {}
                }
                expected.push(Seen {
                    opcode,
                    message_opcode,
                    fin,
                    len: len as u64,
                    prefix: payload[..len.min(PREFIX_LEN)].to_vec(),
                });
            }
            let mut tap = FrameTap::new();
            let mut seen = Vec::new();
            let mut pos = 0;
            while pos < stream.len() {
                let max_step = if rng.below(4) == 0 { 20 } else { 5000 };
                let step = (rng.below(max_step) + 1) as usize;
                let end = (pos + step).min(stream.len());
                tap.feed(&stream[pos..end], &mut |f| seen.push(Seen::of(f))).unwrap();
                assert_eq!(tap.at_boundary(), boundaries.contains(&end), "round {round} at {end}");
                pos = end;
            }
            assert_eq!(seen, expected, "round {round}");
        }
    }

    /// Property: arbitrary bytes never panic the tap; they are either followed
    /// or rejected with an error.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = XorShift(42);
        for _ in 0..2000 {
            let len = rng.below(64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            // Whatever the bytes, the tap reports the same frames and the
            // same verdict whether it gets them at once or byte by byte.
            let whole = seen_in(&mut std::iter::once(bytes.as_slice()));
            let bytewise = seen_in(&mut bytes.chunks(1));
            assert_eq!(whole, bytewise, "{bytes:?}");
        }
    }

    fn seen_in(chunks: &mut dyn Iterator<Item = &[u8]>) -> (Vec<(u8, bool, u64)>, Option<FrameError>) {
        let mut tap = FrameTap::new();
        let mut seen = Vec::new();
        for chunk in chunks {
            if let Err(e) = tap.feed(chunk, &mut |f| seen.push((f.opcode.bits(), f.fin, f.payload_len))) {
                return (seen, Some(e));
            }
        }
        (seen, None)
    }
}
