//! Benchmarks of table building, validation and diff. TODO(#2).
fn main() {}
