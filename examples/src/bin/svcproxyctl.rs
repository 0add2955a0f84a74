//! `svcproxyctl`: puts a table file's services into etcd for `svcproxy --etcd`, deletes and
//! lists them.
//!
//! ```text
//! svcproxyctl [--etcd URL,...] [--etcd-prefix P] put FILE [--prune]   # one key per service
//! svcproxyctl [--etcd URL,...] [--etcd-prefix P] delete NAMESPACE/NAME...
//! svcproxyctl [--etcd URL,...] [--etcd-prefix P] list
//! ```
//!
//! TLS and authentication take svcproxy's flags (`--etcd-cacert`, `--etcd-cert`, `--etcd-key`,
//! `--etcd-user` with `--etcd-password-file`).
//!
//! Each service entry of the file becomes the key `<prefix><namespace>/<name>` holding the entry
//! as JSON (the table file's service format). The file is validated whole first, as svcproxy
//! would load it, and refused with every problem named. The keys are written in transactions of
//! at most 128 operations (etcd's default `--max-txn-ops`), so a file of up to 128 services
//! reaches every node as one change. `etcdctl put /svcproxy/services/shop/web "$(cat web.json)"`
//! does the same for one service.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use etcd_client::{Client, GetOptions, Txn, TxnOp};
use examples::svcproxy::etcd::{self, EtcdOptions, EtcdSecurity};
use proxy_core::file::{parse_spec, read_table_text, LoadError, DEFAULT_MAX_TABLE_BYTES};
use proxy_core::tracker::ServiceName;

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// Puts a table file's services into etcd for `svcproxy --etcd`, deletes and lists them.
#[derive(Debug, Parser)]
#[command(name = "svcproxyctl", version)]
struct Cli {
    /// The etcd endpoints, comma-separated or repeated.
    #[arg(
        long,
        value_name = "URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        global = true
    )]
    etcd: Vec<String>,

    /// The prefix of the service keys (svcproxy's --etcd-prefix).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "/svcproxy/services/",
        global = true
    )]
    etcd_prefix: String,

    /// TLS and authentication (as svcproxy's).
    #[command(flatten)]
    security: EtcdSecurity,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes each service of a table file (YAML or JSON) to its key.
    Put {
        /// The table file.
        file: PathBuf,
        /// Also delete the keys under the prefix of services the file does not hold.
        #[arg(long)]
        prune: bool,
    },
    /// Deletes services by name (`namespace/name`).
    Delete {
        /// The services.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Lists the services under the prefix, with the revision each was last written at.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("svcproxyctl: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("svcproxyctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let options = EtcdOptions {
        endpoints: cli.etcd.clone(),
        prefix: cli.etcd_prefix.clone(),
        security: cli.security.clone(),
    };
    let mut client = etcd::connect(&options).await?;
    // Named in every etcd error: which cluster refused.
    let at = options.endpoints.join(",");
    let prefix = cli.etcd_prefix.as_str();
    match cli.command {
        Command::Put { file, prune } => {
            let entries = entries_of(&file, prefix)?;
            let mut ops: Vec<TxnOp> = entries
                .iter()
                .map(|(key, value)| TxnOp::put(key.as_str(), value.as_str(), None))
                .collect();
            if prune {
                let listed: BTreeSet<&str> = entries.iter().map(|(key, _)| key.as_str()).collect();
                for (key, _) in keys(&mut client, prefix, &at).await? {
                    if !listed.contains(key.as_str()) {
                        println!("deleting {key}");
                        ops.push(TxnOp::delete(key, None));
                    }
                }
            }
            let services = entries.len();
            write(&mut client, ops, &at).await?;
            println!("put {services} service(s) under {prefix}");
        }
        Command::Delete { names } => {
            let mut ops = Vec::new();
            for name in names {
                let (namespace, service) = name
                    .split_once('/')
                    .with_context(|| format!("{name:?}: write the service as namespace/name"))?;
                ops.push(TxnOp::delete(
                    format!("{prefix}{}", ServiceName::new(namespace, service)),
                    None,
                ));
            }
            write(&mut client, ops, &at).await?;
        }
        Command::List => {
            for (key, revision) in keys(&mut client, prefix, &at).await? {
                let name = key.strip_prefix(prefix).unwrap_or(&key);
                println!("{name}\trevision {revision}");
            }
        }
    }
    Ok(())
}

/// `(key, value)` of each service of the file, the value as one line of JSON. The file must
/// load as a table (every problem reported), and name each service once.
fn entries_of(file: &std::path::Path, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
    let origin = file.display().to_string();
    let text = read_table_text(file, DEFAULT_MAX_TABLE_BYTES)?;
    let spec = parse_spec(&text, &origin)?;
    // Validated whole, as svcproxy would load it: a file that would not run is not published.
    spec.clone()
        .into_table()
        .map_err(|errors| LoadError::Invalid { origin, errors })?;
    let mut seen = BTreeSet::new();
    let mut entries = Vec::new();
    for service in &spec.services {
        let name = service
            .service_name()
            .with_context(|| format!("{:?} is not a service name", service.name))?;
        anyhow::ensure!(
            seen.insert(name.clone()),
            "{name} appears twice in {}: etcd holds one entry per service (merge them)",
            file.display()
        );
        let value = serde_json::to_string(service).context("cannot write the entry as JSON")?;
        entries.push((format!("{prefix}{name}"), value));
    }
    Ok(entries)
}

/// Every key under `prefix`, with the revision it was last written at (`at`: the endpoints).
async fn keys(client: &mut Client, prefix: &str, at: &str) -> anyhow::Result<Vec<(String, i64)>> {
    let response = client
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .with_context(|| format!("cannot list the services under {prefix} in etcd at {at}"))?;
    Ok(response
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.mod_revision(),
            )
        })
        .collect())
}

/// Sends `ops` in transactions of at most [`MAX_TXN_OPS`] (`at`: the endpoints).
async fn write(client: &mut Client, ops: Vec<TxnOp>, at: &str) -> anyhow::Result<()> {
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let chunk: Vec<TxnOp> = ops.by_ref().take(MAX_TXN_OPS).collect();
        client
            .txn(Txn::new().and_then(chunk))
            .await
            .with_context(|| format!("cannot write to etcd at {at}"))?;
    }
    Ok(())
}
