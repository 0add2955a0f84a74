//! svcproxy sees edits to its table file through inotify (issue #11): the real binary, real
//! files, real TCP on loopback.
//!
//! Every proxy here polls once a minute and waits a minute for in-place writes to settle, so an
//! edit that the watcher applies to the table (its log line) within [`FAST`] was seen by
//! inotify, not by a poll. [`FAST`] is far above the real figure (`bench watch` reports it, a few
//! milliseconds) so that a loaded 2-core machine does not make these tests flaky, and still well
//! under the old 500 ms poll interval. The service must then answer from the new table: the sync
//! loop starts no two syncs within its minimum period (1 s, kube-proxy's `minSyncPeriod`), so
//! each edit comes [`SYNC_GAP`] after the last sync (read from `/healthz`), and a sync of
//! something else in between may hold it back by up to that period.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::fs::{replace_file, TempDir};
use testkit::net::AnswerServer;
use testkit::process::LoggedChild;
use testkit::wait::poll;

const SVCPROXY: &str = env!("CARGO_BIN_EXE_svcproxy");
const WAIT: Duration = Duration::from_secs(10);
/// The most an edit seen by inotify may take to be applied to the table here.
const FAST: Duration = Duration::from_millis(300);
/// More than the sync loop's minimum period between syncs.
const SYNC_GAP: Duration = Duration::from_millis(1100);
/// Flags that take polling and the settle rule out of the way (a minute each).
const NO_POLL: [&str; 4] = ["--poll-interval-ms", "60000", "--settle-ms", "60000"];

/// One service, `default/web` on `vip:port`, and the backends it can point to.
struct Fixture {
    dir: TempDir,
    vip: Ipv4Addr,
    port: u16,
    blue: AnswerServer,
    green: AnswerServer,
    /// Where the proxy serves `/healthz`.
    health: SocketAddr,
}

