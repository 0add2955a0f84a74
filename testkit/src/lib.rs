//! Test plumbing shared by this workspace's test suites, so that each suite keeps only what it
//! tests: its tables, its traffic and its assertions.
//!
//! - [`netns`]: network namespaces a test creates (and deletes on drop), code run on a thread
//!   inside one, `ip -batch` and veth pairs. Never the root namespace.
//! - [`process`]: commands that must succeed ([`process::run`]), and a child process whose
//!   stderr is collected into a log ([`process::LoggedChild`]), stopped with SIGTERM or killed
//!   on drop.
//! - [`fs`]: a temporary directory removed on drop, and editor-style file replacement.
//! - [`etcd`]: a one-member etcd server (Debian's `etcd-server`) on an address the test picks.
//! - [`kubeapi`]: a fake Kubernetes API server speaking the real list/watch protocol.
//! - [`wait`]: bounded polling with a useful panic message.
//! - [`net`]: TCP servers that answer each connection with a text (who they are), and the client
//!   that reads such an answer.
//!
//! Everything here is for tests: a failure panics with the command, the path or the last
//! observation, so that a CI log alone shows what went wrong. Every wait is bounded.
//!
//! This crate only runs the tools it is asked to; it picks no addresses. Suites choose theirs
//! from 198.18.0.0/15, 192.0.2.0/24, 2001:db8::/32 or loopback.
#![forbid(unsafe_code)]

pub mod etcd;
pub mod fs;
pub mod kubeapi;
pub mod net;
pub mod netns;
pub mod process;
pub mod tls;
pub mod wait;

/// `<prefix>-<pid>-<n>-<tag>`, with `n` counting up in this process: distinct across parallel
/// tests and across test binaries that run at the same time.
fn unique_name(prefix: &str, tag: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{tag}", std::process::id())
}
