//! `svcproxy --etcd` end to end: a real etcd (Debian's `etcd-server`) on loopback in a temp dir,
//! the real `svcproxy` (userspace backend, no root) and `svcproxyctl` binaries, real TCP.
//!
//! Every address is on loopback (127.0.0.0/8); ports are picked free by the OS; each wait is
//! bounded.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use testkit::etcd::Etcd;
use testkit::fs::TempDir;
use testkit::net::{free_port, AnswerServer};
use testkit::process::LoggedChild;
use testkit::tls::TestPki;
use testkit::wait::poll;

const SVCPROXY: &str = env!("CARGO_BIN_EXE_svcproxy");
const SVCPROXYCTL: &str = env!("CARGO_BIN_EXE_svcproxyctl");
const WAIT: Duration = Duration::from_secs(15);

/// Runs `svcproxyctl --etcd URL args...`, which must succeed; returns its stdout.
fn ctl<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(etcd: &Etcd, args: &[S]) -> String {
    let out = Command::new(SVCPROXYCTL)
        .args(["--etcd", &etcd.url()])
        .args(args)
        .output()
        .expect("run svcproxyctl");
    assert!(
        out.status.success(),
        "svcproxyctl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A table of `(name, service address, backend)` services, each one port `http`.
fn table(services: &[(&str, SocketAddr, &AnswerServer)]) -> String {
    let mut yaml = String::from("services:\n");
    for (name, vip, backend) in services {
        yaml.push_str(&format!(
            "  - name: {name}\n    cluster_ips: [{}]\n    ports: [{{name: http, port: {}, target_port: {}}}]\n    endpoints: [{{ip: {}}}]\n",
            vip.ip(),
            vip.port(),
            backend.addr().port(),
            backend.addr().ip()
        ));
    }
    yaml
}

fn put_table(etcd: &Etcd, dir: &TempDir, name: &str, yaml: &str) {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write table");
    ctl(etcd, &["put", path.to_str().expect("utf-8 path")]);
}

fn ask(addr: SocketAddr) -> std::io::Result<String> {
    testkit::net::ask(addr, Duration::from_secs(2))
}

/// Asks until the answer is `want`, `None` for "refused" (bounded by WAIT).
fn wait_for(addr: SocketAddr, want: Option<&str>, proxy: &LoggedChild) {
    let answered = poll(WAIT, Duration::from_millis(50), || {
        match (ask(addr), want) {
            (Ok(answer), Some(want)) if answer == want => Ok(()),
            (Err(e), None) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            (other, _) => Err(other),
        }
    });
    if let Err(last) = answered {
        panic!(
            "{addr} never answered {want:?}; last: {last:?}; svcproxy log:\n{}",
            proxy.log()
        );
    }
}

#[test]
fn an_etcd_catalogue_reaches_the_proxy_bad_values_stay_alone_and_an_etcd_restart_loses_nothing() {
    let dir = TempDir::new("etcd");
    let mut etcd = Etcd::start(dir.path());
    let vip = Ipv4Addr::new(127, 0, 0, 41);
    let blue = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 42), 0).into(), "blue");
    let green = AnswerServer::named(
        (Ipv4Addr::new(127, 0, 0, 43), blue.addr().port()).into(),
        "green",
    );
    let web = SocketAddr::from((vip, free_port(vip)));
    let api = SocketAddr::from((vip, free_port(vip)));
    put_table(
        &etcd,
        &dir,
        "first.yaml",
        &table(&[("shop/web", web, &blue), ("shop/api", api, &blue)]),
    );
    assert_eq!(
        ctl(&etcd, &["list"])
            .lines()
            .map(|line| line.split('\t').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["shop/api", "shop/web"]
    );

    let proxy = LoggedChild::spawn(
        "svcproxy",
        Command::new(SVCPROXY)
            .args(["--etcd", &etcd.url(), "--node-name", "node-a"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    )
    .expect("start svcproxy");
    wait_for(web, Some("blue"), &proxy);
    wait_for(api, Some("blue"), &proxy);

    // An update written once applies.
    put_table(
        &etcd,
        &dir,
        "green.yaml",
        &table(&[("shop/web", web, &green)]),
    );
    wait_for(web, Some("green"), &proxy);

    // A bad value for web: web keeps its last good version, reported with the key; api, changed
    // in the same transaction, applies.
    let bad = etcd_txn_put(
        &etcd,
        &[
            (
                "/svcproxy/services/shop/web",
                r#"{"name": "shop/web", "ports": [{"port": 99999}]}"#.to_owned(),
            ),
            (
                "/svcproxy/services/shop/api",
                single_json("shop/api", api, &green),
            ),
        ],
    );
    assert!(bad.is_empty(), "{bad}");
    wait_for(api, Some("green"), &proxy);
    proxy.wait_for_log("/svcproxy/services/shop/web", WAIT);
    assert_eq!(ask(web).expect("web still runs"), "green");

    // Deleted: the service goes.
    ctl(&etcd, &["delete", "shop/api"]);
    wait_for(api, None, &proxy);

    // etcd goes away: the dataplane keeps what it has; the proxy retries.
    etcd.stop();
    proxy.wait_for_log("etcd watch ended", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ask(web).expect("web runs without etcd"), "green");
    // etcd is back: the proxy reads the catalogue again (web still holds the bad value, which
    // keeps the last good version) and follows the changes after it.
    etcd.resume();
    proxy.wait_for_log("catalogue read again", WAIT);
    assert_eq!(ask(web).expect("web runs after the re-read"), "green");
    put_table(
        &etcd,
        &dir,
        "back.yaml",
        &table(&[("shop/web", web, &blue), ("shop/api", api, &blue)]),
    );
    wait_for(web, Some("blue"), &proxy);
    wait_for(api, Some("blue"), &proxy);

    let (status, log) = proxy.terminate(WAIT);
    assert!(status.success(), "{status}; log:\n{log}");
}

/// One service as JSON (the format svcproxyctl writes).
fn single_json(name: &str, vip: SocketAddr, backend: &AnswerServer) -> String {
    format!(
        r#"{{"name": "{name}", "cluster_ips": ["{}"], "ports": [{{"name": "http", "port": {}, "target_port": {}}}], "endpoints": [{{"ip": "{}"}}]}}"#,
        vip.ip(),
        vip.port(),
        backend.addr().port(),
        backend.addr().ip()
    )
}

/// Puts several keys in one etcd transaction with `etcdctl txn` (Debian's etcd-client);
/// returns etcdctl's stderr.
fn etcd_txn_put(etcd: &Etcd, puts: &[(&str, String)]) -> String {
    // etcdctl txn reads: compares, blank line, success ops, blank line, failure ops.
    let mut input = String::from("\n");
    for (key, value) in puts {
        input.push_str(&format!("put {key} {}\n", quote_for_etcdctl(value)));
    }
    input.push_str("\n\n");
    let mut child = etcd
        .etcdctl()
        .arg("txn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run etcdctl (Debian's etcd-client)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .expect("write etcdctl input");
    let out = child.wait_with_output().expect("etcdctl");
    assert!(out.status.success(), "etcdctl txn: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A value as etcdctl's txn reader wants it: in double quotes, inner quotes escaped.
fn quote_for_etcdctl(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A watcher that falls behind a compaction (etcd cancels it with `compact_revision`, what the
/// Go client reports as `ErrCompacted`) reads the catalogue again and carries on. The proxy is
/// stopped (SIGSTOP) while thousands of events pile up behind its full gRPC stream, so that etcd
/// takes it off the synced watchers; the store is then compacted past where it stopped.
#[test]
fn a_watch_left_behind_by_a_compaction_reads_the_catalogue_again() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let dir = TempDir::new("etcd-compact");
    let etcd = Etcd::start(dir.path());
    let vip = Ipv4Addr::new(127, 0, 0, 44);
    let blue = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 45), 0).into(), "blue");
    let green = AnswerServer::named(
        (Ipv4Addr::new(127, 0, 0, 46), blue.addr().port()).into(),
        "green",
    );
    let web = SocketAddr::from((vip, free_port(vip)));
    put_table(
        &etcd,
        &dir,
        "blue.yaml",
        &table(&[("shop/web", web, &blue)]),
    );
    let proxy = LoggedChild::spawn(
        "svcproxy",
        Command::new(SVCPROXY)
            .args(["--etcd", &etcd.url()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    )
    .expect("start svcproxy");
    wait_for(web, Some("blue"), &proxy);

    let pid = Pid::from_raw(i32::try_from(proxy.id()).expect("pid"));
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP svcproxy");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let filled = runtime.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.url()], None).await?;
        // 400 revisions (10 keys of 4 KiB each): more watch responses than etcd queues for one
        // watcher (128), behind a gRPC stream the stopped proxy does not read.
        for batch in 0..400 {
            let ops: Vec<etcd_client::TxnOp> = (0..10)
                .map(|i| {
                    let name = format!("filler/k{batch}-{i}");
                    // Parses, names its key, lists no port: refused with a short reason.
                    let value = format!("{{\"name\": \"{name}\"{}}}", " ".repeat(4096));
                    etcd_client::TxnOp::put(format!("/svcproxy/services/{name}"), value, None)
                })
                .collect();
            client.txn(etcd_client::Txn::new().and_then(ops)).await?;
        }
        let revision = client
            .put(
                "/svcproxy/services/shop/web",
                single_json("shop/web", web, &green),
                None,
            )
            .await?
            .header()
            .map_or(0, |h| h.revision());
        client
            .compact(
                revision,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await?;
        Ok::<_, etcd_client::Error>(())
    });
    kill(pid, Signal::SIGCONT).expect("SIGCONT svcproxy");
    filled.expect("fill and compact etcd");
    wait_for(web, Some("green"), &proxy);
    proxy.wait_for_log("is compacted", WAIT);
    proxy.wait_for_log("catalogue read again", WAIT);
    let (status, log) = proxy.terminate(WAIT);
    assert!(status.success(), "{status}; log:\n{log}");
}

/// Runs `etcdctl args...` against `etcd`, which must succeed.
fn etcdctl_ok(etcd: &Etcd, args: &[&str]) {
    let out = etcd.etcdctl().args(args).output().expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `svcproxyctl` with `args`, which must fail: its stderr.
fn ctl_fails(args: &[std::ffi::OsString]) -> String {
    let out = Command::new(SVCPROXYCTL)
        .args(args)
        .output()
        .expect("run svcproxyctl");
    assert!(!out.status.success(), "svcproxyctl {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An etcd as production runs it: https only, client certificates required (`--client-cert-auth`)
/// and users (`auth enable`). svcproxyctl writes and svcproxy reads with `--etcd-cacert`,
/// `--etcd-cert`, `--etcd-key`, `--etcd-user` and `--etcd-password-file`; a wrong CA, a missing
/// client certificate, a wrong password and a password over `http://` are each refused with the
/// reason.
#[test]
fn a_tls_etcd_with_client_certificates_and_users_is_read_and_written() {
    let dir = TempDir::new("etcd-tls");
    let pki = TestPki::create(dir.path());
    let mut etcd = Etcd::start_tls(dir.path(), &pki);
    etcdctl_ok(&etcd, &["user", "add", "root:s3cret-root"]);
    etcdctl_ok(&etcd, &["user", "add", "fleet:s3cret-fleet"]);
    etcdctl_ok(&etcd, &["user", "grant-role", "fleet", "root"]);
    etcdctl_ok(&etcd, &["auth", "enable"]);
    let password = dir.join("password");
    std::fs::write(&password, "s3cret-fleet\n").expect("write password");
    let wrong_password = dir.join("wrong-password");
    std::fs::write(&wrong_password, "guess\n").expect("write password");

    let os = |s: &str| std::ffi::OsString::from(s);
    let security = |ca: &std::path::Path, password: &std::path::Path| -> Vec<std::ffi::OsString> {
        vec![
            os("--etcd-cacert"),
            ca.into(),
            os("--etcd-cert"),
            pki.client_cert.clone().into(),
            os("--etcd-key"),
            pki.client_key.clone().into(),
            os("--etcd-user"),
            os("fleet"),
            os("--etcd-password-file"),
            password.into(),
        ]
    };
    let good = security(&pki.ca_cert, &password);
    let vip = Ipv4Addr::new(127, 0, 0, 71);
    let web = SocketAddr::from((vip, free_port(vip)));
    let blue = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 72), 0).into(), "blue");
    let table_path = dir.join("table.yaml");
    std::fs::write(&table_path, table(&[("web", web, &blue)])).expect("write table");

    // svcproxyctl put over TLS, as the fleet's user.
    let put_table = |etcd: &Etcd| {
        let mut args = good.clone();
        args.extend([os("put"), table_path.clone().into()]);
        ctl(etcd, &args);
    };
    put_table(&etcd);

    let proxy = LoggedChild::spawn(
        "svcproxy",
        Command::new(SVCPROXY)
            .args(["--etcd", &etcd.url(), "--backend", "userspace"])
            .args(&good)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    )
    .expect("start svcproxy");
    wait_for(web, Some("blue"), &proxy);

    // etcd restarts: the proxy reads again, authenticated, and follows the next change.
    etcd.stop();
    etcd.resume();
    let green = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 73), 0).into(), "green");
    std::fs::write(&table_path, table(&[("web", web, &green)])).expect("write table");
    put_table(&etcd);
    wait_for(web, Some("green"), &proxy);

    // Refusals, each with its reason. The endpoint without a scheme is https:// here (TLS set).
    let endpoint = etcd.url().replace("https://", "");
    let list = |extra: Vec<std::ffi::OsString>| {
        let mut args = vec![os("--etcd"), os(&endpoint)];
        args.extend(extra);
        args.push(os("list"));
        args
    };
    let ok = Command::new(SVCPROXYCTL)
        .args(list(good.clone()))
        .output()
        .expect("run svcproxyctl");
    let listed = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && listed.contains("default/web"),
        "{ok:?}"
    );

    let wrong_ca = ctl_fails(&list(security(&pki.other_ca_cert, &password)));
    assert!(
        wrong_ca.contains("cannot connect to etcd") && wrong_ca.contains("UnknownIssuer"),
        "{wrong_ca}"
    );
    let no_client_cert = ctl_fails(&list(vec![os("--etcd-cacert"), pki.ca_cert.clone().into()]));
    // etcd ends the handshake (a BadCertificate alert, or the connection closed first).
    assert!(
        no_client_cert.contains("cannot list the services under /svcproxy/services/ in etcd at"),
        "{no_client_cert}"
    );
    let bad_password = ctl_fails(&list(security(&pki.ca_cert, &wrong_password)));
    assert!(
        bad_password.contains("authentication failed"),
        "{bad_password}"
    );
    let in_clear = ctl_fails(&[
        os("--etcd"),
        os(&etcd.url().replace("https://", "http://")),
        os("--etcd-user"),
        os("fleet"),
        os("--etcd-password-file"),
        password.clone().into(),
        os("list"),
    ]);
    assert!(in_clear.contains("need an https:// endpoint"), "{in_clear}");

    let (status, log) = proxy.terminate(WAIT);
    assert!(status.success(), "{status}; log:\n{log}");
}
