//! HPACK (RFC 7541), the header compression of HTTP/2: a decoder for the
//! header blocks clients send, with the limits a proxy facing the internet
//! needs, and an encoder for the answers. Every byte is the peer's: an
//! integer that overflows, an index in neither table, a Huffman string with
//! bad padding, or a table larger than allowed is an error (a connection
//! error, COMPRESSION_ERROR, RFC 9113 4.3), never a panic. A block whose
//! fields add up to more than the caller's limit is still decoded to its
//! end, so the table stays in step with the peer's, but its fields are not
//! kept: a few bytes that name a large table entry again and again cannot
//! make the proxy hold megabytes.
//!
//! The encoder never adds to its dynamic table: each field is sent as a
//! literal not indexed (with the static table's index for its name where
//! there is one), so it keeps no state beyond a size update it owes.

use std::collections::VecDeque;
use std::sync::LazyLock;

use bytes::{BufMut, Bytes, BytesMut};

use super::tables::{HUFFMAN, STATIC};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("the header block ends inside a field")]
    Truncated,
    #[error("an integer in the header block is too large")]
    IntegerOverflow,
    #[error("index {0} is in neither the static nor the dynamic table")]
    BadIndex(usize),
    #[error("a Huffman-coded string is malformed (bad padding or EOS)")]
    Huffman,
    #[error("a table size update to {0} bytes exceeds the {1} allowed")]
    TableTooLarge(usize, usize),
    #[error("a table size update after the first field of a block")]
    LateSizeUpdate,
}

/// One header field: name and value as sent, unchecked (what a name may
/// hold is HTTP's rule, checked by the caller).
pub type Field = (Bytes, Bytes);

/// What RFC 7541 4.1 counts for each entry besides its name and value.
const ENTRY_OVERHEAD: usize = 32;

/// The table size both sides start from (SETTINGS_HEADER_TABLE_SIZE's
/// default, RFC 9113 6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// The dynamic table: newest entry first (index 62 in the combined space).
#[derive(Debug, Default)]
struct Table {
    entries: VecDeque<Field>,
    size: usize,
    capacity: usize,
}

impl Table {
    fn get(&self, index: usize) -> Option<&Field> {
        self.entries.get(index)
    }

    fn insert(&mut self, field: Field) {
        let size = field.0.len() + field.1.len() + ENTRY_OVERHEAD;
        if size > self.capacity {
            // RFC 7541 4.4: an entry larger than the table empties it.
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.size += size;
        self.entries.push_front(field);
        self.evict();
    }

    fn resize(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.capacity {
            let Some((name, value)) = self.entries.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// The fields of one header block.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Block {
    pub fields: Vec<Field>,
    /// The block's size as RFC 9113 6.5.2 counts it (each field's name,
    /// value and 32 bytes), counted to the end even past the limit.
    pub list_size: usize,
    /// The list was larger than the limit: `fields` holds only those
    /// before it was reached.
    pub oversized: bool,
}

/// Decodes the header blocks of one direction of one connection, in order.
#[derive(Debug)]
pub struct Decoder {
    table: Table,
    /// The largest table the peer may ask for: what this side announced as
    /// SETTINGS_HEADER_TABLE_SIZE.
    max_capacity: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_TABLE_SIZE)
    }
}

impl Decoder {
    pub fn new(max_capacity: usize) -> Self {
        Self {
            table: Table {
                capacity: max_capacity,
                ..Table::default()
            },
            max_capacity,
        }
    }

    /// Decodes one complete block (HEADERS and its CONTINUATIONs joined).
    /// Fields past `max_list_size` are counted but not kept.
    pub fn decode(&mut self, block: &Bytes, max_list_size: usize) -> Result<Block, HpackError> {
        let mut out = Block::default();
        let mut pos = 0;
        let mut fields_seen = false;
        while pos < block.len() {
            let first = block[pos];
            let field = if first & 0x80 != 0 {
                // Indexed field (6.1).
                let index = integer(block, &mut pos, 7)?;
                self.lookup(index)?
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing (6.2.1).
                let field = self.literal(block, &mut pos, 6)?;
                self.table.insert(field.clone());
                field
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (6.3): only before the first field.
                if fields_seen {
                    return Err(HpackError::LateSizeUpdate);
                }
                let size = integer(block, &mut pos, 5)?;
                if size > self.max_capacity {
                    return Err(HpackError::TableTooLarge(size, self.max_capacity));
                }
                self.table.resize(size);
                continue;
            } else {
                // Literal without indexing (6.2.2) or never indexed (6.2.3).
                self.literal(block, &mut pos, 4)?
            };
            fields_seen = true;
            out.list_size = out
                .list_size
                .saturating_add(field.0.len() + field.1.len() + ENTRY_OVERHEAD);
            if out.list_size > max_list_size {
                out.oversized = true;
            } else {
                out.fields.push(field);
            }
        }
        if out.oversized {
            out.fields.clear();
        }
        Ok(out)
    }

