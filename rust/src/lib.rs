//! damocles-py's Rust core: a thin layer over filecoin-proofs-api.
//!
//! - `stages`: one function per sealing stage, plain Rust types (used by Python and the benchmark).
//! - `params`: Groth parameter generation and naming, from the sibling crates.
//! - `python` (feature `python`, enabled by maturin): the PyO3 boundary.

pub mod params;
pub mod stages;

#[cfg(feature = "python")]
mod python;
