//! weft command-line interface.
fn main() {}
