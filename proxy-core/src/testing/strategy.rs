//! proptest strategies for valid tables. TODO(#2).