impl Fixture {
    /// Backends `blue` and `green` on `base+1` and `base+2`, sharing a port; the VIP is `base`.
    fn new(tag: &str, base: Ipv4Addr) -> Self {
        let [a, b, c, d] = base.octets();
        let blue = AnswerServer::named((Ipv4Addr::new(a, b, c, d + 1), 0).into(), "blue");
        let green = AnswerServer::named(
            (Ipv4Addr::new(a, b, c, d + 2), blue.addr().port()).into(),
            "green",
        );
        let free = |ip: Ipv4Addr| {
            TcpListener::bind((ip, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
        };
        Self {
            dir: TempDir::new(tag),
            vip: base,
            port: free(base).port(),
            blue,
            green,
            health: free(Ipv4Addr::LOCALHOST),
        }
    }

    fn service(&self) -> SocketAddr {
        (self.vip, self.port).into()
    }

    /// The table with the service pointing to `backend`.
    fn table(&self, backend: &AnswerServer) -> String {
        format!(
            "node: test\nservices:\n  - name: default/web\n    cluster_ips: [{}]\n    ports:\n      - {{name: http, port: {}, target_port: {}}}\n    endpoints:\n      - {{ip: {}}}\n",
            self.vip,
            self.port,
            backend.addr().port(),
            backend.addr().ip()
        )
    }

    /// svcproxy on the table at `path` with `flags`, once the service answers `blue`.
    fn start(&self, path: &Path, flags: &[&str]) -> LoggedChild {
        let health = self.health.to_string();
        let mut args = vec![
            "--services",
            path.to_str().expect("utf-8 path"),
            "--healthz-addr",
            &health,
        ];
        args.extend_from_slice(flags);
        let proxy = LoggedChild::spawn(
            "svcproxy",
            Command::new(SVCPROXY)
                .args(&args)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .env_remove("SVCPROXY_WATCH"),
        )
        .expect("start svcproxy");
        self.time_to_answer("blue", &proxy);
        proxy
    }

    /// How long until the service answers `want`, asking every few milliseconds.
    fn time_to_answer(&self, want: &str, proxy: &LoggedChild) -> Duration {
        let started = Instant::now();
        let answered = poll(WAIT, Duration::from_millis(2), || {
            match testkit::net::ask(self.service(), Duration::from_secs(1)) {
                Ok(answer) if answer == want => Ok(started.elapsed()),
                other => Err(other),
            }
        });
        answered.unwrap_or_else(|last| {
            panic!(
                "{} never answered {want:?}; last: {last:?}; log:\n{}",
                self.service(),
                proxy.log()
            )
        })
    }

    /// Waits out the sync loop's minimum period since the last sync, then returns the edit's
    /// start.
    fn edit_now(&self, proxy: &LoggedChild) -> Edit {
        let idle = poll(WAIT, Duration::from_millis(20), || {
            let since = self.since_last_sync();
            match since {
                Some(since) if since >= SYNC_GAP => Ok(()),
                _ => Err(since),
            }
        });
        if let Err(since) = idle {
            panic!("the proxy never stayed without a sync for {SYNC_GAP:?}; last: {since:?}");
        }
        Edit {
            at: Instant::now(),
            applied_before: applied_count(proxy),
        }
    }

    /// How long ago the last sync ended, by `/healthz`'s `lastUpdated` (wall-clock seconds).
    fn since_last_sync(&self) -> Option<Duration> {
        let (_, response) =
            testkit::net::http_get(self.health, "/healthz", Duration::from_secs(1)).ok()?;
        let (_, rest) = response.split_once("\"lastUpdated\":")?;
        let end = rest.find([',', '}'])?;
        let last: f64 = rest[..end].trim().parse().ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        now.checked_sub(Duration::from_secs_f64(last))
    }

    /// Asserts the watcher applied the edit to the table within [`FAST`] (its log line), and
    /// the service answers `want` within [`FAST`] more than the sync loop's minimum period (a
    /// sync of something else, such as a change of the node's addresses, may hold it back).
    fn assert_fast(&self, how: &str, edit: Edit, want: &str, proxy: &LoggedChild) {
        let seen = poll(WAIT, Duration::from_millis(2), || {
            if applied_count(proxy) > edit.applied_before {
                Ok(edit.at.elapsed())
            } else {
                Err(())
            }
        });
        let Ok(watcher) = seen else {
            panic!("an edit by {how} was never applied; log:\n{}", proxy.log());
        };
        self.time_to_answer(want, proxy);
        let total = edit.at.elapsed();
        assert!(
            watcher < FAST && total < FAST + SYNC_GAP,
            "an edit by {how} took {watcher:?} to apply to the table (want < {FAST:?}) and \
             {total:?} to be served; log:\n{}",
            proxy.log()
        );
    }
}

/// An edit about to be made.
struct Edit {
    at: Instant,
    /// How many times the proxy had logged a table applied.
    applied_before: usize,
}

/// How many times the proxy logged that it applied the table file.
fn applied_count(proxy: &LoggedChild) -> usize {
    proxy.log().matches("table file applied").count()
}

#[test]
fn edits_by_rename_sed_and_in_place_write_apply_at_once() {
    let fx = Fixture::new("inotify-edits", Ipv4Addr::new(127, 0, 1, 10));
    let path = fx.dir.join("table.yaml");
    std::fs::write(&path, fx.table(&fx.blue)).expect("write table");
    let proxy = fx.start(&path, &NO_POLL);
    proxy.wait_for_log("watching the table file with inotify", WAIT);

    // An editor's way: a temporary file renamed over the table.
    let edited = fx.edit_now(&proxy);
    replace_file(&path, fx.table(&fx.green));
    fx.assert_fast("rename", edited, "green", &proxy);

    // `sed -i`: a temporary file in the same directory, renamed over the table.
    let (green_ip, blue_ip) = (fx.green.addr().ip(), fx.blue.addr().ip());
    let edited = fx.edit_now(&proxy);
    let status = Command::new("sed")
        .arg("-i")
        .arg(format!("s/{green_ip}/{blue_ip}/"))
        .arg(&path)
        .status()
        .expect("run sed");
    assert!(status.success(), "sed -i: {status}");
    fx.assert_fast("sed -i", edited, "blue", &proxy);

    // Written in place and closed (truncate, write, close: `std::fs::write`, `cat > table`).
    let edited = fx.edit_now(&proxy);
    std::fs::write(&path, fx.table(&fx.green)).expect("write in place");
    fx.assert_fast("in-place write + close", edited, "green", &proxy);

    let status = proxy.terminate(WAIT).0;
    assert!(status.success(), "exit status {status}");
}

/// A ConfigMap volume as the kubelet writes it (`pkg/volume/util/atomic_writer.go`): the data in
/// a timestamped directory, `..data` a symlink to it, the file a symlink through `..data`; an
/// update writes a new directory and renames a new `..data` link over the old one.
#[test]
fn configmap_style_data_symlink_swap_applies_at_once() {
    let fx = Fixture::new("inotify-configmap", Ipv4Addr::new(127, 0, 1, 20));
    let volume = fx.dir.path();
    let write_version = |name: &str, table: String| {
        std::fs::create_dir(volume.join(name)).expect("version directory");
        std::fs::write(volume.join(name).join("table.yaml"), table).expect("write version");
    };
    write_version("..2026_12_01_00_00_00.000000001", fx.table(&fx.blue));
    std::os::unix::fs::symlink("..2026_12_01_00_00_00.000000001", volume.join("..data"))
        .expect("..data");
    let path = volume.join("table.yaml");
    std::os::unix::fs::symlink("..data/table.yaml", &path).expect("table.yaml link");
    let proxy = fx.start(&path, &NO_POLL);
    proxy.wait_for_log("watching the table file with inotify", WAIT);

    let mut current = "..2026_12_01_00_00_00.000000001".to_owned();
    for (round, (backend, want)) in [(&fx.green, "green"), (&fx.blue, "blue")]
        .into_iter()
        .enumerate()
    {
        let next = format!("..2026_12_01_00_00_0{}.000000001", round + 1);
        write_version(&next, fx.table(backend));
        let edited = fx.edit_now(&proxy);
        std::os::unix::fs::symlink(&next, volume.join("..data_tmp")).expect("..data_tmp");
        std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).expect("swap ..data");
        fx.assert_fast("a ..data symlink swap", edited, want, &proxy);
        // The kubelet then removes the old version; the watch moves to the new one.
        std::fs::remove_dir_all(volume.join(&current)).expect("remove the old version");
        current = next;
    }

    let status = proxy.terminate(WAIT).0;
    assert!(status.success(), "exit status {status}");
}

#[test]
fn an_emptied_file_waits_for_the_settle_time_and_its_rewrite_applies_at_once() {
    let fx = Fixture::new("inotify-truncate", Ipv4Addr::new(127, 0, 1, 30));
    let path = fx.dir.join("table.yaml");
    std::fs::write(&path, fx.table(&fx.blue)).expect("write table");
    let proxy = fx.start(&path, &NO_POLL);
    proxy.wait_for_log("watching the table file with inotify", WAIT);

    // Truncated and closed, as `: > table.yaml` does before a write: an empty table would remove
    // the service, so it must not apply as a complete write.
    drop(std::fs::File::create(&path).expect("truncate"));
    let pause = Instant::now();
    while pause.elapsed() < Duration::from_millis(400) {
        assert_eq!(
            testkit::net::ask(fx.service(), Duration::from_secs(1))
                .ok()
                .as_deref(),
            Some("blue"),
            "the emptied table was applied; log:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let edited = fx.edit_now(&proxy);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open the table");
    file.write_all(fx.table(&fx.green).as_bytes())
        .expect("write the table");
    drop(file);
    fx.assert_fast("a write after a truncation", edited, "green", &proxy);

    let status = proxy.terminate(WAIT).0;
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_directory_removed_and_recreated_is_picked_up_by_the_fallback_poll() {
    let fx = Fixture::new("inotify-recreate", Ipv4Addr::new(127, 0, 1, 40));
    let dir: PathBuf = fx.dir.join("config");
    std::fs::create_dir(&dir).expect("config directory");
    let path = dir.join("table.yaml");
    std::fs::write(&path, fx.table(&fx.blue)).expect("write table");
    // The default settle time: a file renamed in before the watch is back is seen by a poll,
    // which cannot always tell a rename from a write (timestamps are coarser than a write +
    // rename), so it may wait for the settle time.
    let proxy = fx.start(&path, &["--poll-interval-ms", "100", "--settle-ms", "1000"]);
    proxy.wait_for_log("watching the table file with inotify", WAIT);

    // The directory goes, with the watch on it: the proxy keeps its table and polls.
    std::fs::remove_dir_all(&dir).expect("remove the directory");
    proxy.wait_for_log("polling it until it can", WAIT);
    assert_eq!(
        testkit::net::ask(fx.service(), Duration::from_secs(1)).expect("still served"),
        "blue"
    );

    // Back, with a new table renamed into place: picked up, and inotify watches again.
    std::fs::create_dir(&dir).expect("recreate the directory");
    replace_file(&path, fx.table(&fx.green));
    fx.time_to_answer("green", &proxy);
    let watching_again = poll(WAIT, Duration::from_millis(20), || {
        let log = proxy.log();
        if log.matches("watching the table file with inotify").count() >= 2 {
            Ok(())
        } else {
            Err(log)
        }
    });
    if let Err(log) = watching_again {
        panic!("inotify never watched the recreated directory; log:\n{log}");
    }

    // And an edit there applies at once again.
    let edited = fx.edit_now(&proxy);
    replace_file(&path, fx.table(&fx.blue));
    fx.assert_fast(
        "rename after the directory came back",
        edited,
        "blue",
        &proxy,
    );

    let status = proxy.terminate(WAIT).0;
    assert!(status.success(), "exit status {status}");
}
