//! flowgate: run Hazelcast Flow behind a WebSocket-aware load balancer.
//!
//! The binary's commands are thin: `config` reads and validates files,
//! `proxy` is the load balancer, `sim` holds the Flow and Management Center
//! simulators and the load generator, and `websocket` the protocol pieces
//! they share. See ARCHITECTURE.md for how data flows between them.

pub mod clock;
pub mod config;
pub mod deploy;
pub mod doctor;
pub mod export;
pub mod fsutil;
pub mod histogram;
pub mod monitor;
pub mod net;
pub mod proxy;
pub mod serve;
pub mod sim;
pub mod template;
pub mod tls;
pub mod tui;
pub mod websocket;
