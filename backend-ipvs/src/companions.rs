//! The companions IPVS needs, as kube-proxy's IPVS mode has them: ipsets that list the
//! service addresses by role, and a fixed handful of iptables rules that match those sets.
//! The rule count does not grow with the number of services; only the sets do.
//!
//! ```text
//!  nat PREROUTING ─┐
//!  nat OUTPUT ─────┴─▶ {P}SERVICES: cluster IP:port from outside the cluster CIDRs ─▶ {P}MARK-MASQ
//!                                   node port / external / LB IP:port (Cluster policy) ─▶ {P}MARK-MASQ
//!  nat POSTROUTING ──▶ {P}POSTROUTING: endpoint reaching itself ({P}LOOP-BACK) ─▶ MASQUERADE
//!                                      marked 0x4000 ─▶ clear the bit, MASQUERADE
//!  filter INPUT ───┐
//!  filter FORWARD ─┴─▶ {P}FILTER: LB IP:port with source ranges, source not in them ─▶ DROP
//!                                 no local endpoint for a Local policy ({P}DROP) ─▶ DROP
//!                                 same, external address, source outside the cluster CIDRs
//!                                   ({P}DROP-OUTSIDE: pods reach the cluster endpoints) ─▶ DROP
//!                                 no endpoint at all ({P}REJECT) ─▶ REJECT
//! ```
//!
//! Why there: IPVS hooks `LOCAL_IN` after filter `INPUT`, so filter verdicts come first; the
//! masquerade mark is set before IPVS picks a real server and acted on in `POSTROUTING`, which
//! IPVS-forwarded packets pass only with `net.ipv4.vs.conntrack=1` (set at each full sync, as
//! kube-proxy does). IPVS itself already answers ICMP port unreachable for a virtual server with
//! no real servers; the REJECT rule makes that explicit and independent of IPVS.
//!
//! Sets are written over netlink ([`crate::ipset`], no process): a full sync fills a temporary
//! set and swaps it in, a partial one adds and deletes only the changed entries, all in one
//! batch of messages. Rules are written with `iptables-restore --noflush`, declaring only our
//! chains (which flushes and refills them); the jumps from the built-in chains that the
//! family's `iptables-save` lacks are inserted (`-I`) by the same restore. A full sync runs
//! two processes per family; a partial one runs none.
//! Everything is per family: IPv6 sets end in `6`, and `ip6tables` carries their rules.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use proxy_core::table::Protocol;
use tracing::{debug, trace};

use crate::config::{IptablesVariant, IpvsConfig};
use crate::error::BackendError;
use crate::ipset::{IpsetOp, IpsetOps, NetlinkIpset};
use crate::model::ServiceKey;
use crate::plan::{Desired, Touched};

/// The masquerade mark bit, kube-proxy's (`--iptables-masquerade-bit` 14). Sharing it with a
/// kube-proxy on the same node is harmless: both mean "SNAT this".
pub const MASQ_MARK: &str = "0x4000";

/// The comment on our jumps from the built-in chains (one word: `iptables-save` prints it
/// unquoted, so the saved line matches what we insert).
const HOOK_COMMENT: &str = "svcp-ipvs";

// === running tools ===

/// What a tool run gave back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunOutput {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs a program from an argument vector (no shell), with optional standard input.
pub trait Runner: Send + Sync + std::fmt::Debug {
    /// Runs `program args...`, feeding `stdin`.
    ///
    /// # Errors
    /// When the program cannot be started or its pipes fail.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> std::io::Result<RunOutput>;
}

/// The real thing: `std::process::Command`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> std::io::Result<RunOutput> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        Ok(RunOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

// === Companions ===

/// The set entries the last syncs wrote: per virtual server, and the endpoints with a hairpin
/// entry, so a partial sync sends only what really changed.
#[derive(Debug, Default)]
struct Written {
    by_key: BTreeMap<ServiceKey, Vec<Entry>>,
    endpoints: BTreeSet<(IpAddr, Protocol, u16)>,
}

/// The companion sets and rules, with what the last sync wrote.
#[derive(Debug)]
pub struct Companions {
    config: IpvsConfig,
    names: Names,
    runner: Box<dyn Runner>,
    ipset: Box<dyn IpsetOps>,
    /// What the sets hold, as we wrote them; `None` until a full sync succeeded (and after a
    /// failure, so the next sync is full).
    written: Option<Written>,
    /// The iptables binary infix, once decided.
    variant: Option<&'static str>,
    /// `iptables-restore` runs of full syncs that failed, ever (kube-proxy's
    /// `sync_proxy_rules_iptables_restore_failures_total`).
    restore_failures: usize,
}