    fn lookup(&self, index: usize) -> Result<Field, HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            1..=61 => {
                let (name, value) = STATIC[index - 1];
                Ok((Bytes::from_static(name), Bytes::from_static(value)))
            }
            _ => self.table.get(index - 62).cloned().ok_or(HpackError::BadIndex(index)),
        }
    }

    /// A literal field whose name is indexed (prefix bits non-zero) or
    /// follows as a string.
    fn literal(&self, block: &Bytes, pos: &mut usize, prefix: u8) -> Result<Field, HpackError> {
        let index = integer(block, pos, prefix)?;
        let name = if index == 0 {
            string(block, pos)?
        } else {
            self.lookup(index)?.0
        };
        let value = string(block, pos)?;
        Ok((name, value))
    }
}

/// An integer with an N-bit prefix (5.1). Values past what any limit here
/// allows (2^28 and more) are refused rather than computed.
fn integer(block: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let mask = (1u8 << prefix) - 1;
    let first = *block.get(*pos).ok_or(HpackError::Truncated)?;
    *pos += 1;
    let mut value = usize::from(first & mask);
    if value < usize::from(mask) {
        return Ok(value);
    }
    for shift in (0..28).step_by(7) {
        let byte = *block.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::IntegerOverflow)
}

/// A string literal (5.2): a slice of the block when sent as is.
fn string(block: &Bytes, pos: &mut usize) -> Result<Bytes, HpackError> {
    let huffman = block.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, pos, 7)?;
    let end = pos.checked_add(len).filter(|&end| end <= block.len());
    let end = end.ok_or(HpackError::Truncated)?;
    let raw = block.slice(*pos..end);
    *pos = end;
    if huffman {
        let mut out = Vec::with_capacity(len + len / 2);
        huffman_decode(&raw, &mut out)?;
        Ok(Bytes::from(out))
    } else {
        Ok(raw)
    }
}

/// The canonical form of the Huffman code, for decoding: symbols sorted by
/// code length, and per length the first code and the code past the last.
struct Canonical {
    symbols: [u16; 257],
    /// Index into `symbols` of the first symbol of each length.
    offset: [usize; 31],
    first: [u32; 31],
    /// One past the last code of each length (equal to `first` when no
    /// symbol has that length).
    limit: [u32; 31],
}

static CANONICAL: LazyLock<Canonical> = LazyLock::new(|| {
    let mut symbols: [u16; 257] = std::array::from_fn(|s| s as u16);
    symbols.sort_by_key(|&s| (HUFFMAN[usize::from(s)].1, s));
    let mut table = Canonical {
        symbols,
        offset: [0; 31],
        first: [0; 31],
        limit: [0; 31],
    };
    let mut code = 0u32;
    let mut at = 0;
    for len in 1..=30u8 {
        table.offset[usize::from(len)] = at;
        table.first[usize::from(len)] = code;
        while at < 257 && HUFFMAN[usize::from(table.symbols[at])].1 == len {
            code += 1;
            at += 1;
        }
        table.limit[usize::from(len)] = code;
        code <<= 1;
    }
    table
});

