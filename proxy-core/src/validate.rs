//! Validation of a service table. Every problem is reported at once, each naming its field path.
//!
//! TODO(#2): the checks themselves.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::table::{ServicePort, ServicePortName};

/// One problem, at one field: `services[default/web].ports[http].node_port: 99999 is outside 1-65535`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: a field path such as `services[default/web].ports[http].node_port`.
    pub path: String,
    /// What is wrong, with the offending value.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a table; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// The problems, in table order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid service table ({} problem(s)):",
            self.errors.len()
        )?;
        for error in &self.errors {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

/// Checks a table's service ports. Called by [`crate::table::TableBuilder::build`].
///
/// # Errors
/// Every problem found.
pub fn validate(
    _node: Option<&str>,
    _ports: &BTreeMap<ServicePortName, Arc<ServicePort>>,
    duplicates: &[ServicePortName],
) -> Result<(), ValidationErrors> {
    let errors: Vec<FieldError> = duplicates
        .iter()
        .map(|name| {
            FieldError::new(
                format!("services[{}].ports[{}]", name.service(), name.port),
                "duplicate service port",
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors { errors })
    }
}
