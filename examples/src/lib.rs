//! The reference proxies' shared runtime, built on the public API of `proxy-core` and the backend
//! crates only. The binaries in `src/bin/` are thin entry points into it.
//!
//! - [`svcproxy`]: the reference proxy: flags, sources (a table file, an etcd catalogue), the
//!   backends, `/metrics` and `/healthz`, `--cleanup`.

pub mod svcproxy;
