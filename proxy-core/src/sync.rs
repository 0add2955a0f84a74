//! The sync loop that feeds a [`crate::Dataplane`] from a service source.
//!
//! TODO(#2).
