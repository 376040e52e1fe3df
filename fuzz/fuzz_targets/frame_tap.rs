//! Fuzzes the proxy's WebSocket frame tap with arbitrary bytes cut into
//! arbitrary chunks. The tap must never panic, and how the stream is cut
//! must not change what it reports: the frames seen feeding byte by byte
//! equal the frames seen feeding everything at once.

#![no_main]

use flowgate::websocket::tap::FrameTap;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Seen {
    opcode: u8,
    fin: bool,
    len: u64,
    prefix: Vec<u8>,
}

fn run(chunks: &mut dyn Iterator<Item = &[u8]>) -> (Vec<Seen>, bool) {
    let mut tap = FrameTap::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        let result = tap.feed(chunk, &mut |f| {
            seen.push(Seen { opcode: f.opcode.bits(), fin: f.fin, len: f.payload_len, prefix: f.prefix.to_vec() })
        });
        if result.is_err() {
            return (seen, false);
        }
    }
    (seen, true)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let whole = run(&mut std::iter::once(stream));
    let step = (cut as usize % 17) + 1;
    let chunked = run(&mut stream.chunks(step));
    assert_eq!(whole, chunked, "chunks of {step} bytes changed what the tap saw");
});
