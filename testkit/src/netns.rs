//! Network namespaces a test creates, and code run inside them. Needs root.
//!
//! A [`Netns`] is a named namespace (`ip netns add`, so tools reach it with `ip -n NAME` or
//! `ip netns exec NAME`), deleted on drop together with everything in it: interfaces, routes,
//! iptables rules, IPVS services. [`Netns::run`] and [`Netns::spawn`] run a closure on a thread
//! of its own that has entered the namespace (threads, not the process: the test harness's other
//! threads stay where they are). [`in_new_netns`] does the same in an unnamed namespace made for
//! the one thread.
//!
//! Every thread that enters a namespace here first checks that it is not the root namespace
//! (pid 1's, or where that is hidden, the main thread's), so a test can never program the host by
//! mistake.
//!
//! ```no_run
//! use testkit::netns::{veth, Netns};
//!
//! let node = Netns::new("node");
//! let pod = Netns::new("pod");
//! veth(&node, "p0", &pod, "eth0");
//! node.ip(&["addr", "add", "198.18.2.1/24", "dev", "p0"]);
//! pod.ip_batch(&["addr add 198.18.2.10/24 dev eth0", "link set eth0 up"]);
//! let routes = node.run(|| testkit::process::run("ip", &["route"]));
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{setns, unshare, CloneFlags};

use crate::process::{run, run_with_stdin};

/// How long [`Netns::spawn`] waits for its thread to enter the namespace.
const ENTER_TIMEOUT: Duration = Duration::from_secs(10);

/// A network namespace this test created, named `svcp-t-<pid>-<n>-<tag>`; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace whose name holds `tag`, the process id and a counter (unique among
    /// parallel tests), with nothing in it but a `lo` that is down.
    ///
    /// # Panics
    ///
    /// When `ip netns add` fails (not root, or no `ip`).
    pub fn new(tag: &str) -> Self {
        let name = crate::unique_name("svcp-t", tag);
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns add {name}`: {e}"));
        assert!(
            out.status.success(),
            "`ip netns add {name}` failed (needs root): {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        Self { name }
    }

    /// The namespace's name, as `ip -n` and `ip netns exec` take it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the file that keeps the namespace alive.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `body` on a new thread inside the namespace and returns its result.
    ///
    /// # Panics
    ///
    /// When the thread cannot enter the namespace, and with `body`'s own panic if it panics.
    pub fn run<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(body)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Starts `body` on a new thread inside the namespace; returns once the thread is in it.
    /// Threads that `body` starts are in the namespace too. Dropping the handle detaches the
    /// thread: give such a body its own deadline.
    ///
    /// # Panics
    ///
    /// When the thread cannot enter the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        let (entered_tx, entered_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let entered = enter(&path);
            let _ = entered_tx.send(entered.clone());
            if let Err(why) = entered {
                // The caller panics with the same reason; `body` must not run out of place.
                panic!("{why}");
            }
            body()
        });
        match entered_rx.recv_timeout(ENTER_TIMEOUT) {
            Ok(Ok(())) => thread,
            Ok(Err(why)) => panic!("{why}"),
            Err(e) => panic!("thread did not enter {}: {e}", self.name),
        }
    }

    /// `ip -n <name> args...`, which must succeed; returns its stdout.
    ///
    /// # Panics
    ///
    /// As [`crate::process::run`].
    pub fn ip(&self, args: &[&str]) -> String {
        let mut argv = vec!["-n", self.name.as_str()];
        argv.extend_from_slice(args);
        run("ip", &argv)
    }

    /// `ip -n <name> -batch -` with `lines` on stdin: many changes for one process start (which
    /// is slow in an emulated VM).
    ///
    /// # Panics
    ///
    /// As [`crate::process::run_with_stdin`].
    pub fn ip_batch(&self, lines: &[impl AsRef<str>]) {
        let input: String = lines
            .iter()
            .map(|line| format!("{}\n", line.as_ref()))
            .collect();
        run_with_stdin("ip", &["-n", &self.name, "-batch", "-"], &input);
    }

    /// The argument vector prefix that runs a program inside the namespace:
    /// `["ip", "netns", "exec", <name>]`.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .map(str::to_owned)
            .to_vec()
    }

    /// A [`Command`] for `program` inside the namespace (`ip netns exec <name> program`, which
    /// execs in place: the child's pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program args...` inside the namespace and returns its output, whatever its status.
    ///
    /// # Panics
    ///
    /// When `ip netns exec` cannot start.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns exec {} {program}`: {e}", self.name))
    }

    /// Runs `program args...` inside the namespace, which must succeed; returns its stdout.
    ///
    /// # Panics
    ///
    /// As [`crate::process::run`].
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let mut argv = vec!["netns", "exec", self.name.as_str(), program];
        argv.extend_from_slice(args);
        run("ip", &argv)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// Adds a veth pair: `a_if` in `a`, its peer `b_if` in `b` (which may be `a`). Both ends stay
/// down and without addresses.
///
/// # Panics
///
/// When `ip` fails (a name already taken, or longer than 15 bytes).
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
}