fn command_error(
    program: &str,
    args: &[&str],
    out: &RunOutput,
    input: Option<&str>,
) -> BackendError {
    // iptables-restore and ipset name the failing line: "line 7 failed", "Error in line 7:".
    let line = out
        .stderr
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .find_map(|s| s.parse::<usize>().ok())
        .filter(|_| out.stderr.contains("line"));
    let input_context = match (input, line) {
        (Some(input), Some(line)) if line > 0 => input
            .lines()
            .enumerate()
            .skip(line.saturating_sub(3))
            .take(5)
            .map(|(i, l)| format!("{}{:>4}: {l}", if i + 1 == line { ">" } else { " " }, i + 1))
            .collect(),
        _ => Vec::new(),
    };
    BackendError::Command {
        command: format!("{program} {}", args.join(" ")),
        status: out.code.map_or_else(
            || "killed by a signal".to_owned(),
            |c| format!("exit status {c}"),
        ),
        stderr: out.stderr.clone(),
        input_context,
    }
}

impl Companions {
    /// Companions on this network namespace's kernel: ipsets over netlink, iptables with the
    /// system's tools (looked up when first run).
    ///
    /// # Errors
    /// [`BackendError::Ipset`] when the kernel has no ipset.
    pub fn new(config: &IpvsConfig) -> Result<Self, BackendError> {
        let ipset = NetlinkIpset::connect()?;
        Ok(Self::with_parts(
            config,
            Box::new(SystemRunner),
            Box::new(ipset),
        ))
    }

    /// Companions that run tools through `runner` and write sets through `ipset` (fakes in
    /// tests).
    pub fn with_parts(
        config: &IpvsConfig,
        runner: Box<dyn Runner>,
        ipset: Box<dyn IpsetOps>,
    ) -> Self {
        Companions {
            config: config.clone(),
            names: Names::new(&config.prefix),
            runner,
            ipset,
            written: None,
            variant: None,
            restore_failures: 0,
        }
    }

    /// How many `iptables-restore` runs of [`Companions::sync`] have failed so far.
    pub fn restore_failures(&self) -> usize {
        self.restore_failures
    }

    /// Runs one batch of ipset steps, logged in full at trace level.
    fn apply_sets(&self, ops: &[IpsetOp]) -> Result<(), BackendError> {
        if ops.is_empty() {
            return Ok(());
        }
        trace!(
            steps = ops.len(),
            ops = %ops.iter().map(ToString::to_string).collect::<String>(),
            "writing ipsets"
        );
        Ok(self.ipset.apply(ops)?)
    }

