//! The table file format (YAML, or JSON) and its loader.
//!
//! TODO(#2): serde spec types and loader.
