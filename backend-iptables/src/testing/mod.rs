//! Test helpers (feature `testing`): the rule tracer, in-memory fakes, and kube-proxy's layout
//! for side-by-side measurements.

pub mod fake;
pub mod kube_layout;
pub mod trace;
