//! The etcd source (`--etcd`): many hosts, one service catalogue, no Kubernetes.
//!
//! Each service is one key, `<prefix><namespace>/<name>`, whose value is one entry of the table
//! file's `services:` list (YAML or JSON; `svcproxyctl put FILE` writes them). The source reads
//! every key under the prefix, then watches the prefix from the revision of that read, and feeds
//! each put and delete to the change tracker: it holds no table logic of its own.
//!
//! - **Nothing is wiped.** On a lost connection or a compacted revision (`ErrCompacted`: the
//!   watch cannot resume where it stopped) it reads the prefix again, retrying with a backoff
//!   while etcd is away, and applies the listing as changes: a service no longer listed is
//!   deleted, the rest is set (unchanged ones cost nothing). The dataplane keeps running
//!   meanwhile.
//! - **A bad key is its own problem.** A value that does not parse, or whose `name` is not its
//!   key's, rejects that service alone (its last good version keeps running), reported with the
//!   key; a key that names no service is logged and skipped.
//! - **One read, one generation.** The listing and each watch response are applied as one batch
//!   (one table generation, so one sync).
//! - **TLS and users as etcdctl has them** ([`EtcdSecurity`]): the cluster's CA, a client
//!   certificate, a user whose password comes from a file; tokens refreshed when etcd expires
//!   them; never a password over plain HTTP.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, WatchOptions,
};
use proxy_core::file::parse_service;
use proxy_core::tracker::{ChangeTracker, ServiceName};
use proxy_core::validate::escape_control;
use proxy_core::FieldError;
use tracing::{debug, info, warn};

/// The largest gRPC message read (a page of the listing, a watch response): tonic's default of
/// 4 MiB would refuse a page of large services.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Keys per page of the listing.
const PAGE_KEYS: i64 = 1000;
/// The longest wait between two attempts while etcd cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Where the catalogue is.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// The etcd endpoints (`http://host:port`).
    pub endpoints: Vec<String>,
    /// The key prefix of the services, e.g. `/svcproxy/services/`.
    pub prefix: String,
    /// TLS and authentication, when the cluster asks for them.
    pub security: EtcdSecurity,
}

/// How to prove who we are to etcd and check who it is: the flags etcdctl calls `--cacert`,
/// `--cert`, `--key` and `--user`, shared by `svcproxy --etcd` and `svcproxyctl`. With a CA or
/// a certificate, endpoints written without a scheme are `https://`; TLS settings or a user
/// with an `http://` endpoint are refused (a password never crosses the network in clear).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdSecurity {
    /// The CA bundle (PEM) that signed etcd's server certificate. The system's roots are not
    /// used (etcd clusters run their own CA): an https endpoint needs this.
    #[arg(long = "etcd-cacert", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Our client certificate (PEM), for an etcd started with `--client-cert-auth`.
    #[arg(long = "etcd-cert", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long = "etcd-key", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The etcd user to authenticate as (etcd's `auth enable`); the password is read from
    /// --etcd-password-file, never from the command line.
    #[arg(long = "etcd-user", value_name = "NAME", requires = "password_file")]
    pub user: Option<String>,
    /// A file holding the user's password (one line; a trailing newline is dropped).
    #[arg(long = "etcd-password-file", value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
}

impl EtcdSecurity {
    /// Whether any TLS setting is given.
    fn wants_tls(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some()
    }

    /// The client's connect options with these settings (files read now).
    fn apply(&self, mut connect: ConnectOptions) -> Result<ConnectOptions, EtcdError> {
        if self.wants_tls() {
            let mut tls = TlsOptions::new();
            if let Some(path) = &self.cacert {
                tls = tls.ca_certificate(Certificate::from_pem(read_credential(path)?));
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.identity(Identity::from_pem(
                    read_credential(cert)?,
                    read_credential(key)?,
                ));
            }
            connect = connect.with_tls(tls);
        }
        if let (Some(user), Some(path)) = (&self.user, &self.password_file) {
            let password =
                String::from_utf8(read_credential(path)?).map_err(|_| EtcdError::Credentials {
                    path: path.clone(),
                    reason: "not UTF-8".to_owned(),
                })?;
            let password = password.strip_suffix('\n').unwrap_or(&password);
            let password = password.strip_suffix('\r').unwrap_or(password);
            // etcd's tokens expire (`--auth-token-ttl`, 5 minutes by default) while a proxy
            // runs for months: a request that meets an expired token authenticates again.
            connect = connect
                .with_user(user.clone(), password.to_owned())
                .with_auto_token_refresh(true);
        }
        Ok(connect)
    }

