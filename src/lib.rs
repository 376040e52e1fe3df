//! flowgate: run Hazelcast Flow behind a WebSocket-aware load balancer.
//!
//! The library under the `flowgate` binary (whose shell, `src/cmd/`, turns
//! the command line into calls of these modules). From the top down:
//! `tui` (the dashboard), `doctor` (checks any balancer against the Flow
//! guide) and `export` (compose, Traefik and nginx files) are front ends;
//! `monitor` folds Docker's and the proxy's feeds into one picture;
//! `deploy` plans and runs the deployment on Docker; `proxy` is the load
//! balancer and `tls` its certificates; `config`, `net` (the client side),
//! `http2`, `websocket`, `field`, `template`, `serve`, `fsutil`, `clock` and
//! `histogram` are the pieces everything shares. `sim` holds the Flow and Management Center
//! simulators and the load generator. No module imports one above it;
//! ARCHITECTURE.md draws the layers and how data flows between them.

pub mod clock;
pub mod config;
pub mod deploy;
pub mod doctor;
pub mod export;
pub mod field;
pub mod fsutil;
pub mod histogram;
pub mod http2;
pub mod monitor;
pub mod net;
pub mod proxy;
pub mod serve;
pub mod sim;
pub mod template;
pub mod tls;
pub mod tui;
pub mod websocket;
