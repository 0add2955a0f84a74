//! `svcproxy`: the reference proxy. Runs a service table from a file (or an etcd catalogue) on
//! any backend. The binary (`src/bin/svcproxy/main.rs`) is this module's [`main`] and its
//! allocator.
//!
//! ```text
//! svcproxy --services FILE [--backend userspace|iptables|ipvs|nftables] [--node-name N]
//!          [--dry-run] [--once] [--cleanup-on-exit] [--metrics-addr ADDR] [--healthz-addr ADDR]
//! svcproxy --etcd URL[,URL...] [--etcd-prefix /svcproxy/services/] [--node-name N] [--zone Z]
//!          [--etcd-cacert F] [--etcd-cert F --etcd-key F] [--etcd-user U --etcd-password-file F] ...
//! svcproxy --cleanup [--backend userspace|iptables|ipvs|nftables]   # remove what earlier runs left
//! svcproxy demo        # tiny loopback backends + a table fronting them; prints a curl line
//! ```
//!
//! It watches FILE (also when an editor or `sed -i` replaces it rather than writing in place) and
//! applies its changes through the change tracker: a file that does not parse is logged and the
//! running table stays; a bad service port is skipped by name and the rest applies.
//! SIGINT/SIGTERM stop it cleanly. Built on the public API of `proxy-core` and the backend
//! crates only.

mod backend;
mod cleanup;
mod cli;
mod demo;
pub mod etcd;
mod http;
pub mod kube_proxy;
mod kubernetes;
mod preflight;
mod watch;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::sync::sync_once;
use proxy_core::tracker::ChangeTracker;
use proxy_core::validate::{escape_control, warnings};
use proxy_core::{Dataplane as _, SyncConfig, SyncLoop, SyncMode};
use tracing::{error, info, warn};

use crate::svcproxy::cli::{Cli, Command, RunArgs};

/// svcproxy's `main`: parses the command line, runs, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    main_with(Cli::parse())
}

/// Runs a parsed command line (`kube-svcproxy` translates its flags into one).
pub(crate) fn main_with(cli: Cli) -> ExitCode {
    init_logging();
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("svcproxy: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Some(Command::Demo(demo)) => demo::run(demo).await,
            None if cli.run.cleanup => cleanup::run(&cli.run).await,
            None => run(cli.run).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("svcproxy: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `a: b: c`, each part once. Our errors print a cause
/// either in their message or as their `source()`, not both; an error of another crate may do
/// both, which `{:#}` would print twice, so a cause whose text is already shown is left out.
pub(crate) fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        let part = part.trim();
        if part.is_empty() || text.contains(part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(part);
    }
    text
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour())
        .init();
}

/// Colour only on a terminal, and not when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>): escape codes in a log file or a journal are noise.
fn use_colour() -> bool {
    use std::io::IsTerminal as _;
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_colour && std::io::stderr().is_terminal()
}

/// The userspace backend holds one descriptor per listener and two per proxied connection (its
/// two sockets), and up to eight more while a connection moves bulk both ways (two splice pipes
/// per direction), so the usual soft limit of 1,024 would cap it near 500 connections, and a
/// hard limit of some thousands below the listeners of a large table. Raise the soft limit to the
/// hard one, as servers commonly do; with the privilege to (root), raise both to the kernel's
/// ceiling (`fs.nr_open`) first.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the open-file limit");
            return;
        }
    };
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    if let Some(ceiling) = ceiling.filter(|c| *c > hard) {
        // Fails without CAP_SYS_RESOURCE: then the hard limit is what we have.
        if setrlimit(Resource::RLIMIT_NOFILE, ceiling, ceiling).is_ok() {
            return;
        }
    }
    if soft < hard {
        if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(soft, hard, error = %err, "cannot raise the open-file limit");
        }
    }
}

