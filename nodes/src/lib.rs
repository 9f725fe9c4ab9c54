//! weft-nodes: every concrete node type and the models behind them.

pub mod error;
pub mod models;
pub mod noise;
pub mod samplers;
pub mod weights;

pub use error::{ModelError, Result};
