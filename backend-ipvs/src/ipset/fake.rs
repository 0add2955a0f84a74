//! [`FakeIpset`]: an in-memory [`IpsetOps`] with the kernel's semantics where the companions
//! depend on them (create `-exist`, add/del `-exist`, swap, errors by errno), recording every
//! batch so tests can assert what would have been sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::constants::*;
use super::error::{IpsetError, EEXIST, ENOENT};
use super::message::IpsetCmd;
use super::model::{SetEntry, SetListing, SetSpec};
use super::ops::{IpsetOp, IpsetOps};

/// One set in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSet {
    /// How it was created.
    pub spec: SetSpec,
    /// Its entries.
    pub entries: BTreeSet<SetEntry>,
}

#[derive(Debug, Default)]
struct State {
    sets: BTreeMap<String, FakeSet>,
    batches: Vec<Vec<IpsetOp>>,
    fail: Option<(String, i32)>,
}

/// An in-memory [`IpsetOps`].
#[derive(Debug, Default)]
pub struct FakeIpset {
    state: Mutex<State>,
}

fn refuse(cmd: IpsetCmd, set: &str, entry: Option<&SetEntry>, errno: i32) -> IpsetError {
    IpsetError::Kernel {
        cmd,
        set: set.to_owned(),
        entry: entry.map(ToString::to_string),
        errno,
    }
}

impl FakeIpset {
    /// No sets.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every set's entries, by name.
    pub fn sets(&self) -> BTreeMap<String, BTreeSet<SetEntry>> {
        self.lock()
            .sets
            .iter()
            .map(|(name, set)| (name.clone(), set.entries.clone()))
            .collect()
    }

    /// One set, if it exists.
    pub fn set(&self, name: &str) -> Option<FakeSet> {
        self.lock().sets.get(name).cloned()
    }

    /// Every batch [`IpsetOps::apply`] was given, in order.
    pub fn batches(&self) -> Vec<Vec<IpsetOp>> {
        self.lock().batches.clone()
    }

    /// From now on, every step about `set` is refused with `errno`.
    pub fn fail_on(&self, set: &str, errno: i32) {
        self.lock().fail = Some((set.to_owned(), errno));
    }

    /// Stops the failures [`FakeIpset::fail_on`] started.
    pub fn heal(&self) {
        self.lock().fail = None;
    }

    /// Adds a set as if another program had made it.
    pub fn insert(&self, spec: SetSpec, entries: impl IntoIterator<Item = SetEntry>) {
        let set = FakeSet {
            spec: spec.clone(),
            entries: entries.into_iter().collect(),
        };
        self.lock().sets.insert(spec.name, set);
    }
}

