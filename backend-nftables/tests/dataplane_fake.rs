//! [`NftablesDataplane`] over the transport's fake kernel: the sync contract without root.
//! The first sync is full (dumps, then one transaction); a partial sync sends only the
//! change; a refused transaction fails the sync and makes the next one full; cleanup of a
//! missing table removes nothing. Metrics move with the syncs; a change of the node's
//! addresses is a partial sync that rewrites exactly the elements that depend on them.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use backend_nftables::model::{Key, Table, Value};
use backend_nftables::names::SetName;
use backend_nftables::netlink::NftSocket;
use backend_nftables::plan::desired;
use backend_nftables::{NftablesConfig, NftablesDataplane};
use netlink_transport::fake::{ack, done, FakeKernel, Received};
use netlink_transport::Errno;
use proxy_core::node_addresses::NodeAddresses;
use proxy_core::prometheus_client::encoding::text::encode;
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};
use proxy_core::{diff, ChangeSet, Dataplane, SyncMode, SyncReport, SyncRequest};

const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
const NEWSETELEM: u16 = 0x0a0c;
/// `ENOMEM`.
const ENOMEM: Errno = Errno::new(12);

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn table(endpoints: &[&str]) -> ServiceTable {
    let mut p = ServicePort::new(ServicePortName::new("shop", "web", ""), Protocol::Tcp, 80)
        .with_cluster_ip(ip("198.19.0.10"));
    for e in endpoints {
        p = p.with_endpoint(Endpoint::new(ip(e), 8080));
    }
    ServiceTable::builder()
        .node("node-a")
        .insert(p)
        .build()
        .expect("valid")
}

/// An empty kernel: dumps end at once, messages are ACKed, element adds refused while
/// `refuse` is set.
fn kernel(refuse: Arc<AtomicBool>) -> FakeKernel {
    FakeKernel::new(move |m| answer(m, &refuse))
}

/// The fake kernel's answer: dumps are empty, a `NEWSETELEM` is refused with `ENOMEM` while
/// `refuse` is set, everything else is acknowledged when asked.
fn answer(m: &Received, refuse: &AtomicBool) -> Vec<Vec<u8>> {
    if m.flags & NLM_F_DUMP == NLM_F_DUMP {
        return vec![done(m.seq, 0)];
    }
    let errno = if m.message_type == NEWSETELEM && refuse.load(Ordering::SeqCst) {
        ENOMEM.raw()
    } else {
        0
    };
    if errno != 0 || m.flags & NLM_F_ACK != 0 {
        vec![ack(m.seq, errno)]
    } else {
        vec![]
    }
}

#[test]
fn partial_after_full_sends_the_change_and_a_failure_makes_the_next_sync_full() {
    let refuse = Arc::new(AtomicBool::new(false));
    let fake = kernel(refuse.clone());
    let io = fake.clone();
    let mut dp = NftablesDataplane::with_opener(
        NftablesConfig::default(),
        Box::new(move || Ok(NftSocket::new(io.clone()))),
    );
    let sync = |dp: &mut NftablesDataplane<FakeKernel>,
                desired: &ServiceTable,
                changes: &ChangeSet,
                mode| {
        block_on(dp.sync(SyncRequest {
            desired,
            changes,
            mode,
        }))
    };
    let t1 = table(&["198.18.1.10"]);
    let first = sync(&mut dp, &t1, &ChangeSet::default(), SyncMode::Partial).expect("first sync");
    assert_eq!(
        first.mode,
        SyncMode::Full,
        "the first sync is full whatever was asked"
    );
    assert!(first.objects_written > 20, "{first}");
    let transactions = |fake: &FakeKernel| {
        fake.received()
            .iter()
            .filter(|m| m.message_type == BATCH_BEGIN)
            .count()
    };
    assert_eq!(transactions(&fake), 1);

    let t2 = table(&["198.18.1.10", "198.18.1.11"]);
    let second = sync(&mut dp, &t2, &diff(&t1, &t2), SyncMode::Partial).expect("partial");
    assert_eq!(second.mode, SyncMode::Partial);
    assert!(
        second.objects_written <= 12,
        "cost follows the change: {second}"
    );
    assert_eq!(transactions(&fake), 2);

    refuse.store(true, Ordering::SeqCst);
    let t3 = table(&["198.18.1.10"]);
    let err = sync(&mut dp, &t3, &diff(&t2, &t3), SyncMode::Partial).expect_err("refused");
    let text = proxy_core::error::error_chain(&err);
    assert!(
        text.contains("add element inet svcproxy")
            && text.contains("(service 198.19.0.10 . tcp . 80)"),
        "the error names the change and the service port: {text}"
    );

    refuse.store(false, Ordering::SeqCst);
    let after = sync(&mut dp, &t3, &ChangeSet::default(), SyncMode::Partial).expect("recovers");
    assert_eq!(
        after.mode,
        SyncMode::Full,
        "after a failure the next sync is full"
    );
}

