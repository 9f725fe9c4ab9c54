//! The `weft` package's library target: the HTTP + WebSocket server behind `weft serve`, kept
//! here so integration tests can drive its router in process (`server::app`).
pub mod server;
