//! [`FakeConntrack`]: an in-memory [`ConntrackOps`] that records what was dumped and deleted.

use std::sync::{Mutex, MutexGuard};

use crate::{ConntrackError, ConntrackOps, Entry, Family};

/// An in-memory conntrack table. A dump returns the entries of the asked family; a delete
/// removes the entry with the same original tuple (gone already is no error). Tests read back
/// the remaining entries, each delete and each dump.
#[derive(Debug, Default)]
pub struct FakeConntrack {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    entries: Vec<Entry>,
    deleted: Vec<(Family, Entry)>,
    dumps: Vec<Family>,
    fail_errno: Option<i32>,
}

impl FakeConntrack {
    /// A table holding `entries`.
    pub fn with_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let fake = FakeConntrack::default();
        fake.state().entries = entries.into_iter().collect();
        fake
    }

    /// Adds entries to the table.
    pub fn insert(&self, entries: impl IntoIterator<Item = Entry>) {
        self.state().entries.extend(entries);
    }

    /// The entries left.
    pub fn entries(&self) -> Vec<Entry> {
        self.state().entries.clone()
    }

    /// Every delete so far, in order.
    pub fn deleted(&self) -> Vec<(Family, Entry)> {
        self.state().deleted.clone()
    }

    /// Every dump so far, in order.
    pub fn dumps(&self) -> Vec<Family> {
        self.state().dumps.clone()
    }

    /// From now on every dump and delete fails with OS error `errno`.
    pub fn fail_with(&self, errno: i32) {
        self.state().fail_errno = Some(errno);
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock already failed; keep its data readable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self, op: &'static str, family: Family) -> Result<(), ConntrackError> {
        match self.state().fail_errno {
            Some(errno) => Err(ConntrackError {
                op,
                family,
                error: std::io::Error::from_raw_os_error(errno),
            }),
            None => Ok(()),
        }
    }
}

impl ConntrackOps for FakeConntrack {
    fn dump(&self, family: Family) -> Result<Vec<Entry>, ConntrackError> {
        self.check("dump", family)?;
        let mut state = self.state();
        state.dumps.push(family);
        Ok(state
            .entries
            .iter()
            .filter(|e| family.contains(e.dst))
            .copied()
            .collect())
    }

    fn delete(&self, family: Family, entry: &Entry) -> Result<(), ConntrackError> {
        self.check("delete", family)?;
        let mut state = self.state();
        state.entries.retain(|e| e != entry);
        state.deleted.push((family, *entry));
        Ok(())
    }
}
