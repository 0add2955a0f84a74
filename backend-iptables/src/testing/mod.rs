//! Test helpers (feature `testing`): the rule tracer and an in-memory restore runner.

pub mod fake;
pub mod trace;