#[test]
fn cleanup_without_our_table_removes_nothing_and_dry_run_renders_the_golden_syntax() {
    let fake = kernel(Arc::new(AtomicBool::new(false)));
    let io = fake.clone();
    let mut dp = NftablesDataplane::with_opener(
        NftablesConfig::default(),
        Box::new(move || Ok(NftSocket::new(io.clone()))),
    );
    let report = block_on(dp.cleanup()).expect("cleanup");
    assert_eq!(report.objects_removed, 0);
    assert!(
        fake.received()
            .iter()
            .all(|m| m.message_type != BATCH_BEGIN),
        "nothing sent but the dump"
    );
    let dry = dp.dry_run(&table(&["198.18.1.10"])).expect("dry run");
    assert!(dry.rendered.starts_with("table inet svcproxy {"), "{dry}");
    assert!(
        dry.rendered
            .contains("198.19.0.10 . tcp . 80 . 0 : 198.18.1.10 . 8080"),
        "{dry}"
    );
}

fn sync(
    dp: &mut NftablesDataplane<FakeKernel>,
    desired: &ServiceTable,
    changes: &ChangeSet,
    mode: SyncMode,
) -> Result<SyncReport, proxy_core::DataplaneError> {
    block_on(dp.sync(SyncRequest {
        desired,
        changes,
        mode,
    }))
}

fn fake_dataplane(
    config: NftablesConfig,
    refuse: Arc<AtomicBool>,
) -> (FakeKernel, NftablesDataplane<FakeKernel>) {
    let fake = kernel(refuse);
    let io = fake.clone();
    let dp =
        NftablesDataplane::with_opener(config, Box::new(move || Ok(NftSocket::new(io.clone()))));
    (fake, dp)
}

/// The value of the series `name` (no labels) in the registry's text.
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {name} in\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"))
}

/// The size of each transaction the fake received (BEGIN to END, headers and padding).
fn transaction_sizes(received: &[Received]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut current: Option<usize> = None;
    for m in received {
        let len = (16 + m.payload.len() + 3) & !3;
        match m.message_type {
            BATCH_BEGIN => current = Some(len),
            BATCH_END => sizes.extend(current.take().map(|n| n + len)),
            _ => {
                if let Some(n) = &mut current {
                    *n += len;
                }
            }
        }
    }
    sizes
}