fn step(state: &mut State, op: &IpsetOp) -> Result<(), IpsetError> {
    let sets = &mut state.sets;
    match op {
        IpsetOp::Create(spec) => match sets.get(&spec.name) {
            Some(set) if set.spec == *spec => Ok(()),
            Some(_) => Err(refuse(IpsetCmd::Create, &spec.name, None, EEXIST)),
            None => {
                let set = FakeSet {
                    spec: spec.clone(),
                    entries: BTreeSet::new(),
                };
                sets.insert(spec.name.clone(), set);
                Ok(())
            }
        },
        IpsetOp::Destroy(name) => sets
            .remove(name)
            .map(drop)
            .ok_or_else(|| refuse(IpsetCmd::Destroy, name, None, ENOENT)),
        IpsetOp::Flush(name) => sets
            .get_mut(name)
            .map(|s| s.entries.clear())
            .ok_or_else(|| refuse(IpsetCmd::Flush, name, None, ENOENT)),
        IpsetOp::Swap(a, b) => {
            let target = format!("{a} -> {b}");
            let first = sets
                .get(a)
                .ok_or_else(|| refuse(IpsetCmd::Swap, &target, None, ENOENT))?;
            let second = sets
                .get(b)
                .ok_or_else(|| refuse(IpsetCmd::Swap, &target, None, IPSET_ERR_EXIST_SETNAME2))?;
            if (first.spec.set_type, first.spec.family)
                != (second.spec.set_type, second.spec.family)
            {
                return Err(refuse(
                    IpsetCmd::Swap,
                    &target,
                    None,
                    IPSET_ERR_TYPE_MISMATCH,
                ));
            }
            let (mut first, mut second) = (first.clone(), second.clone());
            std::mem::swap(&mut first.entries, &mut second.entries);
            std::mem::swap(&mut first.spec.max_elements, &mut second.spec.max_elements);
            std::mem::swap(&mut first.spec.hash_size, &mut second.spec.hash_size);
            sets.insert(a.clone(), first);
            sets.insert(b.clone(), second);
            Ok(())
        }
        IpsetOp::Rename(a, b) => {
            let target = format!("{a} -> {b}");
            if sets.contains_key(b) {
                return Err(refuse(
                    IpsetCmd::Rename,
                    &target,
                    None,
                    IPSET_ERR_EXIST_SETNAME2,
                ));
            }
            let mut set = sets
                .remove(a)
                .ok_or_else(|| refuse(IpsetCmd::Rename, &target, None, ENOENT))?;
            set.spec.name = b.clone();
            sets.insert(b.clone(), set);
            Ok(())
        }
        IpsetOp::Add(name, entries) | IpsetOp::Del(name, entries) => {
            let add = matches!(op, IpsetOp::Add(..));
            let cmd = if add { IpsetCmd::Add } else { IpsetCmd::Del };
            let set = sets
                .get_mut(name)
                .ok_or_else(|| refuse(cmd, name, None, ENOENT))?;
            for entry in entries {
                if entry.set_type() != set.spec.set_type {
                    return Err(refuse(cmd, name, Some(entry), IPSET_ERR_PROTOCOL));
                }
                // The kernel answers IPSET_ERR_PROTOCOL for an address of the other family
                // (checked in tests/netns_ipset.rs).
                if entry.family() != set.spec.family {
                    return Err(refuse(cmd, name, Some(entry), IPSET_ERR_PROTOCOL));
                }
                if add {
                    let full = set.entries.len() >= set.spec.max_elements as usize;
                    if full && !set.entries.contains(entry) {
                        return Err(refuse(cmd, name, Some(entry), IPSET_ERR_HASH_FULL));
                    }
                    set.entries.insert(entry.clone());
                } else {
                    set.entries.remove(entry);
                }
            }
            Ok(())
        }
    }
}

impl IpsetOps for FakeIpset {
    fn apply(&self, ops: &[IpsetOp]) -> Result<(), IpsetError> {
        let mut state = self.lock();
        state.batches.push(ops.to_vec());
        let mut first_error = None;
        for op in ops {
            let injected = state
                .fail
                .as_ref()
                .filter(|(set, _)| op.set() == set)
                .map(|(set, errno)| refuse(IpsetCmd::Other(0), set, None, *errno));
            // Like the kernel, carry on after a refused step.
            let result = match injected {
                Some(e) => Err(e),
                None => step(&mut state, op),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn list_names(&self) -> Result<Vec<String>, IpsetError> {
        Ok(self.lock().sets.keys().cloned().collect())
    }

    fn list(&self, name: &str) -> Result<SetListing, IpsetError> {
        let state = self.lock();
        let set = state
            .sets
            .get(name)
            .ok_or_else(|| refuse(IpsetCmd::List, name, None, ENOENT))?;
        Ok(SetListing {
            name: name.to_owned(),
            set_type: Some(set.spec.set_type),
            type_name: set.spec.set_type.name().to_owned(),
            family: Some(set.spec.family),
            max_elements: Some(set.spec.max_elements),
            entries: set.entries.iter().cloned().collect(),
        })
    }
}
