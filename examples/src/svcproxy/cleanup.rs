//! `--cleanup`: remove what any earlier run of ours left on this node, as kube-proxy's
//! `--cleanup` does, print what went, and exit.
//!
//! Each backend's own cleanup does the work (`Dataplane::cleanup`: the iptables backend's hooks
//! and chains under its prefix; the ipvs backend's virtual servers on its interface, the
//! interface, its companion chains and sets; the nftables backend's table), so exactly what the backend calls its own goes and
//! nothing else. Each takes the backend's one-owner lock first ([`proxy_core::lock`]): while a
//! running instance holds it, its state is refused by name rather than pulled from under it. The
//! userspace backend's only kernel state is its capture chain (`--userspace-capture`); svcproxy
//! holds a lock of the same kind on it while it runs.
//!
//! With `--backend`, that backend's state is removed and a missing tool is an error. Without it,
//! every kernel backend whose tools this host has is cleaned, and the others are reported
//! skipped: a host without IPVS can hold no virtual servers of ours.

use std::fmt::Write as _;
use std::process::ExitCode;

use backend_iptables::apply::{detect_variant, CommandRunner};
use backend_iptables::observe::observe;
use backend_iptables::{IptablesDataplane, IptablesError, Planner};
use backend_ipvs::{BackendError, IpvsDataplane};
use proxy_core::lock::{DataplaneLock, LockError, LockKey, NetnsId};
use proxy_core::Dataplane as _;

use crate::svcproxy::backend;
use crate::svcproxy::cli::{BackendKind, RunArgs};
use crate::svcproxy::preflight::{self, PreflightError};

/// The kinds of state `--cleanup` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Iptables,
    Ipvs,
    Nftables,
    UserspaceCapture,
}

impl Target {
    const ALL: [Target; 4] = [
        Target::Iptables,
        Target::Ipvs,
        Target::Nftables,
        Target::UserspaceCapture,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::Iptables => "iptables",
            Target::Ipvs => "ipvs",
            Target::Nftables => "nftables",
            Target::UserspaceCapture => "userspace capture",
        }
    }

    /// Whether this host has what the target's state needs.
    fn check_tools(self) -> Result<(), PreflightError> {
        match self {
            Target::Iptables => preflight::check_iptables_tools("the iptables backend"),
            Target::Ipvs => preflight::check_ipvs(),
            // Netlink from this process: nothing to find on PATH.
            Target::Nftables => Ok(()),
            Target::UserspaceCapture => {
                preflight::check_iptables_tools("the userspace backend's capture mode")
            }
        }
    }
}

