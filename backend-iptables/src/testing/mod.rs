//! Test helpers (feature `testing`): the rule tracer.

pub mod trace;
