//! `kube-svcproxy`: a kube-proxy replacement built on the library. It takes kube-proxy's flags
//! (those that exist for what it does, with kube-proxy's defaults) and runs svcproxy's
//! Kubernetes source (`--kubernetes`): the flags are translated into svcproxy's, so the two
//! programs share one runtime.
//!
//! `--config FILE` reads kube-proxy's own configuration file (a `KubeProxyConfiguration`, as
//! kubeadm writes it into the `kube-proxy` ConfigMap), so that kube-proxy's DaemonSet can run
//! this binary with its arguments unchanged (`--config=/var/lib/kube-proxy/config.conf
//! --hostname-override=$(NODE_NAME)`). A flag given on the command line wins over the file, as
//! `--hostname-override` does for kube-proxy; fields we have no use for are ignored, and a field
//! we cannot honour is refused by name. As kube-proxy does, it exits (status 1) when the file's
//! content changes, so that its DaemonSet starts it again with the new configuration; the rules
//! the kernel modes programmed keep forwarding meanwhile, and the next run adopts them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser as _};
use serde::Deserialize;

use crate::svcproxy::cli::{parse_duration, BackendKind};

/// A kube-proxy replacement: watches Services, EndpointSlices and this Node and programs the
/// node's service dataplane (kube-proxy's flags and defaults where they exist).
#[derive(Debug, clap::Parser)]
#[command(name = "kube-svcproxy", version)]
pub struct KubeProxyArgs {
    /// kube-proxy's configuration file, a `KubeProxyConfiguration` as kubeadm writes it
    /// (apiVersion kubeproxy.config.k8s.io/v1alpha1); flags on the command line win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Path to a kubeconfig file (default: the in-cluster config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// This node's name, instead of the host name.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,

    /// Which proxy mode to use.
    #[arg(long, value_enum, default_value_t = BackendKind::Iptables)]
    pub proxy_mode: BackendKind,

    /// The pod network, comma-separated (one per family): traffic from outside it to a
    /// cluster IP is masqueraded.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub cluster_cidr: Vec<ipnet::IpNet>,

    /// Serve node ports only on this node's addresses within these networks (comma-separated).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub nodeport_addresses: Vec<ipnet::IpNet>,

    /// Where to serve /metrics (kube-proxy's default: localhost only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: SocketAddr,

    /// Where to serve /healthz and /livez.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: SocketAddr,

    /// Masquerade all traffic to cluster IPs.
    #[arg(long)]
    pub masquerade_all: bool,

    /// Serve the Services labelled `service.kubernetes.io/service-proxy-name` with this name
    /// (without it, only unlabelled Services, as kube-proxy).
    #[arg(long, value_name = "NAME")]
    pub service_proxy_name: Option<String>,

    /// ipvs mode: strict ARP.
    #[arg(long)]
    pub ipvs_strict_arp: bool,

    /// Conntrack table entries per CPU; 0 leaves the size alone (only ever raised). Not in
    /// userspace mode, which NATs nothing.
    #[arg(long, value_name = "N", default_value_t = 32_768)]
    pub conntrack_max_per_core: u64,

    /// The least conntrack table size.
    #[arg(long, value_name = "N", default_value_t = 131_072)]
    pub conntrack_min: u64,

    /// Idle timeout of established TCP flows in conntrack (0s: leave it).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_established: Duration,

    /// Timeout of TCP flows in CLOSE_WAIT (0s: leave it).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_close_wait: Duration,

    /// Remove what any proxy mode programmed on this node, and exit.
    #[arg(long)]
    pub cleanup: bool,

    /// Fields of --config set to something other than empty that kube-svcproxy does not
    /// honour (`ipvs.scheduler = "lc"`), to be told at start.
    #[arg(skip)]
    pub ignored_config: Vec<String>,

    /// The text of --config as it was read: the process exits once the file holds anything else.
    #[arg(skip)]
    pub loaded_config: Option<String>,
}