/// Runs `--cleanup`: prints one line per backend (what was removed, or why it was skipped) on
/// stdout, and each failure on stderr.
///
/// # Errors
/// No `CAP_NET_ADMIN`, or, with `--backend`, a missing tool: nothing was tried. A backend whose
/// cleanup failed makes the exit code non-zero, the others are still cleaned.
pub async fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let (targets, chosen): (Vec<Target>, bool) = match args.backend {
        Some(BackendKind::Iptables) => (vec![Target::Iptables], true),
        Some(BackendKind::Ipvs) => (vec![Target::Ipvs], true),
        Some(BackendKind::Nftables) => (vec![Target::Nftables], true),
        Some(BackendKind::Userspace) => (vec![Target::UserspaceCapture], true),
        None => (Target::ALL.to_vec(), false),
    };
    preflight::check_net_admin("--cleanup", "")?;
    let mut failed = false;
    for target in targets {
        match target.check_tools() {
            Ok(()) => {}
            Err(error) if chosen => return Err(error.into()),
            Err(PreflightError::NoIpvs) => {
                println!("{}: skipped: this kernel has no IPVS", target.name());
                continue;
            }
            Err(PreflightError::NoTools { missing, .. }) => {
                println!(
                    "{}: skipped: {} not on PATH",
                    target.name(),
                    missing.join(", ")
                );
                continue;
            }
            Err(error) => {
                eprintln!("svcproxy: {}: not cleaned up: {error}", target.name());
                failed = true;
                continue;
            }
        }
        let removed = match target {
            Target::Iptables => clean_iptables(args).await,
            Target::Ipvs => clean_ipvs(args).await,
            Target::Nftables => clean_nftables(args).await,
            Target::UserspaceCapture => clean_userspace_capture(args).await,
        };
        match removed {
            Ok(text) => print!("{text}"),
            Err(error) => {
                let why = match held_lock(&error) {
                    Some(LockError::Held { holder, path, .. }) => format!(
                        "{holder} is running and owns this state (lock {}); stop it first",
                        path.display()
                    ),
                    _ => crate::svcproxy::error_chain(&error),
                };
                eprintln!("svcproxy: {}: not cleaned up: {why}", target.name());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The lock error in `error`'s chain, if a backend's cleanup failed on its one-owner lock (the
/// backends wrap it transparently, so it is found inside their error types).
fn held_lock(error: &anyhow::Error) -> Option<&LockError> {
    error.chain().find_map(|cause| {
        if let Some(lock) = cause.downcast_ref::<LockError>() {
            return Some(lock);
        }
        if let Some(IptablesError::Lock(lock)) = cause.downcast_ref::<IptablesError>() {
            return Some(lock);
        }
        if let Some(backend_nftables::NftablesError::Lock(lock)) =
            cause.downcast_ref::<backend_nftables::NftablesError>()
        {
            return Some(lock);
        }
        match cause.downcast_ref::<BackendError>() {
            Some(BackendError::Lock(lock)) => Some(lock),
            _ => None,
        }
    })
}

/// The iptables backend's hooks and chains, through `Dataplane::cleanup`; the chains are listed
/// from an `iptables-save` read just before.
async fn clean_iptables(args: &RunArgs) -> anyhow::Result<String> {
    let config = backend::iptables_config(args);
    let planner = Planner::new(config.clone())?;
    let prefix = config.command_prefix();
    let variant = detect_variant(&prefix).await?;
    let runner = CommandRunner::new(variant).with_prefix(prefix);
    let before = observe(&runner, planner.names()).await?;
    let mut dataplane = IptablesDataplane::new(config)?;
    let report = dataplane.cleanup().await?;
    let chains = before.chains.len();
    let hooks = report.objects_removed.saturating_sub(chains);
    if report.objects_removed == 0 {
        return Ok(format!(
            "iptables ({variant}): nothing of ours (prefix {})\n",
            planner.names().prefix()
        ));
    }
    let mut text = format!(
        "iptables ({variant}): removed {hooks} jumps from built-in chains and {chains} chains\n"
    );
    for (family, table, chain) in before.chains.keys() {
        // Infallible: writing to a String.
        let _ = writeln!(text, "  {family} {table} {chain}");
    }
    Ok(text)
}

/// The ipvs backend's virtual servers, interface and companions, through `Dataplane::cleanup`.
async fn clean_ipvs(args: &RunArgs) -> anyhow::Result<String> {
    let config = backend::ipvs_config(args);
    let interface = config.interface.clone();
    let mut dataplane = IpvsDataplane::new(config)?;
    let report = dataplane.cleanup().await?;
    Ok(match report.objects_removed {
        0 => format!("ipvs: nothing of ours (interface {interface})\n"),
        n => format!(
            "ipvs: removed {n} objects: virtual servers on {interface}, the interface and its \
             addresses, companion chains and sets\n"
        ),
    })
}

/// The nftables backend's table (`inet svcproxy` by default): it holds everything the backend
/// programs, so deleting it is the whole cleanup; no other table is read or touched.
async fn clean_nftables(args: &RunArgs) -> anyhow::Result<String> {
    let config = backend::nftables_config(args);
    let table = config.table.clone();
    let mut dataplane = backend_nftables::NftablesDataplane::new(config);
    let report = dataplane.cleanup().await?;
    Ok(match report.objects_removed {
        0 => format!("nftables: nothing of ours (table inet {table})\n"),
        _ => format!("nftables: removed table inet {table}\n"),
    })
}

/// The userspace capture chain and its jumps (`backend_userspace::capture::cleanup`), under the
/// lock a capturing svcproxy holds.
async fn clean_userspace_capture(args: &RunArgs) -> anyhow::Result<String> {
    let config = backend::userspace_config(args);
    config.validate()?;
    let chain = config.capture_chain;
    let _lock = capture_lock(&chain)?;
    let (has_chain, jumps) = backend_userspace::capture::leftovers(&chain).await?;
    if !has_chain && jumps == 0 {
        return Ok(format!(
            "userspace capture: nothing of ours (chain {chain})\n"
        ));
    }
    backend_userspace::capture::cleanup(&chain).await?;
    Ok(format!(
        "userspace capture: removed {jumps} jumps and chain {chain} (nat redirects, filter verdicts)\n"
    ))
}

/// The lock a capturing svcproxy holds on its chain in this network namespace, so that
/// `--cleanup` refuses, naming it, rather than remove the chain from under it (the userspace
/// backend takes no lock of its own).
///
/// # Errors
/// [`LockError::Held`] naming the holder, or why the lock could not be taken.
pub fn capture_lock(chain: &str) -> Result<DataplaneLock, LockError> {
    let netns = NetnsId::current().map_err(|source| LockError::Io {
        path: "/proc/thread-self/ns/net".into(),
        op: "identify the network namespace",
        source,
    })?;
    DataplaneLock::acquire(&LockKey::new(netns, "userspace-capture", chain))
}
