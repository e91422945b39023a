//! Configuration: parsed (`raw`), then validated into `model`, then built by the caller.

pub mod model;

pub use model::*;
