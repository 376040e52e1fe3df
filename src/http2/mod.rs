//! HTTP/2's wire pieces (RFC 9113 frames, RFC 7541 HPACK), pure functions
//! over bytes with no I/O: the proxy's own HTTP/2 server is built on them,
//! as `websocket` holds RFC 6455's pieces for the tunnel and the tap.

pub mod frame;
pub mod hpack;
pub mod server;
mod tables;