/// Runs `body` on a new thread in a new, unnamed network namespace of its own
/// (`unshare(CLONE_NEWNET)`), and returns its result. The namespace, with all `body` put in it,
/// ends with the thread.
///
/// # Panics
///
/// When `unshare` fails (needs root), and with `body`'s own panic if it panics.
pub fn in_new_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e} (needs root)"));
        assert_not_root_netns();
        body()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The calling thread's network namespace, as `/proc` names it (`net:[4026531840]`).
///
/// # Panics
///
/// When `/proc` cannot be read.
pub fn current() -> String {
    ns_of("/proc/thread-self/ns/net")
}

fn ns_of(link: &str) -> String {
    std::fs::read_link(link)
        .unwrap_or_else(|e| panic!("read {link}: {e}"))
        .display()
        .to_string()
}

/// The root network namespace: pid 1's, or where it cannot be read (a sandbox that hides pid 1),
/// the one this process's main thread is in.
fn root_netns() -> String {
    std::fs::read_link("/proc/1/ns/net")
        .map(|link| link.display().to_string())
        .unwrap_or_else(|_| ns_of("/proc/self/ns/net"))
}

/// Panics unless the calling thread is outside the root network namespace.
fn assert_not_root_netns() {
    let root = root_netns();
    assert_ne!(
        current(),
        root,
        "refusing to run in the root network namespace"
    );
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {}: {e}", path.display()))?;
    if current() == root_netns() {
        return Err(format!(
            "{} is the root network namespace: refusing to run there",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs root: CI runs --include-ignored"]
    fn a_namespace_is_entered_by_threads_and_deleted_on_drop() {
        let ns = Netns::new("kit");
        let path = ns.path();
        assert!(path.exists(), "{}", path.display());
        let here = current();
        let there = ns.run(current);
        assert_ne!(there, here);
        assert_eq!(ns.spawn(current).join().expect("thread"), there);
        drop(ns);
        assert!(!path.exists(), "{} left after drop", path.display());
    }

    #[test]
    #[ignore = "needs root: CI runs --include-ignored"]
    fn veth_and_batch_connect_two_namespaces() {
        let a = Netns::new("kit-a");
        let b = Netns::new("kit-b");
        veth(&a, "kit0", &b, "kit1");
        a.ip_batch(&["addr add 198.18.254.1/30 dev kit0", "link set kit0 up"]);
        b.ip_batch(&[
            "addr add 198.18.254.2/30 dev kit1".to_owned(),
            "link set kit1 up".to_owned(),
        ]);
        assert!(a
            .ip(&["-o", "addr", "show", "dev", "kit0"])
            .contains("198.18.254.1/30"));
        // b reaches a over the pair: the link is real, in namespaces of their own.
        let (port_tx, port_rx) = mpsc::channel();
        let server = a.spawn(move || {
            let listener = std::net::TcpListener::bind("198.18.254.1:0").expect("bind in a");
            let _ = port_tx.send(listener.local_addr().expect("address").port());
            let (mut conn, peer) = listener.accept().expect("accept");
            std::io::Write::write_all(&mut conn, peer.ip().to_string().as_bytes()).expect("write");
        });
        let port = port_rx.recv_timeout(ENTER_TIMEOUT).expect("server port");
        let answer = b
            .run(move || crate::net::ask(([198, 18, 254, 1], port).into(), Duration::from_secs(2)));
        assert_eq!(answer.expect("answer over the veth pair"), "198.18.254.2");
        server.join().expect("server thread");
        let listed = b.run(|| run("ip", &["-o", "link", "show"]));
        assert!(listed.contains("kit1"), "{listed}");
        assert!(!listed.contains("kit0"), "{listed}");
        assert_eq!(
            a.exec_prefix(),
            ["ip", "netns", "exec", a.name()].map(str::to_owned)
        );
    }

    #[test]
    #[ignore = "needs root: CI runs --include-ignored"]
    fn in_new_netns_runs_in_a_fresh_namespace() {
        let here = current();
        let (there, links) = in_new_netns(|| (current(), run("ip", &["-o", "link", "show"])));
        assert_ne!(there, here);
        assert_eq!(links.lines().count(), 1, "only lo: {links}");
    }

    #[test]
    #[ignore = "needs root: CI runs --include-ignored"]
    #[should_panic(expected = "refusing to run there")]
    fn spawn_refuses_the_root_namespace() {
        // A guard whose name points at the root namespace, as a typo might; never deleted.
        let _ = std::fs::create_dir_all("/run/netns");
        let name = format!("svcp-t-{}-kit-root", std::process::id());
        let link = PathBuf::from("/run/netns").join(&name);
        let _ = std::fs::remove_file(&link);
        // A bind mount is what `ip netns add` makes; a symlink to our own namespace file is
        // enough for open + setns.
        let root = format!("/proc/{}/ns/net", std::process::id());
        std::os::unix::fs::symlink(root, &link).expect("symlink");
        let fake = std::mem::ManuallyDrop::new(Netns { name });
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fake.run(|| unreachable!("must not run in the root namespace"))
        }));
        let _ = std::fs::remove_file(&link);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}