impl KubeProxyArgs {
    /// svcproxy's command line for the same run.
    pub fn svcproxy_args(&self) -> Vec<String> {
        let mut args = vec!["svcproxy".to_owned()];
        if self.cleanup {
            // Every mode's state, as kube-proxy's --cleanup.
            args.push("--cleanup".to_owned());
            return args;
        }
        match &self.kubeconfig {
            Some(path) => {
                args.push("--kubeconfig".to_owned());
                args.push(path.display().to_string());
            }
            None => args.push("--kubernetes".to_owned()),
        }
        let mode = match self.proxy_mode {
            BackendKind::Userspace => "userspace",
            BackendKind::Iptables => "iptables",
            BackendKind::Ipvs => "ipvs",
            BackendKind::Nftables => "nftables",
        };
        args.extend(["--backend".to_owned(), mode.to_owned()]);
        if let Some(node) = &self.hostname_override {
            args.extend(["--node-name".to_owned(), node.clone()]);
        }
        for cidr in &self.cluster_cidr {
            args.extend(["--cluster-cidr".to_owned(), cidr.to_string()]);
        }
        for cidr in &self.nodeport_addresses {
            args.extend(["--nodeport-addresses".to_owned(), cidr.to_string()]);
        }
        args.extend([
            "--metrics-addr".to_owned(),
            self.metrics_bind_address.to_string(),
            "--healthz-addr".to_owned(),
            self.healthz_bind_address.to_string(),
        ]);
        if self.masquerade_all {
            args.push("--masquerade-all".to_owned());
        }
        if let Some(name) = &self.service_proxy_name {
            args.extend(["--service-proxy-name".to_owned(), name.clone()]);
        }
        if self.ipvs_strict_arp {
            args.push("--ipvs-strict-arp".to_owned());
        }
        // kube-proxy tunes conntrack for the NAT it programs; the userspace mode NATs nothing.
        if self.proxy_mode != BackendKind::Userspace {
            let seconds = |d: Duration| format!("{}s", d.as_secs());
            args.extend([
                "--conntrack-max-per-core".to_owned(),
                self.conntrack_max_per_core.to_string(),
                "--conntrack-min".to_owned(),
                self.conntrack_min.to_string(),
                "--conntrack-tcp-timeout-established".to_owned(),
                seconds(self.conntrack_tcp_timeout_established),
                "--conntrack-tcp-timeout-close-wait".to_owned(),
                seconds(self.conntrack_tcp_timeout_close_wait),
            ]);
        }
        args
    }
}

/// The fields of kube-proxy's `KubeProxyConfiguration` that kube-svcproxy reads (the rest are
/// ignored). An empty string, as kubeadm writes for unset fields, means the default.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubeProxyConfiguration {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    client_connection: ClientConnection,
    hostname_override: Option<String>,
    mode: Option<String>,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    node_port_addresses: Option<Vec<String>>,
    metrics_bind_address: Option<String>,
    healthz_bind_address: Option<String>,
    #[serde(default)]
    iptables: IptablesConfiguration,
    #[serde(default)]
    ipvs: IpvsConfiguration,
    #[serde(default)]
    conntrack: ConntrackConfiguration,
}

