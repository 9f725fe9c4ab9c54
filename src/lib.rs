//! The `weft` package's library target: the HTTP + WebSocket server behind `weft serve`, kept
//! here so integration tests can drive its router in process (`server::app`), and the ComfyUI
//! conversions it shares with the command line (`comfy`), and the file-watch helpers `weft
//! watch` shares with it (`file_watch`), and the model-folder flags (`model_args`), and the contact sheets of sweeps (`grid`).
pub mod comfy;
pub mod file_watch;
pub mod grid;
pub mod model_args;
pub mod server;