#[test]
fn metrics_move_with_syncs_and_failures_under_kube_proxy_and_own_names() {
    let refuse = Arc::new(AtomicBool::new(false));
    let (fake, mut dp) = fake_dataplane(NftablesConfig::default(), refuse.clone());
    let mut registry = Registry::default();
    dp.register_metrics(&mut registry);
    let text = || {
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        text
    };
    let before = text();
    for name in [
        "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
        "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
        "svcproxy_nftables_elements_written_total",
        "svcproxy_nftables_objects_written_total",
        "svcproxy_nftables_transactions_total",
    ] {
        assert_eq!(value(&before, name), 0.0, "{name} before any sync");
    }

    let t1 = table(&["198.18.1.10"]);
    sync(&mut dp, &t1, &ChangeSet::default(), SyncMode::Full).expect("full");
    let t2 = table(&["198.18.1.10", "198.18.1.11"]);
    let partial = sync(&mut dp, &t2, &diff(&t1, &t2), SyncMode::Partial).expect("partial");
    assert_eq!(partial.mode, SyncMode::Partial);

    let after = text();
    assert_eq!(
        value(
            &after,
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count"
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_count"
        ),
        1.0
    );
    assert_eq!(value(&after, "svcproxy_nftables_transactions_total"), 2.0);
    assert_eq!(
        value(&after, "svcproxy_nftables_transaction_bytes_count"),
        2.0
    );
    // The measured sizes are those of the datagrams the kernel got, byte for byte.
    let sizes = transaction_sizes(&fake.received());
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    let sum: usize = sizes.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    let sum = sum as f64;
    assert_eq!(
        value(&after, "svcproxy_nftables_transaction_bytes_sum"),
        sum
    );
    // The first sync declares the table: 25 sets, 15 chains and their rules; the partial one
    // adds one slot and one hairpin pair, and re-points the dispatch element to service-2
    // (delete and add), and adds the chain service-2 and its rules.
    let elements = value(&after, "svcproxy_nftables_elements_written_total");
    let objects = value(&after, "svcproxy_nftables_objects_written_total");
    assert!(objects > 40.0, "objects written: {objects}\n{after}");
    assert!(elements >= 5.0, "elements written: {elements}\n{after}");
    #[allow(clippy::cast_precision_loss)]
    let owned = dp.kernel().element_count() as f64;
    assert_eq!(value(&after, "svcproxy_nftables_elements"), owned);
    assert_eq!(
        value(
            &after,
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total"
        ),
        0.0
    );

    refuse.store(true, Ordering::SeqCst);
    let t3 = table(&["198.18.1.10"]);
    sync(&mut dp, &t3, &diff(&t2, &t3), SyncMode::Partial).expect_err("refused");
    let failed = text();
    assert_eq!(
        value(
            &failed,
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total"
        ),
        1.0
    );
    assert_eq!(
        value(&failed, "svcproxy_nftables_elements_written_total"),
        elements,
        "a refused transaction wrote nothing"
    );
}

/// A load-balancer port whose source range holds 198.18.0.1 (the node's first address), and
/// one whose range holds no node address; a node port on both.
fn lb_table(extra: bool) -> ServiceTable {
    let port = |name: &str, lb: &str, range: &str, node_port: u16| {
        let mut p = ServicePort::new(ServicePortName::new("shop", name, ""), Protocol::Tcp, 443)
            .with_cluster_ip(ip(&format!(
                "198.19.0.{node_port}",
                node_port = node_port % 100
            )))
            .with_node_port(node_port)
            .with_endpoint(Endpoint::new(ip("198.18.2.20"), 8443));
        p.load_balancer_ips.push(ip(lb));
        p.load_balancer_source_ranges
            .push(range.parse().expect("net"));
        p
    };
    let mut builder = ServiceTable::builder()
        .node("node-a")
        .insert(port("admin", "198.19.101.20", "198.18.0.0/24", 30020))
        .insert(port("public", "198.19.101.30", "192.0.2.0/24", 30030));
    if extra {
        builder = builder.insert(port("late", "198.19.101.40", "198.18.0.0/24", 30040));
    }
    builder.build().expect("valid")
}

/// Every element of `after` not in `before` (`+`) and of `before` not in `after` (`-`).
fn element_diff(before: &Table, after: &Table) -> BTreeSet<(char, SetName, Key)> {
    let elements = |t: &Table| -> BTreeMap<(SetName, Key), Value> {
        t.sets
            .iter()
            .flat_map(|(n, s)| s.elements.iter().map(move |(k, v)| ((*n, *k), *v)))
            .collect()
    };
    let (b, a) = (elements(before), elements(after));
    let added = a
        .iter()
        .filter(|(k, v)| b.get(k) != Some(v))
        .map(|((s, k), _)| ('+', *s, *k));
    let removed = b
        .iter()
        .filter(|(k, v)| a.get(k) != Some(v))
        .map(|((s, k), _)| ('-', *s, *k));
    added.chain(removed).collect()
}

fn allow_itself(lb: &str) -> Key {
    Key::DestSource {
        addr: ip(lb),
        proto: Protocol::Tcp,
        port: 443,
        source: ip(lb).into(),
    }
}