/// Runs the proxy: load, then dry-run, once, or the sync loop until a signal. Every path goes
/// through the one embedding API: the backend built by [`backend::build`], the file fed to a
/// [`ChangeTracker`], the [`SyncLoop`] (or one sync), and the backend's own dry run.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.services.is_none() && args.etcd.is_empty() && !args.kubernetes() {
        anyhow::bail!(
            "--services FILE, --etcd URL or --kubernetes is required (or run `svcproxy demo`, or `svcproxy --cleanup`); see --help"
        );
    }
    if !args.dry_run {
        // Once, before anything: without the privilege or the tools, every sync would fail the
        // same way and the loop would retry forever.
        preflight::check(&args)?;
    }
    let feed = Feed::load(&args).await?;
    let dataplane = backend::build(args.backend(), &args)?;
    // The userspace backend takes no owner lock of its own: in capture mode, hold one on its
    // chain, so that `--cleanup` elsewhere refuses rather than delete it from under us.
    let captures = args.backend() == cli::BackendKind::Userspace && args.userspace_capture;
    let _capture_lock = if captures && !args.dry_run {
        Some(cleanup::capture_lock(&args.userspace_capture_chain)?)
    } else {
        None
    };
    let (mut tracker, source) = ChangeTracker::for_dataplane(&dataplane);
    let mut feed = feed.apply_first(&mut tracker, &args).await?;
    if tracker.generation() == 0 {
        // An empty file changes nothing, but the first sync must still run (a full sync that
        // removes what a previous run left).
        tracker.flush();
    }
    let table = tracker.table().clone();
    info!(
        source = %feed.describe(),
        service_ports = table.len(),
        endpoints = table.endpoint_count(),
        skipped = tracker.skipped().len(),
        "table loaded"
    );

    if args.dry_run {
        let dry_run = dataplane
            .dry_run(&table)
            .context("the backend cannot plan this table")?;
        print!("{dry_run}");
        // Valid, but probably not meant (every endpoint of weight 0...): the operator sees it
        // here as the tracker logged it.
        for warning in table.iter().flat_map(|port| warnings(port)) {
            println!("# warning: {}", escape_control(&warning.to_string()));
        }
        for (name, skipped) in tracker.skipped() {
            // Names and messages come from the file: no raw control characters on the terminal.
            println!(
                "# {}: {}",
                escape_control(&name.to_string()),
                escape_control(&skipped.to_string())
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut dataplane = dataplane;
    let tuning = args.conntrack_tuning();
    if args.once {
        let report = sync_once(dataplane.as_mut(), &table, SyncMode::Full).await?;
        tune_conntrack(&tuning);
        println!("{report}");
        for (name, skipped) in tracker.skipped() {
            println!(
                "  {}: {}",
                escape_control(&name.to_string()),
                escape_control(&skipped.to_string())
            );
        }
        let complete = report.is_complete() && tracker.skipped().is_empty();
        return Ok(if complete {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    let config = SyncConfig {
        cleanup_on_shutdown: args.cleanup_on_exit,
        ..SyncConfig::default()
    };
    let mut registry = Registry::default();
    let sync_loop = SyncLoop::new(dataplane, config, &mut registry);
    let health = sync_loop.health();
    if let Feed::Kubernetes(kube) = &mut feed {
        // The scalability SLI: EndpointSlice change (its trigger time) -> in the dataplane.
        let latency = proxy_core::metrics::ProgrammingLatency::register(&mut registry);
        kube.track_programming_latency(latency.clone());
        tokio::spawn(latency.follow(sync_loop.handle()));
    }
    if !tuning.is_empty() {
        // After the first sync: its NAT rules have loaded nf_conntrack, whose sysctls do not
        // exist before (a fresh node).
        let health = health.clone();
        let mut outcomes = sync_loop.handle().outcomes();
        tokio::spawn(async move {
            while !health.has_synced() {
                if outcomes.changed().await.is_err() {
                    return; // the loop stopped before a sync succeeded
                }
            }
            let _ = tokio::task::spawn_blocking(move || tune_conntrack(&tuning)).await;
        });
    }
    let registry = Arc::new(registry);
    for (flag, addr) in [
        ("--metrics-addr", args.metrics_addr),
        ("--healthz-addr", args.healthz_addr),
    ] {
        let Some(addr) = addr else { continue };
        let listener = http::bind(addr).await.context(flag)?;
        info!(%addr, "serving /metrics and /healthz");
        tokio::spawn(http::serve_status(
            listener,
            Arc::clone(&registry),
            health.clone(),
            feed.node_eligibility(),
        ));
    }
    let watcher = tokio::spawn(feed.follow(tracker, args.poll_interval()));

    let result = sync_loop.run(source, shutdown_signal()).await;
    watcher.abort();
    match result {
        Ok(_dataplane) => {
            info!(cleanup = args.cleanup_on_exit, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        // Printed once, by `main`, with its causes: not logged here too.
        Err(err) => Err(anyhow::Error::new(err).context("stopped with an error")),
    }
}

/// kube-proxy's conntrack tuning (`--conntrack-*`), after the first sync. A refusal (outside
/// the host's network namespace the table size is read-only) is logged, not fatal: kube-proxy
/// carries on too.
fn tune_conntrack(tuning: &nf_conntrack::tuning::Tuning) {
    if tuning.is_empty() {
        return;
    }
    let (written, refused) = nf_conntrack::tuning::apply(tuning);
    for write in written {
        info!(path = write.path, value = write.value, "conntrack tuned");
    }
    for error in refused {
        warn!(%error, "conntrack not tuned");
    }
}

/// Where the table comes from, read once before anything is programmed.
enum Feed {
    /// `--services FILE`: the file, parsed, and the version read.
    File {
        file: watch::FileOptions,
        spec: proxy_core::file::TableSpec,
        version: watch::Loaded,
    },
    /// `--kubernetes`: the watches (listed whole by `apply_first`).
    Kubernetes(Box<kubernetes::KubeFeed>),
    /// `--etcd`: the client and the first complete listing of the prefix.
    Etcd {
        // Boxed: the client is large beside the file's variant.
        client: Box<etcd_client::Client>,
        options: etcd::EtcdOptions,
        listing: etcd::Listing,
    },
}

impl Feed {
    /// The node's eligibility for load-balancer traffic, where the source knows the node.
    fn node_eligibility(&self) -> Option<http::NodeEligibility> {
        match self {
            Feed::Kubernetes(feed) => Some(feed.eligibility()),
            Feed::File { .. } | Feed::Etcd { .. } => None,
        }
    }

    /// Reads the source whole. A file must load; etcd is retried while it cannot be reached
    /// (a node may boot before its etcd), except for `--dry-run` and `--once`, which report it.
    async fn load(args: &RunArgs) -> anyhow::Result<Feed> {
        if let Some(path) = &args.services {
            let file = watch::FileOptions {
                path: path.clone(),
                node: args.node_name.clone(),
                max_bytes: args.max_table_bytes,
                settle: args.settle(),
            };
            // Off the runtime and bounded in time: a FIFO or a hung file system cannot freeze
            // the start.
            let (spec, version) = watch::load(&file)
                .await
                .with_context(|| format!("cannot start with {}", path.display()))?;
            return Ok(Feed::File {
                file,
                spec,
                version,
            });
        }
        if args.kubernetes() {
            let options = kubernetes::KubeOptions {
                kubeconfig: args.kubeconfig.clone(),
                node: match &args.node_name {
                    Some(node) => node.clone(),
                    None => host_name()?,
                },
                proxy_name: args.service_proxy_name.clone(),
            };
            let feed = kubernetes::KubeFeed::connect(options).await?;
            return Ok(Feed::Kubernetes(Box::new(feed)));
        }
        let options = etcd::EtcdOptions {
            endpoints: args.etcd.clone(),
            prefix: args.etcd_prefix.clone(),
            security: args.etcd_security.clone(),
        };
        let client = etcd::connect(&options).await?;
        let listing = if args.dry_run || args.once {
            etcd::read_all(&client, &options).await?
        } else {
            etcd::read_all_retrying(&client, &options).await
        };
        Ok(Feed::Etcd {
            client: Box::new(client),
            options,
            listing,
        })
    }

    /// What the source is, for the log.
    fn describe(&self) -> String {
        match self {
            Feed::File { file, .. } => file.path.display().to_string(),
            Feed::Kubernetes(_) => "Kubernetes".to_owned(),
            Feed::Etcd {
                options, listing, ..
            } => format!(
                "etcd {} {} at revision {}",
                options.endpoints.join(","),
                options.prefix,
                listing.revision
            ),
        }
    }

    /// Feeds what was read to the tracker (Kubernetes: lists the three kinds whole first).
    async fn apply_first(
        mut self,
        tracker: &mut ChangeTracker,
        args: &RunArgs,
    ) -> anyhow::Result<Self> {
        match &mut self {
            Feed::File { spec, .. } => {
                spec.apply_to(tracker);
            }
            Feed::Kubernetes(feed) => feed.sync_initial(tracker).await,
            Feed::Etcd {
                options, listing, ..
            } => {
                tracker
                    .set_node(args.node_name.clone())
                    .context("--node-name")?;
                tracker.set_zone(args.zone.clone()).context("--zone")?;
                etcd::apply_listing(tracker, &options.prefix, listing);
            }
        }
        Ok(self)
    }

    /// Follows the source's changes into the tracker, until aborted.
    async fn follow(self, tracker: ChangeTracker, poll_interval: std::time::Duration) {
        match self {
            Feed::File { file, version, .. } => {
                watch::watch_file(file, poll_interval, version, tracker).await;
            }
            Feed::Kubernetes(feed) => feed.follow(tracker).await,
            Feed::Etcd {
                client,
                options,
                listing,
            } => etcd::follow(*client, options, listing.revision, tracker).await,
        }
    }
}

/// The host's name, lowercased: kube-proxy's node name without `--hostname-override`.
fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name; give --node-name")?;
    Ok(name.trim().to_lowercase())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            error!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "stopping"),
        _ = term.recv() => info!(signal = "SIGTERM", "stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_iptables::error::{IptablesError, RestoreFailure};
    use backend_iptables::rules::{Family, TableName};

    #[test]
    fn error_chain_prints_each_part_once() {
        // What an unprivileged iptables-save gave: the failure is in the message of each layer
        // and again the source of each.
        let save = IptablesError::Save {
            family: Family::V4,
            table: TableName::Filter,
            failure: RestoreFailure {
                command: "iptables-nft-save -t filter".to_owned(),
                status: Some(4),
                stderr: "Permission denied (you must be root)".to_owned(),
            },
        };
        let error = anyhow::Error::new(save.into_dataplane()).context("cannot sync");
        assert_eq!(
            error_chain(&error),
            "cannot sync: iptables backend: ipv4 filter: iptables-nft-save -t filter failed \
             (exit code 4): Permission denied (you must be root)"
        );
        let io = std::io::Error::from_raw_os_error(13);
        let error = anyhow::Error::new(io).context("cannot read table file t.yaml");
        assert_eq!(
            error_chain(&error),
            "cannot read table file t.yaml: Permission denied (os error 13)"
        );
    }
}
