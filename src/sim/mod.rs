//! Stand-ins for what cannot run here (Flow and Management Center need a
//! registry and a licence) and a load generator that behaves like Flow UI
//! users. They are real servers and clients on real sockets.

pub mod flow;
pub mod loadgen;
pub mod mc;