#[test]
fn a_node_address_change_rewrites_exactly_the_elements_that_depend_on_it() {
    let config = NftablesConfig {
        node_port_addresses: vec!["198.18.0.0/24".parse().expect("net")],
        ..NftablesConfig::default()
    };
    let (feed, source) = NodeAddresses::manual([ip("198.18.0.1")]);
    let (fake, dp) = fake_dataplane(config.clone(), Arc::new(AtomicBool::new(false)));
    let mut dp = dp.with_node_addresses(source);
    assert!(
        dp.node_addresses().is_some(),
        "the sync loop follows the source"
    );
    let t = lb_table(false);
    let first = sync(&mut dp, &t, &ChangeSet::default(), SyncMode::Full).expect("full");
    assert!(first.problems.is_empty(), "{first}");
    let v4 = backend_nftables::model::Family::V4;
    let nodeport_ips = SetName::NodePortIps(v4);
    let allow = SetName::FirewallAllow(v4);
    assert!(
        dp.kernel().sets[&allow]
            .elements
            .contains_key(&allow_itself("198.19.101.20")),
        "a range holding the node admits the LB IP itself"
    );

    // The node moves to an address outside 198.18.0.0/24: no node-port address any more,
    // and the admin range no longer holds the node.
    feed.set([ip("198.19.200.1")]);
    let before = dp.kernel().clone();
    let sent_before = fake.received().len();
    let moved = sync(&mut dp, &t, &ChangeSet::default(), SyncMode::Partial).expect("partial");
    assert_eq!(moved.mode, SyncMode::Partial);
    let node_ips_set = SetName::NodeIps(v4);
    let want: BTreeSet<(char, SetName, Key)> = [
        ('-', nodeport_ips, Key::Addr(ip("198.18.0.1"))),
        ('-', node_ips_set, Key::Addr(ip("198.18.0.1"))),
        ('+', node_ips_set, Key::Addr(ip("198.19.200.1"))),
        ('-', allow, allow_itself("198.19.101.20")),
    ]
    .into_iter()
    .collect();
    assert_eq!(element_diff(&before, dp.kernel()), want);
    assert_eq!(
        dp.kernel().chains,
        before.chains,
        "no chain depends on node addresses"
    );
    let kinds: Vec<u16> = fake.received()[sent_before..]
        .iter()
        .map(|m| m.message_type)
        .collect();
    // BEGIN, one DELSETELEM per set, the NEWSETELEM of node-ips, END; then the drift
    // fingerprint's requests.
    const DELSETELEM: u16 = 0x0a0e;
    assert_eq!(
        kinds.iter().filter(|k| **k == DELSETELEM).count(),
        3,
        "{kinds:x?}"
    );
    assert_eq!(kinds.iter().filter(|k| **k == NEWSETELEM).count(), 1);
    let fresh = desired(&t, &config, &[ip("198.19.200.1")].into_iter().collect());
    assert_eq!(
        dp.kernel(),
        &fresh.table,
        "the partial sync equals planning whole"
    );

    // Nothing moves: nothing is sent.
    let quiet = sync(&mut dp, &t, &ChangeSet::default(), SyncMode::Partial).expect("quiet");
    assert_eq!(quiet.objects_written, 0, "{quiet}");

    // A node address inside the range again, in the same sync as a new port whose range
    // holds it: both the old and the new port are rewritten, and nothing else.
    feed.set([ip("198.19.200.1"), ip("198.18.0.7")]);
    let t2 = lb_table(true);
    let before = dp.kernel().clone();
    sync(&mut dp, &t2, &diff(&t, &t2), SyncMode::Partial).expect("partial");
    let node_ips: BTreeSet<IpAddr> = [ip("198.19.200.1"), ip("198.18.0.7")].into_iter().collect();
    let fresh = desired(&t2, &config, &node_ips);
    assert_eq!(dp.kernel(), &fresh.table, "partial equals whole");
    let changed = element_diff(&before, dp.kernel());
    assert!(changed.contains(&('+', nodeport_ips, Key::Addr(ip("198.18.0.7")))));
    assert!(changed.contains(&('+', allow, allow_itself("198.19.101.20"))));
    assert!(changed.contains(&('+', allow, allow_itself("198.19.101.40"))));
    assert!(
        !changed.iter().any(|(_, _, k)| matches!(
            k,
            Key::DestSource { addr, .. } if *addr == ip("198.19.101.30")
        )),
        "the port whose range holds no node address is untouched: {changed:?}"
    );
    assert!(
        changed.iter().all(|(sign, _, _)| *sign == '+'),
        "only additions: {changed:?}"
    );

    // The pure step: readdress follows the address change and names what it touched.
    let mut planned = desired(&t2, &config, &node_ips);
    let touched = planned.readdress(&t2, &[ip("198.18.0.9")].into_iter().collect());
    assert_eq!(
        planned,
        desired(&t2, &config, &[ip("198.18.0.9")].into_iter().collect())
    );
    let expected: BTreeSet<(SetName, Key)> = [
        (nodeport_ips, Key::Addr(ip("198.18.0.7"))),
        (nodeport_ips, Key::Addr(ip("198.18.0.9"))),
        (node_ips_set, Key::Addr(ip("198.18.0.7"))),
        (node_ips_set, Key::Addr(ip("198.18.0.9"))),
        (node_ips_set, Key::Addr(ip("198.19.200.1"))),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        touched, expected,
        "both ranges still hold the node: only nodeport-ips and node-ips move"
    );
}

