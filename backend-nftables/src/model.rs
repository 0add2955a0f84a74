//! The objects of our nf_tables table.
