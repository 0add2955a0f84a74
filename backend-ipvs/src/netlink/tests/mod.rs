//! Byte tests.
