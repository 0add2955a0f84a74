//! Byte tests (filled below).