/// Decodes a Huffman-coded string (5.2, Appendix B). The padding must be
/// shorter than 8 bits and all ones (the start of EOS); EOS itself may
/// not appear.
pub fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let table = &*CANONICAL;
    let mut bits: u64 = 0;
    let mut count: u32 = 0;
    let mut input = src.iter();
    loop {
        while count < 30 {
            let Some(&byte) = input.next() else { break };
            bits = (bits << 8) | u64::from(byte);
            count += 8;
        }
        if count == 0 {
            return Ok(());
        }
        let mut symbol = None;
        for len in 5..=count.min(30) {
            let code = ((bits >> (count - len)) & ((1 << len) - 1)) as u32;
            let len = len as usize;
            if code < table.limit[len] {
                symbol = Some((
                    table.symbols[table.offset[len] + (code - table.first[len]) as usize],
                    len,
                ));
                break;
            }
        }
        match symbol {
            Some((256, _)) => return Err(HpackError::Huffman),
            Some((symbol, len)) => {
                out.push(symbol as u8);
                count -= len as u32;
                bits &= (1 << count) - 1;
            }
            // Only the end can be left without a symbol (every 30 bits hold
            // one): it must be padding.
            None if count < 8 && bits == (1 << count) - 1 => return Ok(()),
            None => return Err(HpackError::Huffman),
        }
    }
}

/// Huffman-codes `src` onto `out` (padding with the start of EOS).
pub fn huffman_encode(src: &[u8], out: &mut BytesMut) {
    let mut bits: u64 = 0;
    let mut count: u32 = 0;
    for &byte in src {
        let (code, len) = HUFFMAN[usize::from(byte)];
        bits = (bits << len) | u64::from(code);
        count += u32::from(len);
        while count >= 8 {
            count -= 8;
            out.put_u8((bits >> count) as u8);
        }
        bits &= (1 << count) - 1;
    }
    if count > 0 {
        let pad = 8 - count;
        out.put_u8(((bits << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// The length `huffman_encode` would produce.
pub fn huffman_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| usize::from(HUFFMAN[usize::from(b)].1)).sum();
    bits.div_ceil(8)
}

/// Encodes header blocks for one direction of one connection.
#[derive(Debug)]
pub struct Encoder {
    /// A size update is owed at the start of the next block: the first
    /// block says the table is empty and stays so (size 0), and so does the
    /// block after the peer changes SETTINGS_HEADER_TABLE_SIZE (RFC 7541
    /// 4.2: a decoder may insist on it when its limit went down).
    size_update_due: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Self { size_update_due: true }
    }
}

impl Encoder {
    /// The peer announced a new SETTINGS_HEADER_TABLE_SIZE.
    pub fn peer_table_size_changed(&mut self) {
        self.size_update_due = true;
    }

    /// Starts a block: call before the first `field` of each block.
    pub fn begin(&mut self, dst: &mut BytesMut) {
        if std::mem::take(&mut self.size_update_due) {
            dst.put_u8(0x20);
        }
    }

    /// `:status`, indexed when the static table has it.
    pub fn status(&mut self, status: u16, dst: &mut BytesMut) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                let mut digits = [0u8; 3];
                let status = status.min(999);
                digits[0] = b'0' + (status / 100) as u8;
                digits[1] = b'0' + (status / 10 % 10) as u8;
                digits[2] = b'0' + (status % 10) as u8;
                put_integer(dst, 0x00, 4, 8);
                put_string(dst, &digits);
                return;
            }
        };
        put_integer(dst, 0x80, 7, index);
    }

    /// One field, literal and not indexed. `name` must already be
    /// lower-case (RFC 9113 8.2.1); `sensitive` fields (cookies, say) are
    /// marked never to be indexed by any later hop (RFC 7541 6.2.3).
    pub fn field(&mut self, name: &[u8], value: &[u8], sensitive: bool, dst: &mut BytesMut) {
        let pattern = if sensitive { 0x10 } else { 0x00 };
        match static_name_index(name) {
            Some(index) => put_integer(dst, pattern, 4, index),
            None => {
                dst.put_u8(pattern);
                put_string(dst, name);
            }
        }
        put_string(dst, value);
    }
}

/// A string literal: Huffman-coded when that is shorter.
fn put_string(dst: &mut BytesMut, value: &[u8]) {
    let coded = huffman_len(value);
    if coded < value.len() {
        put_integer(dst, 0x80, 7, coded);
        huffman_encode(value, dst);
    } else {
        put_integer(dst, 0x00, 7, value.len());
        dst.put_slice(value);
    }
}

