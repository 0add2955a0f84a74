//! Generators of large synthetic tables (benchmarks). TODO(#2).