#[test]
fn stale_udp_entries_are_deleted_off_the_sync_path_and_a_failure_is_reported() {
    use nf_conntrack::testing::FakeConntrack;
    use nf_conntrack::{Entry, IPPROTO_UDP};
    let vip = ip("198.19.0.53");
    let dns = |endpoints: &[&str]| {
        let mut p = ServicePort::new(ServicePortName::new("ns", "dns", "p"), Protocol::Udp, 53)
            .with_cluster_ip(vip);
        for e in endpoints {
            p = p.with_endpoint(Endpoint::new(ip(e), 5353));
        }
        ServiceTable::builder().insert(p).build().expect("valid")
    };
    // A client's flow DNATed to 198.18.1.1, which then goes.
    let flow = Entry {
        proto: IPPROTO_UDP,
        src: ip("198.18.0.10"),
        dst: vip,
        sport: 40000,
        dport: 53,
        reply_src: ip("198.18.1.1"),
    };
    let conntrack = Arc::new(FakeConntrack::with_entries([flow]));
    let (_fake, dp) = fake_dataplane(NftablesConfig::default(), Arc::new(AtomicBool::new(false)));
    let mut dp = dp.with_conntrack(conntrack.clone());
    let before = dns(&["198.18.1.1", "198.18.1.2"]);
    sync(
        &mut dp,
        &before,
        &diff(&ServiceTable::empty(), &before),
        SyncMode::Full,
    )
    .expect("full");
    assert_eq!(dp.wait_for_conntrack_cleanup(), None);
    let after = dns(&["198.18.1.2"]);
    let report = sync(&mut dp, &after, &diff(&before, &after), SyncMode::Partial).expect("partial");
    assert!(report.problems.is_empty(), "{report}");
    assert_eq!(
        dp.wait_for_conntrack_cleanup(),
        None,
        "the clean-up succeeded"
    );
    assert!(conntrack.entries().is_empty(), "the stale flow is gone");
    assert_eq!(conntrack.deleted().len(), 1);

    // A clean-up that fails is reported by the next sync, which is not failed for it.
    conntrack.fail_with(libc_eperm());
    let moved = dns(&["198.18.1.3"]);
    let report = sync(&mut dp, &moved, &diff(&after, &moved), SyncMode::Partial).expect("partial");
    let problem = dp
        .wait_for_conntrack_cleanup()
        .map(|p| p.to_string())
        .or_else(|| report.problems.first().map(ToString::to_string))
        .expect("the failure is reported");
    assert!(problem.contains("stale UDP conntrack entries"), "{problem}");
    let again = sync(&mut dp, &moved, &ChangeSet::default(), SyncMode::Partial).expect("quiet");
    assert!(again.problems.is_empty(), "reported once: {again}");
}

/// `EPERM`, as the fake conntrack fails.
fn libc_eperm() -> i32 {
    1
}