fn put_integer(dst: &mut BytesMut, pattern: u8, prefix: u8, mut value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        dst.put_u8(pattern | value as u8);
        return;
    }
    dst.put_u8(pattern | mask as u8);
    value -= mask;
    while value >= 0x80 {
        dst.put_u8((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// The static table's first index for a name, if it has the name.
///
/// A match rather than a scan of `STATIC`: this runs for every field of
/// every answer. A test checks it against the table.
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Bytes {
        let s: String = s.split_whitespace().collect();
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<_>>(),
        )
    }

    fn fields(block: &Block) -> Vec<(String, String)> {
        block
            .fields
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn static_name_index_agrees_with_the_table() {
        for (at, (name, _)) in STATIC.iter().enumerate() {
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(
                static_name_index(name),
                Some(first),
                "{}",
                String::from_utf8_lossy(name)
            );
            assert!(first <= at + 1);
        }
        for other in [
            &b""[..],
            b"x-request-id",
            b"Content-Type",
            b":protocol",
            b"content-length ",
        ] {
            assert_eq!(static_name_index(other), None);
        }
    }

    #[test]
    fn the_code_is_canonical_and_complete() {
        // Codes of one length are consecutive, in symbol order, and the
        // lengths fill the code space exactly (Kraft sum 1): the decoder's
        // assumptions.
        let table = &*CANONICAL;
        for (at, &symbol) in table.symbols.iter().enumerate() {
            let (code, len) = HUFFMAN[usize::from(symbol)];
            let len = usize::from(len);
            assert_eq!(
                code,
                table.first[len] + (at - table.offset[len]) as u32,
                "symbol {symbol}"
            );
        }
        let kraft: f64 = HUFFMAN.iter().map(|&(_, len)| 0.5f64.powi(i32::from(len))).sum();
        assert!((kraft - 1.0).abs() < 1e-12);
    }

    #[test]
    fn rfc_7541_c3_requests_without_huffman_share_the_table() {
        let mut decoder = Decoder::default();
        let first = decoder
            .decode(&hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"), 1 << 20)
            .unwrap();
        assert_eq!(
            fields(&first),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        let second = decoder
            .decode(&hex("8286 84be 5808 6e6f 2d63 6163 6865"), 1 << 20)
            .unwrap();
        assert_eq!(
            fields(&second),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        let third = decoder
            .decode(
                &hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"),
                1 << 20,
            )
            .unwrap();
        assert_eq!(third.fields[4].0, "custom-key");
        assert_eq!(third.fields[3].1, "www.example.com");
        assert_eq!(decoder.table.size, 164);
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman() {
        let mut decoder = Decoder::default();
        let first = decoder
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"), 1 << 20)
            .unwrap();
        assert_eq!(first.fields[3].1, "www.example.com");
        let second = decoder.decode(&hex("8286 84be 5886 a8eb 1064 9cbf"), 1 << 20).unwrap();
        assert_eq!(
            second.fields[4],
            (Bytes::from("cache-control"), Bytes::from("no-cache"))
        );
        let third = decoder
            .decode(
                &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
                1 << 20,
            )
            .unwrap();
        assert_eq!(
            third.fields[4],
            (Bytes::from("custom-key"), Bytes::from("custom-value"))
        );
        assert_eq!(decoder.table.size, 164);
    }

    #[test]
    fn rfc_7541_c6_responses_evict_from_a_256_byte_table() {
        let mut decoder = Decoder::new(256);
        let first = decoder
            .decode(
                &hex(
                    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
                     2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                ),
                1 << 20,
            )
            .unwrap();
        assert_eq!(
            fields(&first),
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(decoder.table.size, 222);
        decoder.decode(&hex("4883 640e ff c1c0 bf"), 1 << 20).unwrap();
        assert_eq!(decoder.table.size, 222);
        let third = decoder
            .decode(
                &hex(
                    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
                     77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
                     9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                ),
                1 << 20,
            )
            .unwrap();
        assert_eq!(
            third.fields[5].1,
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
        );
        assert_eq!(decoder.table.size, 215);
        assert_eq!(decoder.table.entries.len(), 3);
    }

    #[test]
    fn hostile_blocks_are_errors() {
        let cases: &[(&str, HpackError)] = &[
            ("80", HpackError::BadIndex(0)),
            ("be", HpackError::BadIndex(62)),
            ("ff ff ff ff ff ff 01", HpackError::IntegerOverflow),
            ("ff", HpackError::Truncated),
            ("40 05 61", HpackError::Truncated),
            // A table larger than announced.
            ("3f e2 1f", HpackError::TableTooLarge(4097, 4096)),
            // A size update after a field.
            ("82 20", HpackError::LateSizeUpdate),
            // Huffman: EOS coded in full (30 ones), padding of 8 ones,
            // padding that is not all ones.
            ("00 81 61 84 ff ff ff fc", HpackError::Huffman),
            ("00 81 61 82 1f ff", HpackError::Huffman),
            ("00 81 61 81 00", HpackError::Huffman),
        ];
        for (block, expected) in cases {
            let mut decoder = Decoder::default();
            let got = decoder.decode(&hex(block), 1 << 20);
            assert_eq!(got.as_ref().err(), Some(expected), "{block}");
        }
    }

    #[test]
    fn a_block_past_the_list_limit_keeps_no_fields_but_updates_the_table() {
        // A 4,000-byte entry, then the same entry named 100 times by one
        // byte each: 400 KB of fields from 4 KB of block.
        let mut block = BytesMut::new();
        block.put_u8(0x40);
        put_string(&mut block, b"x-big");
        put_integer(&mut block, 0, 7, 3900);
        block.put_slice(&[b'a'; 3900]);
        block.put_slice(&[0xbe; 100]);
        let mut decoder = Decoder::default();
        let decoded = decoder.decode(&block.freeze(), 16 * 1024).unwrap();
        assert!(decoded.oversized);
        assert!(decoded.fields.is_empty());
        assert_eq!(decoded.list_size, 101 * (5 + 3900 + 32));
        // The table holds the entry: the next block may name it.
        let next = decoder.decode(&Bytes::from_static(&[0xbe]), 16 * 1024).unwrap();
        assert_eq!(next.fields[0].0, "x-big");
    }

    #[test]
    fn an_entry_larger_than_the_table_empties_it() {
        let mut decoder = Decoder::new(100);
        decoder.decode(&hex("40 01 61 01 62"), 1 << 20).unwrap();
        assert_eq!(decoder.table.entries.len(), 1);
        let mut block = BytesMut::new();
        block.put_u8(0x40);
        put_string(&mut block, b"n");
        put_string(&mut block, &[b'v'; 80]);
        decoder.decode(&block.freeze(), 1 << 20).unwrap();
        assert!(decoder.table.entries.is_empty());
        assert_eq!(decoder.table.size, 0);
    }

    #[test]
    fn huffman_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for end in [0, 1, 2, 7, 100, all.len()] {
            let mut coded = BytesMut::new();
            huffman_encode(&all[..end], &mut coded);
            assert_eq!(coded.len(), huffman_len(&all[..end]));
            let mut back = Vec::new();
            huffman_decode(&coded, &mut back).unwrap();
            assert_eq!(back, &all[..end]);
        }
    }

    #[test]
    fn what_the_encoder_writes_decodes_to_the_same_fields() {
        let mut encoder = Encoder::default();
        let mut decoder = Decoder::default();
        for round in 0..2 {
            let mut block = BytesMut::new();
            encoder.begin(&mut block);
            if round == 0 {
                assert_eq!(block[0], 0x20, "the first block starts with a size update");
            } else {
                assert!(block.is_empty());
            }
            encoder.status(if round == 0 { 200 } else { 302 }, &mut block);
            encoder.field(b"content-type", b"text/plain", false, &mut block);
            encoder.field(b"x-custom", b"a value of some length", false, &mut block);
            encoder.field(b"set-cookie", b"id=1", true, &mut block);
            let decoded = decoder.decode(&block.freeze(), 1 << 20).unwrap();
            let status = if round == 0 { "200" } else { "302" };
            assert_eq!(
                fields(&decoded),
                pairs(&[
                    (":status", status),
                    ("content-type", "text/plain"),
                    ("x-custom", "a value of some length"),
                    ("set-cookie", "id=1")
                ])
            );
        }
        assert!(decoder.table.entries.is_empty());
    }
}
