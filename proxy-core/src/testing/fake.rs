//! In-memory fakes for tests: a [`crate::Dataplane`] that records what it was asked.
//!
//! TODO(#2).
