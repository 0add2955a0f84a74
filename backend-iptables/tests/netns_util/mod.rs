//! A network namespace a test creates (and deletes on drop), and a way to run code inside it on
//! a thread of its own. Needs root.
#![allow(dead_code)]

use std::fs::File;
use std::process::Command;

/// A named namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("svcp-t-{}-{n}-{tag}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add (needs root)");
        assert!(status.success(), "ip netns add {name} failed: needs root");
        Self { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

pub fn current_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Runs `body` on a new thread that has entered `ns`.
pub fn in_netns(ns: &Netns, body: impl FnOnce() + Send + 'static) {
    let path = format!("/run/netns/{}", ns.name);
    // The namespace this process started in: the one we must never touch.
    let root = current_netns();
    assert!(!root.is_empty(), "cannot read our own netns");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        assert_ne!(
            current_netns(),
            root,
            "refusing to run in the root namespace"
        );
        body();
    })
    .join()
    .expect("test thread");
}

/// Runs a command inside the current thread's namespace, asserting success.
pub fn run(argv: &[&str]) {
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(status.success(), "{argv:?} failed");
}
