//! Errors shared by the crate's parts. Validation and file errors live beside their code
//! ([`crate::validate::ValidationErrors`], [`crate::file::LoadError`]).

use std::fmt;

use crate::validate::FieldError;

/// A table asks for features the chosen backend does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnsupportedFeatures {
    /// The backend's name.
    pub backend: String,
    /// Each field that asks for too much.
    pub problems: Vec<FieldError>,
}

impl fmt::Display for UnsupportedFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the table asks for {} feature(s) the {} backend lacks:",
            self.problems.len(),
            self.backend
        )?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// Why a dataplane could not sync or clean up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// The table asks for something the backend cannot do.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedFeatures),
    /// The backend failed; `source` is its own typed error.
    // The source is printed by whoever walks the chain (`{:#}`, the sync loop's log), not here,
    // so that no cause is printed twice.
    #[error("{backend} backend")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The backend's error, with its own context.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl DataplaneError {
    /// Wraps a backend's own error.
    pub fn backend(
        backend: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        DataplaneError::Backend {
            backend,
            source: Box::new(source),
        }
    }
}

/// `error`, then each of its sources on a `caused by:` line of its own, so that one log event or
/// one problem's text carries every cause. A cause whose text is already there (a wrapper that
/// prints its source) is not repeated. The sync loop logs each failure with it; a backend that
/// reports an error as a [`crate::SyncProblem`] can render it with it too.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // A wrapper that prints its source in its own text (at the end, or followed by context)
        // must not show it twice.
        if !text.contains(cause_text.trim()) {
            text.push_str("\n  caused by: ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
