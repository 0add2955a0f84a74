//! `svcproxy`: the reference proxy. TODO(#3).
fn main() {}
