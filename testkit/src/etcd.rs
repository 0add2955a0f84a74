//! A real etcd server (Debian's `etcd-server`) for a test: one member, its data in a directory the
//! test owns, listening on one address the test chooses (loopback, or an address inside a
//! namespace the test made). Stopped on drop. [`Etcd::start_tls`] serves https only and asks
//! every client for a certificate of the test's [`TestPki`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::free_port;
use crate::netns::Netns;
use crate::process::LoggedChild;
use crate::tls::TestPki;

/// How long etcd may take to start serving.
const START: Duration = Duration::from_secs(30);

/// A one-member etcd; see the [module docs](self).
#[derive(Debug)]
pub struct Etcd {
    data_dir: PathBuf,
    ip: IpAddr,
    client_port: u16,
    peer_port: u16,
    netns: Option<String>,
    tls: Option<TestPki>,
    child: Option<LoggedChild>,
}

impl Etcd {
    /// Starts etcd on `127.0.0.1` with its data under `dir`, on free ports.
    ///
    /// # Panics
    ///
    /// When `etcd` is not installed or does not start serving within 30 s (with its log).
    pub fn start(dir: &Path) -> Self {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let (client_port, peer_port) = (free_port(ip), free_port(ip));
        Self::start_on(dir, ip, client_port, peer_port, None, None)
    }

    /// Starts etcd on `127.0.0.1` serving https with `pki`'s server certificate, requiring a
    /// client certificate signed by its CA (`--client-cert-auth`).
    ///
    /// # Panics
    ///
    /// As [`Etcd::start`].
    pub fn start_tls(dir: &Path, pki: &TestPki) -> Self {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let (client_port, peer_port) = (free_port(ip), free_port(ip));
        Self::start_on(dir, ip, client_port, peer_port, None, Some(pki.clone()))
    }

    /// Starts etcd inside `netns` on `ip` (an address of that namespace), ports 2379 and 2380.
    ///
    /// # Panics
    ///
    /// As [`Etcd::start`].
    pub fn start_in(netns: &Netns, dir: &Path, ip: IpAddr) -> Self {
        Self::start_on(dir, ip, 2379, 2380, Some(netns.name().to_owned()), None)
    }

    fn start_on(
        dir: &Path,
        ip: IpAddr,
        client_port: u16,
        peer_port: u16,
        netns: Option<String>,
        tls: Option<TestPki>,
    ) -> Self {
        let mut etcd = Self {
            data_dir: dir.join("etcd-data"),
            ip,
            client_port,
            peer_port,
            netns,
            tls,
            child: None,
        };
        etcd.resume();
        etcd
    }

    /// The client URL, `http://ip:port` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", SocketAddr::new(self.ip, self.client_port))
    }

    /// `etcdctl` (Debian's etcd-client) aimed at this etcd: `--endpoints`, and with TLS the CA
    /// and the client certificate.
    pub fn etcdctl(&self) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .arg("--endpoints")
            .arg(self.url())
            .env("ETCDCTL_API", "3");
        if let Some(pki) = &self.tls {
            command
                .arg("--cacert")
                .arg(&pki.ca_cert)
                .arg("--cert")
                .arg(&pki.client_cert)
                .arg("--key")
                .arg(&pki.client_key);
        }
        command.env_remove("http_proxy").env_remove("HTTP_PROXY");
        command
    }

    /// Stops etcd (SIGTERM), keeping its data.
    ///
    /// # Panics
    ///
    /// When it does not exit within 10 s.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            child.terminate(Duration::from_secs(10));
        }
    }

    /// Starts etcd again on the same data and address (after [`Etcd::stop`]).
    ///
    /// # Panics
    ///
    /// As [`Etcd::start`].
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let peer = format!("http://{}", SocketAddr::new(self.ip, self.peer_port));
        let client = self.url();
        let mut command = match &self.netns {
            Some(name) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name, "etcd"]);
                command
            }
            None => Command::new("etcd"),
        };
        command
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")]);
        if let Some(pki) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca_cert)
                .arg("--client-cert-auth");
        }
        command
            // No metrics listener, no proxy from the environment.
            .env_remove("ETCD_LISTEN_METRICS_URLS")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY");
        let child = LoggedChild::spawn("etcd", &mut command).unwrap_or_else(|e| {
            panic!("cannot start etcd ({e}): install Debian's etcd-server (.ci/run does)")
        });
        child.wait_for_log("ready to serve client requests", START);
        self.child = Some(child);
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        self.child
            .as_ref()
            .map(LoggedChild::log)
            .unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // LoggedChild kills and reaps on drop.
        self.child.take();
    }
}