    /// `endpoints` with a scheme: `https://` when TLS is set up, else `http://`; a user over
    /// `http://` is refused (the password would cross the network in clear).
    fn endpoints(&self, endpoints: &[String]) -> Result<Vec<String>, EtcdError> {
        let tls = self.wants_tls();
        endpoints
            .iter()
            .map(|endpoint| {
                let url = if endpoint.contains("://") {
                    endpoint.clone()
                } else if tls {
                    format!("https://{endpoint}")
                } else {
                    format!("http://{endpoint}")
                };
                if url.starts_with("http://") && (tls || self.user.is_some()) {
                    return Err(EtcdError::Insecure {
                        endpoint: endpoint.clone(),
                    });
                }
                Ok(url)
            })
            .collect()
    }
}

/// A credential file's bytes.
fn read_credential(path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|error| EtcdError::Credentials {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// Why etcd could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A certificate, key or password file could not be read.
    #[error("cannot read the etcd credential {}: {reason}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// TLS settings or a user given with an `http://` endpoint.
    #[error("etcd endpoint {endpoint}: TLS settings or a user need an https:// endpoint")]
    Insecure {
        /// The endpoint as given.
        endpoint: String,
    },
    /// No connection could be set up.
    #[error("cannot connect to etcd at {endpoints}: {error}")]
    Connect {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The client's error (in the message: it is the whole story).
        error: etcd_client::Error,
    },
    /// The listing failed.
    #[error("cannot read {prefix:?} from etcd at {endpoints}: {error}")]
    Read {
        /// The prefix read.
        prefix: String,
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The client's error.
        error: etcd_client::Error,
    },
}

/// Every key under the prefix, at one revision.
#[derive(Debug, Default)]
pub struct Listing {
    /// `(key, value)`, in key order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The store's revision the listing was read at: the watch starts after it.
    pub revision: i64,
}

/// Connects to etcd (the connection itself is made by the first request).
///
/// # Errors
/// [`EtcdError::Credentials`] or [`EtcdError::Insecure`] for unusable TLS or user settings;
/// [`EtcdError::Connect`] when the endpoints are not usable or the user is refused.
pub async fn connect(options: &EtcdOptions) -> Result<Client, EtcdError> {
    let connect = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        // A peer that vanished without closing (a partition, a crashed host) is found within
        // seconds rather than at the next TCP retransmission timeout.
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    let connect = options.security.apply(connect)?;
    let endpoints = options.security.endpoints(&options.endpoints)?;
    Client::connect(&endpoints, Some(connect))
        .await
        .map_err(|error| EtcdError::Connect {
            endpoints: options.endpoints.join(","),
            error,
        })
}

/// Reads every key under the prefix, page by page, all at the revision of the first page.
///
/// # Errors
/// [`EtcdError::Read`] when a request fails.
pub async fn read_all(client: &Client, options: &EtcdOptions) -> Result<Listing, EtcdError> {
    let failed = |error| EtcdError::Read {
        prefix: options.prefix.clone(),
        endpoints: options.endpoints.join(","),
        error,
    };
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let end = prefix_end(options.prefix.as_bytes());
    let mut listing = Listing::default();
    let mut from = options.prefix.as_bytes().to_vec();
    loop {
        let mut get = GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE_KEYS);
        if listing.revision > 0 {
            get = get.with_revision(listing.revision);
        }
        let mut page = kv.get(from.clone(), Some(get)).await.map_err(failed)?;
        if listing.revision == 0 {
            listing.revision = page.header().map_or(0, |header| header.revision());
        }
        let more = page.more();
        let kvs = page.take_kvs();
        let Some(last) = kvs.last() else { break };
        // The next page starts just after the last key.
        from = last.key().to_vec();
        from.push(0);
        listing.entries.extend(
            kvs.into_iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
        );
        if !more {
            break;
        }
    }
    Ok(listing)
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes, or empty: every key from the prefix on.
    vec![0]
}

