//! RFC 6455 frame headers: parsing and encoding.
//!
//! Both the proxy's tap (which only looks at frames flowing past) and the
//! simulators and load generator (which speak WebSocket themselves) read and
//! write frame headers through these two functions, so there is one place that
//! knows the wire format.

/// A frame's opcode, as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
    /// One of the reserved opcodes (3-7, 11-15): a protocol error.
    Reserved(u8),
}

impl Opcode {
    pub fn from_bits(bits: u8) -> Opcode {
        match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            other => Opcode::Reserved(other),
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
            Opcode::Reserved(bits) => bits & 0x0F,
        }
    }

    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// The fixed part of a frame, before its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1-3 as the top three bits of a nibble (RSV1 = 0b100); extensions such
    /// as permessage-deflate set RSV1.
    pub rsv: u8,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// The longest possible frame header: 2 + 8 (64-bit length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;

/// Control frames carry at most 125 bytes of payload (RFC 6455, 5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Why a frame header is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("control frame with {0} bytes of payload (at most 125 allowed)")]
    ControlTooLong(u64),
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("64-bit payload length with the most significant bit set")]
    LengthOverflow,
    #[error("payload length not in its shortest form")]
    NonMinimalLength,
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is unfinished")]
    UnfinishedMessage,
    #[error("a client sent an unmasked frame")]
    Unmasked,
}

/// Parses a frame header from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold the whole header, otherwise
/// the header and how many bytes it took.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = (buf[0] >> 4) & 0x7;
    let opcode = Opcode::from_bits(buf[0] & 0x0F);
    let masked = buf[1] & 0x80 != 0;
    let short_len = buf[1] & 0x7F;
    let mut pos = 2;
    let payload_len = match short_len {
        126 => {
            if buf.len() < pos + 2 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([buf[2], buf[3]]) as u64;
            pos += 2;
            if len < 126 {
                return Err(FrameError::NonMinimalLength);
            }
            len
        }
        127 => {
            if buf.len() < pos + 8 {
                return Ok(None);
            }
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(bytes);
            pos += 8;
            if len >> 63 != 0 {
                return Err(FrameError::LengthOverflow);
            }
            if len <= u16::MAX as u64 {
                return Err(FrameError::NonMinimalLength);
            }
            len
        }
        n => n as u64,
    };
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&buf[pos..pos + 4]);
        pos += 4;
        Some(key)
    } else {
        None
    };
    if let Opcode::Reserved(bits) = opcode {
        return Err(FrameError::ReservedOpcode(bits));
    }
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if payload_len > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong(payload_len));
        }
    }
    Ok(Some((
        FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        },
        pos,
    )))
}

/// Appends the encoding of `header` to `out`.
pub fn write_header(header: &FrameHeader, out: &mut Vec<u8>) {
    out.push(((header.fin as u8) << 7) | ((header.rsv & 0x7) << 4) | header.opcode.bits());
    let mask_bit = if header.mask.is_some() { 0x80 } else { 0 };
    match header.payload_len {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = header.mask {
        out.extend_from_slice(&key);
    }
}

/// XORs `data` with the masking key, as if `data` started `offset` bytes into
/// the payload. Masking and unmasking are the same operation.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let start = (offset % 4) as usize;
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(start + i) % 4];
    }
}

/// Encodes a whole frame: header plus (masked, when a key is given) payload.
pub fn encode(opcode: Opcode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::with_capacity(MAX_HEADER_LEN + payload.len());
    write_header(&header, &mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// The payload of a close frame: the status code, then a UTF-8 reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // A close payload is a control payload: keep it within 125 bytes.
    let room = (MAX_CONTROL_PAYLOAD as usize) - 2;
    let mut end = reason.len().min(room);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_length_form() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload = vec![7u8; len];
            let frame = encode(Opcode::Binary, true, &payload, Some([1, 2, 3, 4]));
            let (header, used) = parse_header(&frame).unwrap().unwrap();
            assert_eq!(header.payload_len, len as u64);
            assert_eq!(header.mask, Some([1, 2, 3, 4]));
            let mut body = frame[used..].to_vec();
            apply_mask(&mut body, [1, 2, 3, 4], 0);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn needs_more_bytes_for_partial_headers() {
        let frame = encode(Opcode::Text, true, &[0u8; 300], Some([9, 9, 9, 9]));
        for cut in 0..8 {
            assert_eq!(parse_header(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_header(&frame[..8]).unwrap().is_some());
    }

    #[test]
    fn rejects_invalid_control_frames() {
        let mut ping = encode(Opcode::Ping, true, b"x", None);
        ping[0] &= 0x7F; // clear FIN
        assert_eq!(parse_header(&ping), Err(FrameError::FragmentedControl));
        let big = [0x89u8, 126, 0, 200];
        assert_eq!(parse_header(&big), Err(FrameError::ControlTooLong(200)));
        assert_eq!(parse_header(&[0x83, 0]), Err(FrameError::ReservedOpcode(3)));
    }

    #[test]
    fn rejects_non_minimal_lengths() {
        assert_eq!(parse_header(&[0x82, 126, 0, 5]), Err(FrameError::NonMinimalLength));
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&1000u64.to_be_bytes());
        assert_eq!(parse_header(&long), Err(FrameError::NonMinimalLength));
    }

    #[test]
    fn mask_offset_continues_the_key() {
        let key = [0xA, 0xB, 0xC, 0xD];
        let mut whole = b"heartbeat!".to_vec();
        apply_mask(&mut whole, key, 0);
        let mut split = b"heartbeat!".to_vec();
        let (a, b) = split.split_at_mut(3);
        apply_mask(a, key, 0);
        apply_mask(b, key, 3);
        assert_eq!(whole, split);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let payload = close_payload(1001, &reason);
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
