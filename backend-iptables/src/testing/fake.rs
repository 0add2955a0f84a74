//! An in-memory [`RestoreRunner`]: records every input and keeps, per family, the concatenation
//! of the inputs that "succeeded", which [`crate::testing::trace::Tracer::new`] reads as the kernel's
//! state (later chains replace earlier ones, `-X` deletes, as `--noflush` restores do).

use std::sync::Mutex;

use async_trait::async_trait;

use crate::apply::RestoreRunner;
use crate::error::RestoreFailure;
use crate::rules::Family;

/// The fake restore tool.
#[derive(Debug, Default)]
pub struct FakeRestore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<(Family, String)>,
    state: [String; 2],
    fail_next: Option<RestoreFailure>,
}

fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl FakeRestore {
    /// A fake with nothing applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next restore fail with `failure` (and leave the state as it was).
    pub fn fail_next(&self, failure: RestoreFailure) {
        self.lock().fail_next = Some(failure);
    }

    /// Every input given, in order, with its family.
    pub fn calls(&self) -> Vec<(Family, String)> {
        self.lock().calls.clone()
    }

    /// Every successful input of `family`, concatenated.
    pub fn state(&self, family: Family) -> String {
        self.lock().state[slot(family)].clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another test thread panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl RestoreRunner for FakeRestore {
    async fn restore(&self, family: Family, input: &str) -> Result<(), RestoreFailure> {
        let mut inner = self.lock();
        inner.calls.push((family, input.to_owned()));
        if let Some(failure) = inner.fail_next.take() {
            return Err(failure);
        }
        inner.state[slot(family)].push_str(input);
        Ok(())
    }
}
