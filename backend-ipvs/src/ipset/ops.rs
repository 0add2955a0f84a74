//! [`IpsetOps`]: the narrow interface the companions use, and [`IpsetOp`], one step of a batch.

use std::fmt;

use super::error::IpsetError;
use super::model::{SetEntry, SetListing, SetSpec};

/// One step of a batch. `Display` writes it in `ipset restore` syntax (one line per entry for
/// add and del), for logs and the golden files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpsetOp {
    /// Create the set if it is missing (`create -exist`): an existing set of the same type,
    /// family and parameters is fine; one that differs is an error (`IPSET_ERR_EXIST`).
    Create(SetSpec),
    /// Destroy the set (an error if it is missing or referenced).
    Destroy(String),
    /// Remove every entry (an error if the set is missing).
    Flush(String),
    /// Exchange the contents of two sets of the same type and family; iptables rules keep
    /// pointing at the names.
    Swap(String, String),
    /// Rename a set.
    Rename(String, String),
    /// Add entries (`add -exist`: present already is fine).
    Add(String, Vec<SetEntry>),
    /// Delete entries (`del -exist`: absent already is fine).
    Del(String, Vec<SetEntry>),
}

impl IpsetOp {
    /// The set the step is about (the first, for swap and rename).
    pub fn set(&self) -> &str {
        match self {
            IpsetOp::Create(spec) => &spec.name,
            IpsetOp::Destroy(s)
            | IpsetOp::Flush(s)
            | IpsetOp::Swap(s, _)
            | IpsetOp::Rename(s, _)
            | IpsetOp::Add(s, _)
            | IpsetOp::Del(s, _) => s,
        }
    }
}

impl fmt::Display for IpsetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpsetOp::Create(spec) => writeln!(f, "create {spec} -exist"),
            IpsetOp::Destroy(s) => writeln!(f, "destroy {s}"),
            IpsetOp::Flush(s) => writeln!(f, "flush {s}"),
            IpsetOp::Swap(a, b) => writeln!(f, "swap {a} {b}"),
            IpsetOp::Rename(a, b) => writeln!(f, "rename {a} {b}"),
            IpsetOp::Add(s, entries) => entries.iter().try_for_each(|e| writeln!(f, "add {s} {e}")),
            IpsetOp::Del(s, entries) => entries.iter().try_for_each(|e| writeln!(f, "del {s} {e}")),
        }
    }
}

/// The kernel's ipsets, as the companions need them (kube-proxy's `utilipset.Interface`, made
/// batch-first). [`super::NetlinkIpset`] is the real one; `FakeIpset` (feature `testing`)
/// keeps sets in memory.
pub trait IpsetOps: Send + Sync + fmt::Debug {
    /// Runs `ops` in order, sent together (many messages per `sendmsg`).
    ///
    /// The kernel carries on after a failed step, so later steps still apply; within one add
    /// or del step, the entries after a failed one are not applied.
    ///
    /// # Errors
    /// The first step the kernel refused ([`IpsetError::Kernel`], naming the set and, for add
    /// and del, the entry), or a socket or decoding error.
    fn apply(&self, ops: &[IpsetOp]) -> Result<(), IpsetError>;

    /// The names of every set in this network namespace.
    ///
    /// # Errors
    /// A socket or decoding error.
    fn list_names(&self) -> Result<Vec<String>, IpsetError>;

    /// One set with its entries.
    ///
    /// # Errors
    /// [`IpsetError::Kernel`] with `ENOENT` when it does not exist
    /// ([`IpsetError::is_not_found`]); [`IpsetError::Invalid`] for an entry that does not fit.
    fn list(&self, name: &str) -> Result<SetListing, IpsetError>;
}

/// Shared: the companions own one, a test keeps another handle on the same fake.
impl<T: IpsetOps + ?Sized> IpsetOps for std::sync::Arc<T> {
    fn apply(&self, ops: &[IpsetOp]) -> Result<(), IpsetError> {
        (**self).apply(ops)
    }

    fn list_names(&self) -> Result<Vec<String>, IpsetError> {
        (**self).list_names()
    }

    fn list(&self, name: &str) -> Result<SetListing, IpsetError> {
        (**self).list(name)
    }
}
