//! Stale UDP conntrack entries: kube-proxy's well-known UDP blackhole (a UDP flow tracked to an
//! endpoint that went away, or tracked un-NATed while its service had no endpoint, keeps
//! matching its entry, so DNAT is never re-evaluated). After each successful sync we delete
//! exactly those entries, as kube-proxy does in `pkg/proxy/conntrack/cleanup.go`.
//!
//! The planning ([`plan_conntrack`], pure, and its [`Flush`]es) and the deletion
//! ([`flush_stale`], one dump per family) are shared with backend-nftables in
//! `nf_conntrack::stale`, as is the ctnetlink client ([`ConntrackOps`], [`Netlink`],
//! [`Entry`]...); all are re-exported here. [`NetnsNetlink`] is the same client in a named
//! network namespace ([`crate::IptablesConfig::netns`]).

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};

pub use nf_conntrack::stale::{flush_stale, plan_conntrack, Flush};
pub use nf_conntrack::{
    encode_delete, encode_dump, parse_entry, ConntrackError, ConntrackOps, Entry, Netlink,
    IPPROTO_UDP,
};

use crate::rules::Family;

/// [`Netlink`] in a named network namespace: each call runs on a thread of its own that first
/// enters `/run/netns/NAME` (`setns(2)`, as `ip netns exec` does), so the ctnetlink socket is
/// opened in, and talks to, that namespace's conntrack table. The thread ends with the call:
/// no thread of the caller (or of tokio's pool) ever changes namespace. Needs `CAP_SYS_ADMIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsNetlink {
    path: PathBuf,
}

impl NetnsNetlink {
    /// The conntrack table of the namespace `ip netns add NAME` made.
    pub fn new(name: &str) -> Self {
        Self {
            path: PathBuf::from("/run/netns").join(name),
        }
    }

    /// The namespace file entered.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs `call` on a new thread inside the namespace.
    fn inside<T: Send>(
        &self,
        op: &'static str,
        family: Family,
        call: impl FnOnce() -> Result<T, ConntrackError> + Send,
    ) -> Result<T, ConntrackError> {
        let error = |error: std::io::Error| ConntrackError { op, family, error };
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("conntrack-netns".into())
                .spawn_scoped(scope, || {
                    let file = File::open(&self.path).map_err(error)?;
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| error(std::io::Error::from(errno)))?;
                    call()
                })
                .map_err(error)?;
            thread.join().unwrap_or_else(|_| {
                Err(error(std::io::Error::other(format!(
                    "thread in {} panicked",
                    self.path.display()
                ))))
            })
        })
    }
}

impl ConntrackOps for NetnsNetlink {
    fn dump(&self, family: Family) -> Result<Vec<Entry>, ConntrackError> {
        self.inside("dump", family, || Netlink.dump(family))
    }

    fn delete(&self, family: Family, entry: &Entry) -> Result<(), ConntrackError> {
        self.inside("delete", family, || Netlink.delete(family, entry))
    }
}