/// `conntrack:` (kubeadm writes `null` for unset numbers and `0s` or nothing for durations).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConntrackConfiguration {
    max_per_core: Option<u64>,
    min: Option<u64>,
    tcp_established_timeout: Option<String>,
    tcp_close_wait_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientConnection {
    kubeconfig: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IptablesConfiguration {
    masquerade_all: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpvsConfiguration {
    #[serde(rename = "strictARP")]
    strict_arp: Option<bool>,
}

/// The configuration's fields kube-svcproxy reads (the others, when set, are reported).
const HONOURED_FIELDS: [&str; 16] = [
    "apiVersion",
    "kind",
    "clientConnection.kubeconfig",
    "hostnameOverride",
    "mode",
    "clusterCIDR",
    "nodePortAddresses",
    "metricsBindAddress",
    "healthzBindAddress",
    "iptables.masqueradeAll",
    "ipvs.strictARP",
    "conntrack.maxPerCore",
    "conntrack.min",
    "conntrack.tcpEstablishedTimeout",
    "conntrack.tcpCloseWaitTimeout",
    // The legacy userspace proxy's listen address: nothing here listens on it.
    "bindAddress",
];

/// The set fields of `tree` that are not honoured, as `path = value`: leaves that say more
/// than "unset" (null, empty, false, zero, `0s`), so that kubeadm's file of empty defaults
/// reports nothing.
fn ignored_fields(tree: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match value {
            Value::Object(fields) => {
                for (name, inner) in fields {
                    let path = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    walk(&path, inner, out);
                }
            }
            Value::Null | Value::Bool(false) => {}
            Value::String(text) if text.is_empty() || text == "0s" => {}
            Value::Number(n) if n.as_f64() == Some(0.0) => {}
            Value::Array(items) if items.is_empty() => {}
            _ if HONOURED_FIELDS.contains(&path) => {}
            other => out.push(format!("{path} = {other}")),
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

/// The API version and kind a configuration file must declare.
const CONFIG_API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
const CONFIG_KIND: &str = "KubeProxyConfiguration";

/// A non-empty string field.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// An `ip:port` field; a bare IP takes `default_port` (kube-proxy's older form).
fn bind_address(field: &str, value: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    value
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .with_context(|| format!("{field}: {value:?} is not an ip:port"))
}

impl KubeProxyArgs {
    /// Parses kube-svcproxy's command line, then fills what it did not say from `--config`.
    ///
    /// # Errors
    /// The command line is invalid (clap's error, printed and exited on by the caller), or the
    /// configuration file cannot be read or holds a value we cannot honour.
    pub fn from_command_line(
        argv: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    ) -> anyhow::Result<Self> {
        let matches = KubeProxyArgs::command().try_get_matches_from(argv)?;
        let mut args = KubeProxyArgs::from_arg_matches(&matches)?;
        if let Some(path) = args.config.clone() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read --config {}", path.display()))?;
            // Parsed once: the tree names the fields we ignore, the typed view is read from it.
            let not_config =
                || format!("--config {}: not a KubeProxyConfiguration", path.display());
            let tree: serde_json::Value = serde_saphyr::from_str(&text).with_context(not_config)?;
            let config = KubeProxyConfiguration::deserialize(&tree).with_context(not_config)?;
            args.merge(&config, &matches)
                .with_context(|| format!("--config {}", path.display()))?;
            args.ignored_config = ignored_fields(&tree);
            args.loaded_config = Some(text);
        }
        Ok(args)
    }

    /// Takes each field of `config` whose flag was not on the command line.
    fn merge(
        &mut self,
        config: &KubeProxyConfiguration,
        matches: &ArgMatches,
    ) -> anyhow::Result<()> {
        match (config.api_version.as_deref(), config.kind.as_deref()) {
            (Some(CONFIG_API_VERSION), Some(CONFIG_KIND)) => {}
            (version, kind) => anyhow::bail!(
                "apiVersion {version:?}, kind {kind:?}: expected {CONFIG_API_VERSION} {CONFIG_KIND}"
            ),
        }
        let unset = |id: &str| matches.value_source(id) != Some(ValueSource::CommandLine);
        if unset("kubeconfig") {
            if let Some(path) = given(&config.client_connection.kubeconfig) {
                self.kubeconfig = Some(PathBuf::from(path));
            }
        }
        if unset("hostname_override") {
            if let Some(name) = given(&config.hostname_override) {
                self.hostname_override = Some(name.to_owned());
            }
        }
        if unset("proxy_mode") {
            if let Some(mode) = given(&config.mode) {
                self.proxy_mode = match mode {
                    "iptables" => BackendKind::Iptables,
                    "ipvs" => BackendKind::Ipvs,
                    "nftables" => BackendKind::Nftables,
                    // Not kube-proxy's any more, but ours: the flag takes it, so the file does.
                    "userspace" => BackendKind::Userspace,
                    other => anyhow::bail!(
                        "mode: {other:?} is not iptables, ipvs, nftables or userspace"
                    ),
                };
            }
        }
        if unset("cluster_cidr") {
            if let Some(cidrs) = given(&config.cluster_cidr) {
                self.cluster_cidr = cidrs
                    .split(',')
                    .map(|cidr| {
                        cidr.trim()
                            .parse()
                            .with_context(|| format!("clusterCIDR: {cidr:?} is not a CIDR"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
        }
        if unset("nodeport_addresses") {
            if let Some(values) = &config.node_port_addresses {
                self.nodeport_addresses = values
                    .iter()
                    .map(|value| match value.as_str() {
                        "primary" => anyhow::bail!(
                            "nodePortAddresses: \"primary\" is not supported; list the node's networks as CIDRs"
                        ),
                        cidr => cidr.parse().with_context(|| {
                            format!("nodePortAddresses: {cidr:?} is not a CIDR")
                        }),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
        }
        if unset("metrics_bind_address") {
            if let Some(addr) = given(&config.metrics_bind_address) {
                self.metrics_bind_address = bind_address("metricsBindAddress", addr, 10249)?;
            }
        }
        if unset("healthz_bind_address") {
            if let Some(addr) = given(&config.healthz_bind_address) {
                self.healthz_bind_address = bind_address("healthzBindAddress", addr, 10256)?;
            }
        }
        if unset("masquerade_all") {
            self.masquerade_all = config.iptables.masquerade_all.unwrap_or(false);
        }
        if unset("ipvs_strict_arp") {
            self.ipvs_strict_arp = config.ipvs.strict_arp.unwrap_or(false);
        }
        let conntrack = &config.conntrack;
        if let (true, Some(n)) = (unset("conntrack_max_per_core"), conntrack.max_per_core) {
            self.conntrack_max_per_core = n;
        }
        if let (true, Some(n)) = (unset("conntrack_min"), conntrack.min) {
            self.conntrack_min = n;
        }
        for (id, field, value, target) in [
            (
                "conntrack_tcp_timeout_established",
                "conntrack.tcpEstablishedTimeout",
                &conntrack.tcp_established_timeout,
                &mut self.conntrack_tcp_timeout_established,
            ),
            (
                "conntrack_tcp_timeout_close_wait",
                "conntrack.tcpCloseWaitTimeout",
                &conntrack.tcp_close_wait_timeout,
                &mut self.conntrack_tcp_timeout_close_wait,
            ),
        ] {
            // Unset (null) keeps kube-proxy's default; an explicit 0s leaves the kernel's value,
            // as kube-proxy does.
            if let (true, Some(text)) = (unset(id), given(value)) {
                *target = parse_duration(text).map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// `kube-svcproxy`'s `main`.
pub fn main() -> ExitCode {
    let mut args = match KubeProxyArgs::from_command_line(std::env::args_os()) {
        Ok(args) => args,
        Err(err) => match err.downcast::<clap::Error>() {
            // --help, --version and usage errors, as clap prints them.
            Ok(clap_error) => clap_error.exit(),
            Err(err) => {
                eprintln!("kube-svcproxy: {err:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    if !args.ignored_config.is_empty() {
        // Before the runtime's logging starts: plain stderr, once.
        eprintln!(
            "kube-svcproxy: --config: not honoured (kube-svcproxy has no such setting): {}",
            args.ignored_config.join(", ")
        );
    }
    if let (Some(path), Some(loaded), false) =
        (args.config.clone(), args.loaded_config.take(), args.cleanup)
    {
        exit_when_config_changes(path, loaded, CONFIG_CHECK_INTERVAL);
    }
    crate::svcproxy::main_with(crate::svcproxy::cli::Cli::parse_from(args.svcproxy_args()))
}

/// How often the --config file is read again for a change. kube-proxy is told by inotify; a
/// ConfigMap volume swaps a symlink to publish a change, which a read of the path sees whatever
/// the volume does, at the cost of a small file read this often. (svcproxy's table-file watcher,
/// `svcproxy::watch`, is not used here: it exists to apply settled versions to the tracker with
/// millisecond latency; any byte that differs is enough here, and a restart is seconds anyway.)
const CONFIG_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Why the configuration file at `path` no longer is what was `loaded`, if it is not.
fn config_change(path: &std::path::Path, loaded: &str) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text == loaded => None,
        Ok(_) => Some("its content changed".to_owned()),
        Err(e) => Some(format!("it cannot be read any more ({e})")),
    }
}

/// Watches `path` on a thread of its own and ends the process with status 1 once it changes, as
/// kube-proxy does: its DaemonSet then starts it again, reading the new configuration. The exit
/// is immediate (no clean-up runs), so the kernel modes' rules keep forwarding until the next
/// run adopts them.
fn exit_when_config_changes(path: PathBuf, loaded: String, every: Duration) {
    let watch = move || loop {
        std::thread::sleep(every);
        if let Some(why) = config_change(&path, &loaded) {
            tracing::error!(
                config = %path.display(),
                "--config changed: {why}; exiting so that it is read again (as kube-proxy does)"
            );
            std::process::exit(1);
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("config-watch".to_owned())
        .spawn(watch)
    {
        // Without the watch the proxy still runs; a change then needs a restart by hand.
        eprintln!("kube-svcproxy: cannot watch --config for changes: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_flags_become_svcproxy_flags_with_kube_proxy_defaults() {
        let args = KubeProxyArgs::parse_from([
            "kube-svcproxy",
            "--kubeconfig",
            "/etc/kube.conf",
            "--hostname-override",
            "node-a",
            "--proxy-mode",
            "nftables",
            "--cluster-cidr",
            "198.18.0.0/16,2001:db8::/64",
        ]);
        assert_eq!(
            args.svcproxy_args().join(" "),
            "svcproxy --kubeconfig /etc/kube.conf --backend nftables --node-name node-a \
             --cluster-cidr 198.18.0.0/16 --cluster-cidr 2001:db8::/64 \
             --metrics-addr 127.0.0.1:10249 --healthz-addr 0.0.0.0:10256 \
             --conntrack-max-per-core 32768 --conntrack-min 131072 \
             --conntrack-tcp-timeout-established 86400s --conntrack-tcp-timeout-close-wait 3600s"
        );
        // The userspace mode NATs nothing: no conntrack tuning.
        let userspace = KubeProxyArgs::parse_from(["kube-svcproxy", "--proxy-mode", "userspace"]);
        assert!(!userspace.svcproxy_args().join(" ").contains("conntrack"));
        let defaults = KubeProxyArgs::parse_from(["kube-svcproxy"]);
        assert!(defaults
            .svcproxy_args()
            .join(" ")
            .starts_with("svcproxy --kubernetes --backend iptables"));
        let cleanup = KubeProxyArgs::parse_from(["kube-svcproxy", "--cleanup"]);
        assert_eq!(cleanup.svcproxy_args(), ["svcproxy", "--cleanup"]);
        // Every translation parses as svcproxy's own command line.
        for args in [args, defaults, cleanup] {
            crate::svcproxy::cli::Cli::try_parse_from(args.svcproxy_args()).expect("parses");
        }
    }

    /// kubeadm's `config.conf`, as its `kube-proxy` ConfigMap holds it (unset fields written
    /// empty), with the values kube-svcproxy reads set.
    const KUBEADM_CONFIG: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 198.18.0.0/16,2001:db8:42::/56
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: true
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
metricsBindAddress: 0.0.0.0:10249
mode: nftables
nodePortAddresses:
- 198.18.0.0/15
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
"#;

    fn with_config(text: &str, flags: &[&str]) -> anyhow::Result<KubeProxyArgs> {
        let dir = testkit_dir();
        let path = dir.join("config.conf");
        std::fs::write(&path, text).expect("write config");
        let mut argv = vec![
            "kube-svcproxy".to_owned(),
            "--config".to_owned(),
            path.display().to_string(),
        ];
        argv.extend(flags.iter().map(|f| (*f).to_owned()));
        let args = KubeProxyArgs::from_command_line(argv);
        let _ = std::fs::remove_dir_all(&dir);
        args
    }

    /// A directory of this test's own (no dev-dependency on testkit in the lib's unit tests).
    fn testkit_dir() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kube-svcproxy-config-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn kubeadm_config_file_with_hostname_override_as_its_daemonset_runs_it() {
        let args = with_config(KUBEADM_CONFIG, &["--hostname-override", "node-a"]).expect("loads");
        assert_eq!(
            args.svcproxy_args().join(" "),
            "svcproxy --kubeconfig /var/lib/kube-proxy/kubeconfig.conf --backend nftables \
             --node-name node-a --cluster-cidr 198.18.0.0/16 --cluster-cidr 2001:db8:42::/56 \
             --nodeport-addresses 198.18.0.0/15 --metrics-addr 0.0.0.0:10249 \
             --healthz-addr 0.0.0.0:10256 --masquerade-all --conntrack-max-per-core 32768 \
             --conntrack-min 131072 --conntrack-tcp-timeout-established 86400s \
             --conntrack-tcp-timeout-close-wait 3600s"
        );
        crate::svcproxy::cli::Cli::try_parse_from(args.svcproxy_args()).expect("parses");
        // kubeadm's empty defaults are not reported as ignored.
        assert_eq!(args.ignored_config, Vec::<String>::new());
        let tuned = with_config(
            &KUBEADM_CONFIG
                .replace("scheduler: \"\"", "scheduler: lc")
                .replace("masqueradeBit: null", "masqueradeBit: 14"),
            &[],
        )
        .expect("loads");
        assert_eq!(
            tuned.ignored_config,
            ["iptables.masqueradeBit = 14", "ipvs.scheduler = \"lc\""]
        );
    }

    #[test]
    fn flags_on_the_command_line_win_over_the_config_file() {
        let args = with_config(
            KUBEADM_CONFIG,
            &[
                "--proxy-mode",
                "iptables",
                "--kubeconfig",
                "/etc/other.conf",
                "--metrics-bind-address",
                "127.0.0.1:9999",
            ],
        )
        .expect("loads");
        let line = args.svcproxy_args().join(" ");
        assert!(
            line.starts_with("svcproxy --kubeconfig /etc/other.conf --backend iptables"),
            "{line}"
        );
        assert!(line.contains("--metrics-addr 127.0.0.1:9999"), "{line}");
        // What the flags did not say still comes from the file.
        assert!(line.contains("--cluster-cidr 198.18.0.0/16"), "{line}");

        // conntrack: 0 and 0s leave the kernel's values, as in kube-proxy; a flag still wins.
        let conntrack = with_config(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             conntrack:\n  maxPerCore: 0\n  tcpEstablishedTimeout: 2h\n  tcpCloseWaitTimeout: 0s\n",
            &["--conntrack-min", "4096"],
        )
        .expect("loads");
        assert!(
            conntrack.svcproxy_args().join(" ").ends_with(
                "--conntrack-max-per-core 0 --conntrack-min 4096 \
                 --conntrack-tcp-timeout-established 7200s --conntrack-tcp-timeout-close-wait 0s"
            ),
            "{:?}",
            conntrack.svcproxy_args()
        );
    }

    #[test]
    fn config_values_we_cannot_honour_are_refused_by_name() {
        let cases = [
            ("mode: kernelspace", "mode: \"kernelspace\""),
            ("clusterCIDR: not-a-cidr", "clusterCIDR: \"not-a-cidr\""),
            (
                "nodePortAddresses: [primary]",
                "\"primary\" is not supported",
            ),
            (
                "healthzBindAddress: nowhere",
                "healthzBindAddress: \"nowhere\"",
            ),
        ];
        for (line, want) in cases {
            let text = format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{line}\n"
            );
            let err = with_config(&text, &[]).expect_err(line);
            assert!(format!("{err:#}").contains(want), "{line}: {err:#}");
        }
        let wrong_kind = with_config("apiVersion: v1\nkind: ConfigMap\n", &[]).expect_err("kind");
        assert!(format!("{wrong_kind:#}").contains("expected kubeproxy.config.k8s.io/v1alpha1"));
        // A bare IP takes kube-proxy's port.
        let bare = with_config(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhealthzBindAddress: 0.0.0.0\n",
            &[],
        )
        .expect("loads");
        assert_eq!(
            bare.healthz_bind_address,
            "0.0.0.0:10256".parse().expect("addr")
        );
    }

    #[test]
    fn a_config_change_is_seen_in_content_and_in_a_file_gone() {
        let dir = testkit_dir();
        let path = dir.join("config.conf");
        let loaded = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
        std::fs::write(&path, loaded).expect("write config");
        assert_eq!(config_change(&path, loaded), None);
        // Written again with the same text (a ConfigMap resync): no change.
        std::fs::write(&path, loaded).expect("rewrite config");
        assert_eq!(config_change(&path, loaded), None);
        std::fs::write(&path, format!("{loaded}mode: nftables\n")).expect("change config");
        assert_eq!(
            config_change(&path, loaded).as_deref(),
            Some("its content changed")
        );
        std::fs::remove_file(&path).expect("remove config");
        let gone = config_change(&path, loaded).expect("a file gone is a change");
        assert!(gone.starts_with("it cannot be read any more"), "{gone}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_config_text_is_kept_to_compare_with() {
        let text = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
        let args = with_config(text, &[]).expect("loads");
        assert_eq!(args.loaded_config.as_deref(), Some(text));
    }
}
