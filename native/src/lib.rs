//! Native extension for overnight: memory for RAM neurons (docs/studies/ramlm.md,
//! 'Memory' to 'Connectivity optimisation').
//!
//! The core (`tiers`, `rng`, `store`, `address`, `memory`, `format`, `pool`) is plain Rust and
//! is tested with `cargo test`; `python` is the thin PyO3 layer that exposes it as
//! `native._core`.
pub mod address;
pub mod error;
pub mod format;
pub mod memory;
pub mod pool;
pub mod rng;
pub mod store;
pub mod tiers;

mod python;
