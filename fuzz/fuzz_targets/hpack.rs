//! Fuzzes HPACK (`http2::hpack`): arbitrary blocks through one decoder in
//! turn (errors are fine, panics are not, and a block's kept fields never
//! exceed its limit), and Huffman coding round trips for any bytes.

#![no_main]

use bytes::{Bytes, BytesMut};
use flowgate::http2::hpack::{Decoder, huffman_decode, huffman_encode, huffman_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(4096);
    for block in data.split(|&b| b == 0xff) {
        if let Ok(decoded) = decoder.decode(&Bytes::copy_from_slice(block), 1024) {
            let kept: usize = decoded.fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
            assert!(kept <= 1024);
            assert_eq!(decoded.oversized, decoded.list_size > 1024);
        }
    }
    let mut coded = BytesMut::new();
    huffman_encode(data, &mut coded);
    assert_eq!(coded.len(), huffman_len(data));
    let mut back = Vec::new();
    huffman_decode(&coded, &mut back).expect("what the encoder writes decodes");
    assert_eq!(back, data);
    let mut any = Vec::new();
    let _ = huffman_decode(data, &mut any);
});