#[test]
fn a_second_instance_with_our_table_in_this_namespace_fails_until_the_first_is_gone() {
    let dir = std::env::temp_dir().join(format!("svcproxy-nft-lock-{}", std::process::id()));
    let refuse = Arc::new(AtomicBool::new(false));
    let t = lb_table(false);
    let (_a, first) = fake_dataplane(NftablesConfig::default(), refuse.clone());
    let mut first = first.with_lock_dir(&dir);
    assert_eq!(
        first.lock_path(),
        None,
        "not taken before the kernel is touched"
    );
    sync(
        &mut first,
        &t,
        &diff(&ServiceTable::empty(), &t),
        SyncMode::Full,
    )
    .expect("first");
    assert!(first.lock_path().is_some_and(|p| p.starts_with(&dir)));
    let (b, second) = fake_dataplane(NftablesConfig::default(), refuse.clone());
    let mut second = second.with_lock_dir(&dir);
    let err = sync(
        &mut second,
        &t,
        &diff(&ServiceTable::empty(), &t),
        SyncMode::Full,
    )
    .expect_err("the table has an owner");
    let text = proxy_core::error::error_chain(&err);
    assert!(
        text.contains(&std::process::id().to_string()),
        "names the holder: {text}"
    );
    assert!(
        b.received().is_empty(),
        "the kernel was not touched before the lock"
    );
    // Another table name is another owner.
    let other = NftablesConfig {
        table: "svcproxy-b".to_owned(),
        ..NftablesConfig::default()
    };
    let (_c, third) = fake_dataplane(other, refuse.clone());
    let mut third = third.with_lock_dir(&dir);
    sync(
        &mut third,
        &t,
        &diff(&ServiceTable::empty(), &t),
        SyncMode::Full,
    )
    .expect("other table");
    drop(first);
    sync(
        &mut second,
        &t,
        &diff(&ServiceTable::empty(), &t),
        SyncMode::Full,
    )
    .expect("the first is gone: the second takes over");
    drop((second, third));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sync on a multi-thread runtime does not stall the worker's other tasks
/// (`block_in_place`): with one worker, a kernel that answers only once another task of the
/// runtime has run still answers. On a current-thread runtime the sync runs directly.
#[test]
fn a_sync_lets_the_runtimes_other_tasks_run_and_works_on_a_current_thread_runtime() {
    use std::sync::mpsc;
    use std::time::Duration;
    let t = lb_table(false);
    let changes = diff(&ServiceTable::empty(), &t);

    let (ran, seen) = mpsc::channel::<()>();
    let seen = std::sync::Mutex::new(Some(seen));
    let waited = Arc::new(AtomicBool::new(false));
    let other_ran = waited.clone();
    // The first message waits (up to 5 s) for the other task; every message is then answered
    // as `kernel` answers it.
    let fake = FakeKernel::new(move |m| {
        if let Some(seen) = seen.lock().expect("lock").take() {
            other_ran.store(
                seen.recv_timeout(Duration::from_secs(5)).is_ok(),
                Ordering::SeqCst,
            );
        }
        answer(m, &AtomicBool::new(false))
    });
    let io = fake.clone();
    let mut dp = NftablesDataplane::with_opener(
        NftablesConfig::default(),
        Box::new(move || Ok(NftSocket::new(io.clone()))),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    // Both tasks on the one worker: the sync first, the other queued behind it.
    let (table, set) = (t.clone(), changes.clone());
    let report = runtime
        .block_on(async move {
            let sync = tokio::spawn(async move {
                dp.sync(SyncRequest {
                    desired: &table,
                    changes: &set,
                    mode: SyncMode::Full,
                })
                .await
            });
            let other = tokio::spawn(async move {
                let _ = ran.send(());
            });
            let report = sync.await.expect("sync task");
            other.await.expect("other task");
            report
        })
        .expect("sync");
    assert!(report.objects_written > 0, "{report}");
    assert!(
        waited.load(Ordering::SeqCst),
        "the other task ran while the sync was in the kernel"
    );

    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (_fake, mut dp) =
        fake_dataplane(NftablesConfig::default(), Arc::new(AtomicBool::new(false)));
    let report = current
        .block_on(dp.sync(SyncRequest {
            desired: &t,
            changes: &changes,
            mode: SyncMode::Full,
        }))
        .expect("sync");
    assert!(report.objects_written > 0, "{report}");
    current.block_on(dp.cleanup()).expect("cleanup");
}
