//! What a backend needs from the host, checked once before it starts: a kernel backend run
//! without `CAP_NET_ADMIN`, or without its tools, fails at its first sync, and the sync loop
//! would retry that with backoff forever, logging the same error each time. One clear sentence
//! and a non-zero exit tell the operator instead. `--dry-run` needs none of this and skips it.

use std::ffi::OsStr;
use std::fmt;

use crate::svcproxy::cli::{BackendKind, RunArgs};

/// `CAP_NET_ADMIN`'s bit in the capability sets (`include/uapi/linux/capability.h`).
const CAP_NET_ADMIN: u32 = 12;

/// The tools the iptables backend (and the userspace capture mode) run; the backend picks the
/// `-nft` or `-legacy` variant of each after `iptables --version`.
const IPTABLES_TOOLS: [&str; 3] = ["iptables", "iptables-save", "iptables-restore"];

/// Why a backend cannot run on this host.
#[derive(Debug)]
#[non_exhaustive]
pub enum PreflightError {
    /// The process lacks `CAP_NET_ADMIN` in its effective set.
    NoNetAdmin {
        /// What needs it (`the iptables backend`).
        what: &'static str,
        /// What else the operator may do, if anything (`; --dry-run needs no privileges`).
        hint: &'static str,
    },
    /// `/proc/self/status` could not be read or has no `CapEff` line.
    Status {
        /// What went wrong.
        reason: String,
    },
    /// Tools missing from `PATH`.
    NoTools {
        /// What needs them.
        what: &'static str,
        /// The missing tools.
        missing: Vec<&'static str>,
    },
    /// The kernel has no IPVS (the generic-netlink family `IPVS` is unknown).
    NoIpvs,
    /// IPVS could not be asked.
    Ipvs {
        /// The netlink error.
        reason: String,
    },
}

impl fmt::Display for PreflightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreflightError::NoNetAdmin { what, hint } => write!(
                f,
                "{what} needs the CAP_NET_ADMIN capability, which this process lacks: run it as \
                 root or grant it the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN){hint}"
            ),
            PreflightError::Status { reason } => write!(
                f,
                "cannot tell whether this process has CAP_NET_ADMIN: /proc/self/status: {reason}"
            ),
            PreflightError::NoTools { what, missing } => write!(
                f,
                "{what} needs {} on PATH, not found: install iptables (nft or legacy)",
                missing.join(", ")
            ),
            PreflightError::NoIpvs => f.write_str(
                "the ipvs backend needs IPVS, which this kernel lacks (generic netlink family \
                 \"IPVS\" not found): load it with `modprobe ip_vs`, or use --backend iptables",
            ),
            PreflightError::Ipvs { reason } => {
                write!(f, "the ipvs backend cannot reach IPVS: {reason}")
            }
        }
    }
}

impl std::error::Error for PreflightError {}

/// What a run without the privilege may still do.
const DRY_RUN_HINT: &str = "; --dry-run needs no privileges";

/// Checks what the backend `args` choose needs: nothing for the userspace backend (unless it
/// captures with iptables), `CAP_NET_ADMIN` and the tools for the others.
///
/// # Errors
/// The first thing missing, as one sentence.
pub fn check(args: &RunArgs) -> Result<(), PreflightError> {
    match args.backend() {
        BackendKind::Userspace if !args.userspace_capture => Ok(()),
        BackendKind::Userspace => {
            let what = "the userspace backend's capture mode (--userspace-capture)";
            check_net_admin(what, DRY_RUN_HINT)?;
            check_iptables_tools(what)
        }
        BackendKind::Iptables => {
            check_net_admin("the iptables backend", DRY_RUN_HINT)?;
            check_iptables_tools("the iptables backend")
        }
        BackendKind::Ipvs => {
            check_net_admin("the ipvs backend", DRY_RUN_HINT)?;
            check_ipvs()
        }
        // nf_tables is programmed over netlink from this process: no tool to find.
        BackendKind::Nftables => check_net_admin("the nftables backend", DRY_RUN_HINT),
    }
}

/// Whether this process has `CAP_NET_ADMIN` in its effective set.
///
/// # Errors
/// [`PreflightError::NoNetAdmin`] when it has not, [`PreflightError::Status`] when
/// `/proc/self/status` does not say.
pub fn check_net_admin(what: &'static str, hint: &'static str) -> Result<(), PreflightError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|e| PreflightError::Status {
            reason: e.to_string(),
        })?;
    let effective = effective_capabilities(&status).ok_or_else(|| PreflightError::Status {
        reason: "no readable CapEff line".to_owned(),
    })?;
    if effective & (1 << CAP_NET_ADMIN) == 0 {
        return Err(PreflightError::NoNetAdmin { what, hint });
    }
    Ok(())
}

/// The effective capability set from `/proc/PID/status` text (`CapEff:\t000001ffffffffff`).
fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Whether the iptables tools are on `PATH`.
///
/// # Errors
/// [`PreflightError::NoTools`] naming each one missing.
pub fn check_iptables_tools(what: &'static str) -> Result<(), PreflightError> {
    let missing: Vec<&'static str> = IPTABLES_TOOLS
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::NoTools { what, missing })
    }
}

/// Whether the kernel has IPVS: resolves its generic-netlink family (needs no privilege). A
/// blocking netlink round trip, done once at start.
///
/// # Errors
/// [`PreflightError::NoIpvs`] without IPVS, [`PreflightError::Ipvs`] when netlink fails.
pub fn check_ipvs() -> Result<(), PreflightError> {
    match backend_ipvs::NetlinkIpvs::connect() {
        Ok(_) => Ok(()),
        Err(backend_ipvs::IpvsError::Unavailable { .. }) => Err(PreflightError::NoIpvs),
        Err(e) => Err(PreflightError::Ipvs {
            reason: e.to_string(),
        }),
    }
}

/// Whether an executable file `name` is in a directory of `PATH` (as the backends find them).
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(OsStr::new(name)))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tsvcproxy\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t0000000000001000\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(status), Some(1 << CAP_NET_ADMIN));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }
}
