//! Test helpers for this crate, backends and embedders (feature `testing`): an in-memory
//! [`crate::Dataplane`] fake, proptest strategies for valid tables, and generators of large
//! synthetic tables for benchmarks. Addresses are all in 198.18.0.0/15.

pub mod fake;
pub mod generate;
pub mod strategy;
