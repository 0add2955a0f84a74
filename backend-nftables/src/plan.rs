//! Planning, pure: the desired table and the difference from the observed one.