    /// The binary infix (`-legacy`, `-nft` or none) for the configured variant, deciding `Auto`
    /// once by which variant lists more rules.
    fn variant(&mut self) -> &'static str {
        if let Some(infix) = self.variant {
            return infix;
        }
        let infix = match self.config.iptables {
            IptablesVariant::Legacy => "-legacy",
            IptablesVariant::Nft => "-nft",
            IptablesVariant::Auto => {
                let rules = |program: &str| {
                    self.runner
                        .run(program, &[], None)
                        .ok()
                        .filter(|out| out.code == Some(0))
                        .map(|out| out.stdout.lines().filter(|l| l.starts_with("-A")).count())
                };
                match (rules("iptables-legacy-save"), rules("iptables-nft-save")) {
                    (Some(legacy), Some(nft)) if legacy > nft => "-legacy",
                    (_, Some(_)) => "-nft",
                    (Some(_), None) => "-legacy",
                    (None, None) => "",
                }
            }
        };
        debug!(infix, "iptables variant");
        self.variant = Some(infix);
        infix
    }

    fn iptables(&self, family: Family, suffix: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        format!("{base}{}{suffix}", self.variant.unwrap_or(""))
    }

    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<RunOutput, BackendError> {
        if let Some(input) = stdin {
            trace!(program, ?args, input, "running");
        }
        let out = self
            .runner
            .run(program, args, stdin)
            .map_err(|e| BackendError::Command {
                command: format!("{program} {}", args.join(" ")),
                status: format!("could not run: {e}"),
                stderr: String::new(),
                input_context: Vec::new(),
            })?;
        if out.code == Some(0) {
            Ok(out)
        } else {
            Err(command_error(program, args, &out, stdin))
        }
    }

    /// Writes the sets and, on a full sync (`touched` is `None`), the rules and their jumps:
    /// a full sync rewrites every set, a partial one only the entries of the touched virtual
    /// servers and endpoints. Returns the number of set entries and rules written.
    ///
    /// # Errors
    /// [`BackendError::Ipset`] for the first set step the kernel refused (naming the set and
    /// entry); [`BackendError::Command`] for a failed iptables tool, with its input around the
    /// failing line. The next sync is then full.
    pub fn sync(
        &mut self,
        desired: &Desired,
        touched: Option<&Touched>,
    ) -> Result<usize, BackendError> {
        match (self.written.take(), touched) {
            (Some(mut written), Some(touched)) => {
                let by_key = &mut written.by_key;
                let (mut before, mut after) = (Entries::new(), Entries::new());
                let put = |sets: &mut Entries, (kind, family, entry): Entry| {
                    sets.entry((kind, family)).or_default().insert(entry);
                };
                for key in &touched.keys {
                    for entry in by_key.remove(key).into_iter().flatten() {
                        put(&mut before, entry);
                    }
                    if let Some(origin) = desired.origins.get(key) {
                        let entries = key_entries(key, origin);
                        for entry in &entries {
                            put(&mut after, entry.clone());
                        }
                        by_key.insert(*key, entries);
                    }
                }
                // A touched endpoint's hairpin entry changes only if it came or went.
                for ep in &touched.endpoints {
                    let wanted = desired.endpoints.contains_key(ep);
                    if wanted && written.endpoints.insert(*ep) {
                        put(&mut after, endpoint_entry(ep));
                    } else if !wanted && written.endpoints.remove(ep) {
                        put(&mut before, endpoint_entry(ep));
                    }
                }
                let ops = plan_sets_diff(&self.names, &before, &after);
                self.apply_sets(&ops)?;
                self.written = Some(written);
                Ok(entries_written(&ops))
            }
            _ => self.sync_full(desired),
        }
    }

    fn sync_full(&mut self, desired: &Desired) -> Result<usize, BackendError> {
        self.variant();
        let entries = plan_entries(desired, &self.config);
        self.apply_sets(&plan_sets_full(&self.names, &entries))?;
        let mut written = entries.values().map(BTreeSet::len).sum::<usize>();
        for family in Family::ALL {
            // One save per family tells which jumps from the built-in chains exist; the missing
            // ones go into the same restore as our chains, so a sync runs two processes per
            // family (each costs more than the work under emulation: tens of ms).
            let save = self.iptables(family, "-save");
            let saved = self.run(&save, &[], None)?.stdout;
            let missing = missing_hooks(&self.names, &saved);
            let rules = render_rules(&self.names, &self.config, family, &missing);
            let restore = self.iptables(family, "-restore");
            if let Err(e) = self.run(&restore, &["-w", "--noflush"], Some(&rules)) {
                self.restore_failures += 1;
                return Err(e);
            }
            written += rules.lines().filter(|l| l.starts_with("-A")).count();
            written += missing.len();
        }
        self.written = Some(Written {
            by_key: desired
                .origins
                .iter()
                .map(|(key, origin)| (*key, key_entries(key, origin)))
                .collect(),
            endpoints: desired.endpoints.keys().copied().collect(),
        });
        Ok(written)
    }

    fn hook_args<'a>(table: &'a str, op: &'a str, chain: &'a str, target: &'a str) -> Vec<&'a str> {
        vec![
            "-w",
            "-t",
            table,
            op,
            chain,
            "-m",
            "comment",
            "--comment",
            HOOK_COMMENT,
            "-j",
            target,
        ]
    }

    /// Removes our jumps, chains and sets (each family), and nothing else. Returns how many
    /// objects went.
    ///
    /// # Errors
    /// The first failure that is not "already gone".
    pub fn cleanup(&mut self) -> Result<usize, BackendError> {
        self.written = None;
        self.variant();
        let mut removed = 0;
        for family in Family::ALL {
            let iptables = self.iptables(family, "");
            for (table, chain, target) in hooks(&self.names) {
                // A jump may have been inserted more than once by hand; delete until none.
                for _ in 0..16 {
                    let delete = Self::hook_args(table, "-D", chain, &target);
                    match self.runner.run(&iptables, &delete, None) {
                        Ok(out) if out.code == Some(0) => removed += 1,
                        _ => break,
                    }
                }
            }
            // Only if our chains exist: restore fails on -X of a missing chain otherwise.
            let save = self.iptables(family, "-save");
            let has_chains = ["nat", "filter"].iter().any(|table| {
                self.runner
                    .run(&save, &["-t", table], None)
                    .map(|out| {
                        out.stdout
                            .lines()
                            .any(|l| l.strip_prefix(':').is_some_and(|c| self.names.is_owned(c)))
                    })
                    .unwrap_or(false)
            });
            if has_chains {
                let restore = self.iptables(family, "-restore");
                self.run(
                    &restore,
                    &["-w", "--noflush"],
                    Some(&render_delete_chains(&self.names)),
                )?;
                removed += 4;
            }
        }
        let destroy: Vec<IpsetOp> = self
            .ipset
            .list_names()?
            .into_iter()
            .filter(|name| self.names.is_owned(name))
            .map(IpsetOp::Destroy)
            .collect();
        self.apply_sets(&destroy)?;
        Ok(removed + destroy.len())
    }
}

mod names;
mod render;

pub use names::{Family, Names, SetKind};
use render::render_delete_chains;
pub use render::{
    endpoint_entry, entries_written, hooks, key_entries, plan_entries, plan_sets_diff,
    plan_sets_full, render_rules, render_sets_full, set_spec, Entries, Entry, MAX_SET_ELEMENTS,
};

/// The jumps from the built-in chains (`hooks`) that `saved` (one family's `iptables-save`)
/// lacks, as (table, built-in chain, our chain).
fn missing_hooks(names: &Names, saved: &str) -> Vec<(&'static str, &'static str, String)> {
    hooks(names)
        .into_iter()
        .filter(|(table, chain, target)| {
            let line = format!("-A {chain} -m comment --comment {HOOK_COMMENT} -j {target}");
            let header = format!("*{table}\n");
            // Tables are told apart: the same line in another table's block does not count.
            !saved
                .split("COMMIT")
                .any(|block| block.contains(&header) && block.lines().any(|l| l == line))
        })
        .collect()
}

#[cfg(test)]
mod tests;
