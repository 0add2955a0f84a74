//! backend-userspace: TODO.
#![forbid(unsafe_code)]
