//! backend-iptables: TODO.
#![forbid(unsafe_code)]
