//! backend-ipvs: TODO.
#![forbid(unsafe_code)]
