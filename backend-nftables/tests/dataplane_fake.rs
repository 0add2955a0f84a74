//! [`NftablesDataplane`] over the transport's fake kernel: the sync contract without root.
//! The first sync is full (dumps, then one transaction); a partial sync sends only the
//! change; a refused transaction fails the sync and makes the next one full; cleanup of a
//! missing table removes nothing.

use std::future::Future;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use backend_nftables::netlink::NftSocket;
use backend_nftables::{NftablesConfig, NftablesDataplane};
use netlink_transport::fake::{ack, done, FakeKernel};
use netlink_transport::Errno;
use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};
use proxy_core::{diff, ChangeSet, Dataplane, SyncMode, SyncRequest};

const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const BATCH_BEGIN: u16 = 0x10;
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
    FakeKernel::new(move |m| {
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
    })
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
