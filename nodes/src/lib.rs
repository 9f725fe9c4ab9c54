//! weft-nodes: every concrete node type and the models behind them.

pub mod models;
pub mod samplers;
pub mod weights;
