//! Prometheus metrics of the sync loop, with kube-proxy's names.
//!
//! TODO(#2).