/// Reads the prefix until it succeeds, waiting longer after each failure (up to
/// `MAX_BACKOFF`, 10 s): etcd may be restarting, or not up yet when the node boots.
pub async fn read_all_retrying(client: &Client, options: &EtcdOptions) -> Listing {
    let mut wait = Duration::from_millis(200);
    loop {
        match read_all(client, options).await {
            Ok(listing) => return listing,
            Err(error) => {
                warn!(%error, retry_in_ms = wait.as_millis() as u64, "cannot read the catalogue; the dataplane keeps what it has");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The service a key stands for: the part after the prefix, `namespace/name`.
///
/// # Errors
/// What is wrong with the key, for the log.
pub fn key_service(prefix: &str, key: &[u8]) -> Result<ServiceName, String> {
    let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_owned())?;
    let rest = key
        .strip_prefix(prefix)
        .ok_or_else(|| format!("the key is not under {prefix:?}"))?;
    match rest.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(ServiceName::new(namespace, name))
        }
        _ => Err(format!(
            "the key must be {prefix}<namespace>/<name>, not {:?}",
            escape_control(key)
        )),
    }
}

/// Applies a put of `key` (a service's whole description) to the tracker.
pub fn put(tracker: &mut ChangeTracker, prefix: &str, key: &[u8], value: &[u8]) {
    let origin = String::from_utf8_lossy(key).into_owned();
    let name = match key_service(prefix, key) {
        Ok(name) => name,
        Err(problem) => {
            warn!(key = %escape_control(&origin), %problem, "skipped a key that names no service");
            return;
        }
    };
    let reject = |tracker: &mut ChangeTracker, problem: FieldError| {
        warn!(key = %escape_control(&origin), service = %name, error = %problem, "service refused; its last good version keeps running");
        let ports = tracker.port_names(&name);
        tracker.reject_service(name.clone(), ports, vec![problem]);
    };
    let Ok(text) = std::str::from_utf8(value) else {
        reject(tracker, FieldError::new(&origin, "the value is not UTF-8"));
        return;
    };
    let spec = match parse_service(text, &origin) {
        Ok(spec) => spec,
        Err(error) => {
            reject(tracker, FieldError::new(&origin, error.to_string()));
            return;
        }
    };
    if spec.service_name().as_ref() != Some(&name) {
        let problem = format!(
            "name {:?} is not the key's service {name}",
            escape_control(&spec.name)
        );
        reject(tracker, FieldError::new(format!("{origin}: name"), problem));
        return;
    }
    // The name was checked above, so the entry applies (or is rejected with its field paths).
    if let Err(problem) = spec.apply_to(tracker, &origin) {
        reject(tracker, problem);
    }
}

/// Applies a delete of `key`.
pub fn delete(tracker: &mut ChangeTracker, prefix: &str, key: &[u8]) {
    if let Ok(name) = key_service(prefix, key) {
        tracker.delete_service(&name);
    }
}

/// Applies a whole listing as one generation: every listed service set, every other deleted.
/// A listing with fewer services than before is a change (those services go), not a reset.
pub fn apply_listing(tracker: &mut ChangeTracker, prefix: &str, listing: &Listing) -> u64 {
    let mut batch = tracker.batch();
    let mut listed = BTreeSet::new();
    for (key, value) in &listing.entries {
        if let Ok(name) = key_service(prefix, key) {
            listed.insert(name);
        }
        put(&mut batch, prefix, key, value);
    }
    for name in batch.service_names() {
        if !listed.contains(&name) {
            batch.delete_service(&name);
        }
    }
    drop(batch);
    tracker.generation()
}

/// Follows the catalogue from `revision` (that of the listing applied last) forever: watches
/// the prefix, and after a lost connection or a compaction reads it again and watches on.
pub async fn follow(
    client: Client,
    options: EtcdOptions,
    revision: i64,
    mut tracker: ChangeTracker,
) {
    let mut revision = revision;
    loop {
        let why = watch(&client, &options, &mut revision, &mut tracker).await;
        warn!(reason = %why, revision, "etcd watch ended; reading the catalogue again");
        let listing = read_all_retrying(&client, &options).await;
        let generation = apply_listing(&mut tracker, &options.prefix, &listing);
        info!(
            services = listing.entries.len(),
            revision = listing.revision,
            generation,
            "catalogue read again"
        );
        revision = listing.revision;
    }
}

/// Watches from `revision + 1`, applying each response's events as one batch and advancing
/// `revision`, until the watch ends; returns why.
async fn watch(
    client: &Client,
    options: &EtcdOptions,
    revision: &mut i64,
    tracker: &mut ChangeTracker,
) -> String {
    let mut watcher = client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let watch_options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*revision + 1)
        .with_progress_notify();
    let mut stream = match watcher
        .watch(options.prefix.clone(), Some(watch_options))
        .await
    {
        Ok(stream) => stream,
        Err(error) => return format!("cannot start the watch: {error}"),
    };
    debug!(from = *revision + 1, prefix = %options.prefix, "watching");
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return "the stream ended".to_owned(),
            Err(error) => return format!("lost: {error}"),
        };
        if response.compact_revision() > 0 {
            return format!(
                "revision {} is compacted (oldest kept: {})",
                *revision + 1,
                response.compact_revision()
            );
        }
        if response.canceled() {
            return format!("canceled by etcd: {}", response.cancel_reason());
        }
        if response.events().is_empty() {
            // Creation and progress notifications: the store moved on without us.
            if let Some(header) = response.header() {
                *revision = (*revision).max(header.revision());
            }
            continue;
        }
        let mut batch = tracker.batch();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => put(&mut batch, &options.prefix, kv.key(), kv.value()),
                EventType::Delete => delete(&mut batch, &options.prefix, kv.key()),
            }
            *revision = (*revision).max(kv.mod_revision());
        }
        drop(batch);
        debug!(
            events = response.events().len(),
            revision = *revision,
            generation = tracker.generation(),
            "catalogue changed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::{Capabilities, ServicePortName};

    const PREFIX: &str = "/svcproxy/services/";

    fn tracker() -> ChangeTracker {
        ChangeTracker::new("test", Capabilities::everything()).0
    }

    fn web(ip: &str) -> String {
        format!(
            "name: shop/web\ncluster_ips: [198.19.0.10]\nports: [{{name: http, port: 80}}]\n\
             endpoints: [{{ip: {ip}}}]\n"
        )
    }

    fn key(name: &str) -> Vec<u8> {
        format!("{PREFIX}{name}").into_bytes()
    }

    fn web_port() -> ServicePortName {
        ServicePortName::new("shop", "web", "http")
    }

    #[test]
    fn a_key_names_its_service() {
        assert_eq!(
            key_service(PREFIX, &key("shop/web")),
            Ok(ServiceName::new("shop", "web"))
        );
        for bad in ["web", "shop/", "/web", "shop/web/x", ""] {
            assert!(key_service(PREFIX, &key(bad)).is_err(), "{bad}");
        }
        assert!(key_service(PREFIX, b"/other/shop/web").is_err());
        assert!(key_service(PREFIX, b"/svcproxy/services/\xff/web").is_err());
    }

    #[test]
    fn the_prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn puts_and_deletes_follow_the_keys() {
        let mut tracker = tracker();
        put(
            &mut tracker,
            PREFIX,
            &key("shop/web"),
            web("198.18.1.10").as_bytes(),
        );
        let port = tracker.table().get(&web_port()).expect("web is in").clone();
        assert_eq!(port.endpoints[0].addr.to_string(), "198.18.1.10");
        delete(&mut tracker, PREFIX, &key("shop/web"));
        assert!(tracker.table().is_empty());
    }

    #[test]
    fn a_bad_value_keeps_the_last_good_version_and_names_the_key() {
        let mut tracker = tracker();
        put(
            &mut tracker,
            PREFIX,
            &key("shop/web"),
            web("198.18.1.10").as_bytes(),
        );
        put(
            &mut tracker,
            PREFIX,
            &key("shop/web"),
            br#"{"name": "shop/web", "prots": []}"#,
        );
        let port = tracker.table().get(&web_port()).expect("still running");
        assert_eq!(port.endpoints[0].addr.to_string(), "198.18.1.10");
        let skipped = tracker.skipped()[&web_port()].to_string();
        assert!(skipped.contains("/svcproxy/services/shop/web"), "{skipped}");
        // A value naming another service is refused the same way.
        put(
            &mut tracker,
            PREFIX,
            &key("shop/web"),
            web("198.18.1.11")
                .replace("shop/web", "shop/api")
                .as_bytes(),
        );
        let skipped = tracker.skipped()[&web_port()].to_string();
        assert!(
            skipped.contains("not the key's service shop/web"),
            "{skipped}"
        );
        // The next good value applies.
        put(
            &mut tracker,
            PREFIX,
            &key("shop/web"),
            web("198.18.1.12").as_bytes(),
        );
        assert!(tracker.skipped().is_empty());
        let port = tracker.table().get(&web_port()).expect("running");
        assert_eq!(port.endpoints[0].addr.to_string(), "198.18.1.12");
    }

    #[test]
    fn a_listing_deletes_what_it_no_longer_holds_in_one_generation() {
        let mut tracker = tracker();
        let api = r#"{"name": "shop/api", "cluster_ips": ["198.19.0.11"], "ports": [{"name": "http", "port": 80}]}"#;
        let both = Listing {
            entries: vec![
                (key("shop/api"), api.as_bytes().to_vec()),
                (key("shop/web"), web("198.18.1.10").into_bytes()),
            ],
            revision: 7,
        };
        let first = apply_listing(&mut tracker, PREFIX, &both);
        assert_eq!(tracker.table().len(), 2);
        let web_only = Listing {
            entries: vec![(key("shop/web"), web("198.18.1.10").into_bytes())],
            revision: 9,
        };
        let second = apply_listing(&mut tracker, PREFIX, &web_only);
        assert_eq!(second, first + 1, "one generation per listing");
        assert_eq!(tracker.table().len(), 1);
        assert!(tracker.table().get(&web_port()).is_some());
    }

    #[test]
    fn endpoints_get_a_scheme_and_a_password_never_goes_in_clear() {
        let endpoints = |security: &EtcdSecurity, given: &[&str]| {
            let given: Vec<String> = given.iter().map(|e| (*e).to_owned()).collect();
            security.endpoints(&given)
        };
        let plain = EtcdSecurity::default();
        assert_eq!(
            endpoints(&plain, &["198.18.0.100:2379", "https://198.18.0.101:2379"]).expect("ok"),
            ["http://198.18.0.100:2379", "https://198.18.0.101:2379"]
        );
        let tls = EtcdSecurity {
            cacert: Some("ca.pem".into()),
            ..EtcdSecurity::default()
        };
        assert_eq!(
            endpoints(&tls, &["198.18.0.100:2379"]).expect("ok"),
            ["https://198.18.0.100:2379"]
        );
        assert!(matches!(
            endpoints(&tls, &["http://198.18.0.100:2379"]),
            Err(EtcdError::Insecure { .. })
        ));
        let user = EtcdSecurity {
            user: Some("fleet".to_owned()),
            password_file: Some("password".into()),
            ..EtcdSecurity::default()
        };
        for insecure in ["198.18.0.100:2379", "http://198.18.0.100:2379"] {
            assert!(
                matches!(
                    endpoints(&user, &[insecure]),
                    Err(EtcdError::Insecure { .. })
                ),
                "{insecure}"
            );
        }
        assert!(endpoints(&user, &["https://198.18.0.100:2379"]).is_ok());
    }
}
