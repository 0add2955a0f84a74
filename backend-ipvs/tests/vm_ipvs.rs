//! IPVS against a real kernel: our netlink client creates, dumps, edits and deletes virtual
//! and real servers, and the in-memory fake must behave the same way.
//!
//! The kernel tests need root and the `ip_vs` modules, which the development hosts lack, so
//! they are `#[ignore]`d and run in a VM: `scripts/vm-test`. Each one runs on a thread in a
//! fresh network namespace (testkit's `in_new_netns`; IPVS tables are per namespace), so they
//! never touch the VM's root namespace and the namespace disappears with the thread.
//! The same contract runs against `FakeIpvs` in every plain `cargo test`.

use std::{net::IpAddr, time::Duration};

use backend_ipvs::{
    testing::FakeIpvs, ConnCounts, IpvsError, IpvsOp, IpvsOps, IpvsTarget, NetlinkIpvs, Op,
    RealServer, SchedFlags, Scheduler, ServiceKey, Timeouts, VirtualServer,
};
use proxy_core::Protocol;
use testkit::netns::in_new_netns;
use testkit::process::run;

const NEEDS_VM: &str = "needs root and IPVS: run via scripts/vm-test";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

/// Runs `body` on a thread in a new network namespace of its own (IPVS tables are per
/// namespace), with our netlink client connected to that namespace's IPVS table.
fn with_kernel_ipvs<T: Send + 'static>(body: impl FnOnce(&NetlinkIpvs) -> T + Send + 'static) -> T {
    in_new_netns(move || {
        // A new namespace has no IPv4 routing tables until an address exists, and the kernel
        // rejects an IPv4 real server whose address type it cannot tell (EINVAL from the
        // inet_addr_type() check in net/netfilter/ipvs/ip_vs_ctl.c). `lo` up gives it a table.
        // The child process inherits this thread's namespace.
        run("ip", &["link", "set", "lo", "up"]);
        let ipvs = NetlinkIpvs::connect().unwrap_or_else(|e| panic!("{e:?}: {NEEDS_VM}"));
        body(&ipvs)
    })
}

/// Sorted real servers without their connection counts: what was asked for.
fn configured(mut servers: Vec<RealServer>) -> Vec<RealServer> {
    servers.sort_by_key(RealServer::socket_addr);
    servers.iter().map(RealServer::without_conns).collect()
}

// === the contract ===

fn create_dump_update_delete(ipvs: &dyn IpvsOps) {
    let vs = VirtualServer::new(ip("198.18.0.10"), Protocol::Tcp, 80, Scheduler::RoundRobin);
    let key = vs.key();
    let a = RealServer::new(ip("198.18.1.10"), 8080, 2);
    let b = RealServer::new(ip("198.18.1.11"), 8080, 1);

    assert_eq!(ipvs.virtual_servers().expect("dump empty table"), vec![]);
    ipvs.add_virtual_server(&vs).expect("add virtual server");
    ipvs.add_real_server(&key, &a).expect("add real server a");
    ipvs.add_real_server(&key, &b).expect("add real server b");

    assert_eq!(ipvs.virtual_servers().expect("dump"), vec![vs.clone()]);
    assert_eq!(
        ipvs.virtual_server(&key).expect("get one"),
        Some(vs.clone())
    );
    let dumped = ipvs.real_servers(&key).expect("dump real servers");
    assert!(
        dumped
            .iter()
            .all(|rs| rs.conns == Some(ConnCounts::default())),
        "a dump reports (zero) connection counts: {dumped:?}"
    );
    assert_eq!(configured(dumped), configured(vec![a.clone(), b.clone()]));

    // Graceful termination starts with weight 0.
    let drained = RealServer {
        weight: 0,
        ..a.clone()
    };
    ipvs.update_real_server(&key, &drained)
        .expect("set weight 0");
    assert_eq!(
        configured(ipvs.real_servers(&key).expect("dump after update")),
        configured(vec![drained.clone(), b.clone()])
    );

    // Scheduler and persistence change in place.
    let edited = VirtualServer {
        scheduler: Scheduler::WeightedLeastConnection,
        persistence: Some(Duration::from_secs(600)),
        ..vs.clone()
    };
    ipvs.update_virtual_server(&edited)
        .expect("update virtual server");
    assert_eq!(
        ipvs.virtual_servers().expect("dump after edit"),
        vec![edited]
    );

    ipvs.delete_real_server(&key, &drained)
        .expect("delete real server");
    assert_eq!(
        configured(ipvs.real_servers(&key).expect("dump after delete")),
        vec![b]
    );
    ipvs.delete_virtual_server(&key)
        .expect("delete virtual server");
    assert_eq!(ipvs.virtual_servers().expect("final dump"), vec![]);
    assert_eq!(ipvs.virtual_server(&key).expect("get a gone service"), None);
    assert_eq!(
        ipvs.real_servers(&key)
            .expect("real servers of a gone service"),
        vec![]
    );
}

fn errors_name_the_errno(ipvs: &dyn IpvsOps) {
    let vs = VirtualServer::new(
        ip("198.18.0.20"),
        Protocol::Udp,
        53,
        Scheduler::WeightedRoundRobin,
    );
    let key = vs.key();
    let rs = RealServer::new(ip("198.18.1.20"), 5353, 1);

    let err = ipvs
        .delete_virtual_server(&key)
        .expect_err("delete of a missing service");
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(err.errno(), Some(3), "ESRCH for a missing service: {err:?}");
    let err = ipvs
        .add_real_server(&key, &rs)
        .expect_err("real server of a missing service");
    assert_eq!(err.errno(), Some(3), "{err:?}");

    ipvs.add_virtual_server(&vs).expect("add");
    let err = ipvs.add_virtual_server(&vs).expect_err("duplicate service");
    assert!(err.is_exists(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "add virtual server UDP 198.18.0.20:53: rejected by the kernel"
    );

    let err = ipvs
        .delete_real_server(&key, &rs)
        .expect_err("missing real server");
    assert_eq!(
        err.errno(),
        Some(2),
        "ENOENT for a missing destination: {err:?}"
    );
    let err = ipvs
        .update_real_server(&key, &rs)
        .expect_err("update of a missing real server");
    assert_eq!(err.errno(), Some(2), "{err:?}");
    ipvs.add_real_server(&key, &rs).expect("add real server");
    let err = ipvs
        .add_real_server(&key, &rs)
        .expect_err("duplicate real server");
    assert!(err.is_exists(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "add real server UDP 198.18.0.20:53 -> 198.18.1.20:5353: rejected by the kernel"
    );

    ipvs.flush().expect("flush");
    assert_eq!(ipvs.virtual_servers().expect("dump after flush"), vec![]);
}

fn ipv6_maglev_with_flags_and_persistence(ipvs: &dyn IpvsOps) {
    let vs = VirtualServer {
        sched_flags: SchedFlags {
            flag1: true,
            flag2: true,
            flag3: false,
        },
        persistence: Some(Duration::from_secs(10800)),
        netmask: 64,
        ..VirtualServer::new(ip("2001:db8::10"), Protocol::Udp, 53, Scheduler::Maglev)
    };
    let sctp = VirtualServer::new(
        ip("198.18.0.30"),
        Protocol::Sctp,
        3868,
        Scheduler::SourceHash,
    );
    let rs = RealServer::new(ip("2001:db8:1::10"), 5353, 7);
    ipvs.add_virtual_server(&vs).expect("add IPv6 mh");
    ipvs.add_virtual_server(&sctp).expect("add SCTP sh");
    ipvs.add_real_server(&vs.key(), &rs)
        .expect("add IPv6 real server");

    let mut dumped = ipvs.virtual_servers().expect("dump");
    dumped.sort_by_key(VirtualServer::key);
    let mut want = vec![vs.clone(), sctp];
    want.sort_by_key(VirtualServer::key);
    assert_eq!(dumped, want);
    assert_eq!(
        configured(ipvs.real_servers(&vs.key()).expect("dump dests")),
        vec![rs]
    );
    ipvs.flush().expect("flush");
}

fn timeouts_round_trip(ipvs: &dyn IpvsOps) {
    let set = Timeouts {
        tcp: Duration::from_secs(901),
        tcp_fin: Duration::from_secs(121),
        udp: Duration::from_secs(301),
    };
    ipvs.set_timeouts(&set).expect("set timeouts");
    assert_eq!(ipvs.timeouts().expect("get timeouts"), set);
    // Zero leaves a timeout as it was.
    ipvs.set_timeouts(&Timeouts {
        udp: Duration::from_secs(30),
        ..Timeouts::default()
    })
    .expect("set only udp");
    assert_eq!(
        ipvs.timeouts().expect("get timeouts"),
        Timeouts {
            udp: Duration::from_secs(30),
            ..set
        }
    );
}

/// Real server `i` of the batch tests: distinct addresses in 198.18.16.0/20.
fn nth_real_server(i: usize) -> RealServer {
    let i = u16::try_from(i).expect("fewer than 4,096 in the test");
    let [hi, lo] = i.to_be_bytes();
    RealServer::new(IpAddr::from([198, 18, 16 + hi, lo]), 8080, 1)
}

/// The index of each failed op, with its operation, target and errno.
fn failures(results: &[Result<(), IpvsError>]) -> Vec<(usize, IpvsOp, IpvsTarget, Option<i32>)> {
    results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Err(IpvsError::Kernel { op, target, .. }) => {
                Some((i, *op, target.clone(), r.as_ref().err()?.errno()))
            }
            Err(other) => panic!("op {i}: want a kernel error, got {other:?}"),
            Ok(()) => None,
        })
        .collect()
}

/// A batch of 4,000 real-server adds, more than one datagram holds, with one add to a missing
/// virtual server in the middle: exactly that op fails, naming itself, and the rest are done.
fn batch_reports_the_failing_op_and_applies_the_rest(ipvs: &dyn IpvsOps) {
    const N: usize = 4_000;
    const BAD: usize = 2_345;
    let vs = VirtualServer::new(ip("198.18.0.60"), Protocol::Tcp, 80, Scheduler::RoundRobin);
    let key = vs.key();
    let missing = ServiceKey { port: 81, ..key };
    assert_eq!(
        failures(&ipvs.run_batch(&[Op::AddVirtualServer(vs.clone())])),
        vec![]
    );
    let ops: Vec<Op> = (0..N)
        .map(|i| {
            let on = if i == BAD { missing } else { key };
            Op::AddRealServer(on, nth_real_server(i))
        })
        .collect();
    let results = ipvs.run_batch(&ops);
    assert_eq!(results.len(), N);
    let bad_target = IpvsTarget::Dest(missing, nth_real_server(BAD).socket_addr());
    assert_eq!(
        failures(&results),
        vec![(BAD, IpvsOp::AddRealServer, bad_target, Some(3))],
        "ESRCH for the add to a missing virtual server, and only that"
    );
    let dumped = ipvs.real_servers(&key).expect("dump dests");
    assert_eq!(dumped.len(), N - 1);
    let want: Vec<RealServer> = (0..N).filter(|&i| i != BAD).map(nth_real_server).collect();
    assert_eq!(configured(dumped), configured(want));
    ipvs.flush().expect("flush");
}

/// Every kind of op in one batch, each error mapped back to its own op.
fn batch_maps_each_error_to_its_op(ipvs: &dyn IpvsOps) {
    let vs = VirtualServer::new(
        ip("198.18.0.70"),
        Protocol::Udp,
        53,
        Scheduler::LeastConnection,
    );
    let key = vs.key();
    let gone = ServiceKey { port: 54, ..key };
    let a = RealServer::new(ip("198.18.1.70"), 5353, 1);
    let b = RealServer::new(ip("198.18.1.71"), 5353, 1);
    let ops = vec![
        Op::AddVirtualServer(vs.clone()),  // 0: ok
        Op::AddVirtualServer(vs.clone()),  // 1: EEXIST
        Op::AddRealServer(key, a.clone()), // 2: ok
        Op::UpdateRealServer(
            key,
            RealServer {
                weight: 5,
                ..a.clone()
            },
        ), // 3: ok
        Op::UpdateRealServer(key, b.clone()), // 4: ENOENT
        Op::DeleteRealServer(key, b.clone()), // 5: ENOENT
        Op::UpdateVirtualServer(VirtualServer {
            port: 54,
            ..vs.clone()
        }), // 6: ESRCH
        Op::DeleteVirtualServer(gone),     // 7: ESRCH
    ];
    let results = ipvs.run_batch(&ops);
    assert_eq!(
        failures(&results),
        vec![
            (
                1,
                IpvsOp::AddVirtualServer,
                IpvsTarget::Service(key),
                Some(17)
            ),
            (
                4,
                IpvsOp::UpdateRealServer,
                IpvsTarget::Dest(key, b.socket_addr()),
                Some(2)
            ),
            (
                5,
                IpvsOp::DeleteRealServer,
                IpvsTarget::Dest(key, b.socket_addr()),
                Some(2)
            ),
            (
                6,
                IpvsOp::UpdateVirtualServer,
                IpvsTarget::Service(gone),
                Some(3)
            ),
            (
                7,
                IpvsOp::DeleteVirtualServer,
                IpvsTarget::Service(gone),
                Some(3)
            ),
        ]
    );
    assert_eq!(
        configured(ipvs.real_servers(&key).expect("dump")),
        vec![RealServer { weight: 5, ..a }]
    );
    assert_eq!(ipvs.run_batch(&[]).len(), 0, "an empty batch sends nothing");
    ipvs.flush().expect("flush");
}

/// The real servers of 300 virtual servers at once (dumped over several sockets and threads
/// by `NetlinkIpvs`), in the order asked, a missing one with none.
fn real_servers_of_many_in_order(ipvs: &dyn IpvsOps) {
    let services: Vec<VirtualServer> = (0..300u16)
        .map(|i| {
            let addr = IpAddr::from([198, 18, 40 + (i / 200) as u8, (i % 200) as u8 + 1]);
            VirtualServer::new(addr, Protocol::Tcp, 80, Scheduler::RoundRobin)
        })
        .collect();
    let mut ops: Vec<Op> = services.iter().cloned().map(Op::AddVirtualServer).collect();
    for (i, vs) in services.iter().enumerate() {
        // i % 4 real servers: some virtual servers have none.
        ops.extend((0..i % 4).map(|j| Op::AddRealServer(vs.key(), nth_real_server(i * 4 + j))));
    }
    assert!(ipvs.run_batch(&ops).iter().all(Result::is_ok));
    let missing = ServiceKey {
        port: 81,
        ..services[0].key()
    };
    let mut keys: Vec<ServiceKey> = services.iter().rev().map(VirtualServer::key).collect();
    keys.insert(150, missing);
    let got = ipvs.real_servers_of(&keys).expect("dumps");
    assert_eq!(got.len(), keys.len());
    for (key, dests) in keys.iter().zip(got) {
        let want = ipvs.real_servers(key).expect("one dump");
        assert_eq!(configured(dests), configured(want), "{key}");
    }
    assert_eq!(ipvs.real_servers_of(&[]).expect("nothing").len(), 0);
    ipvs.flush().expect("flush");
}

// === against the kernel (in the VM) ===

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_real_servers_of_many_in_order() {
    with_kernel_ipvs(|ipvs| real_servers_of_many_in_order(ipvs));
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_batch_reports_the_failing_op_and_applies_the_rest() {
    with_kernel_ipvs(|ipvs| batch_reports_the_failing_op_and_applies_the_rest(ipvs));
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_batch_maps_each_error_to_its_op() {
    with_kernel_ipvs(|ipvs| batch_maps_each_error_to_its_op(ipvs));
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_info_reports_version() {
    let info = with_kernel_ipvs(|ipvs| ipvs.info().expect("get info"));
    assert_eq!(info.version, (1, 2, 1), "{info:?}");
    assert!(info.conn_tab_size >= 4096, "{info:?}");
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_create_dump_update_delete() {
    with_kernel_ipvs(|ipvs| create_dump_update_delete(ipvs));
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_errors_name_the_errno() {
    with_kernel_ipvs(|ipvs| errors_name_the_errno(ipvs));
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_ipv6_maglev_with_flags_and_persistence() {
    with_kernel_ipvs(|ipvs| ipv6_maglev_with_flags_and_persistence(ipvs));
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_timeouts_round_trip() {
    with_kernel_ipvs(|ipvs| timeouts_round_trip(ipvs));
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_tables_are_per_namespace() {
    with_kernel_ipvs(|ipvs| {
        let vs = VirtualServer::new(ip("198.18.0.40"), Protocol::Tcp, 443, Scheduler::RoundRobin);
        ipvs.add_virtual_server(&vs).expect("add");
        // A second namespace starts empty: our tests cannot see each other's state.
        let other = with_kernel_ipvs(|other| other.virtual_servers().expect("dump"));
        assert_eq!(other, vec![]);
        assert_eq!(ipvs.virtual_servers().expect("dump"), vec![vs]);
    });
}

#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_dump_of_many_services_spans_datagrams() {
    with_kernel_ipvs(|ipvs| {
        // ~320 bytes per dumped service: 600 need several datagrams of the multipart reply.
        let mut want: Vec<VirtualServer> = (0..600u16)
            .map(|i| {
                let addr = IpAddr::from([198, 18, (i / 200) as u8, (i % 200) as u8 + 1]);
                VirtualServer::new(addr, Protocol::Tcp, 1000 + i, Scheduler::WeightedRoundRobin)
            })
            .collect();
        for vs in &want {
            ipvs.add_virtual_server(vs).expect("add");
        }
        let key = want[0].key();
        let dests: Vec<RealServer> = (1..=200u8)
            .map(|i| RealServer::new(IpAddr::from([198, 19, 0, i]), 8080, u32::from(i)))
            .collect();
        for rs in &dests {
            ipvs.add_real_server(&key, rs).expect("add real server");
        }
        let mut got = ipvs.virtual_servers().expect("dump");
        got.sort_by_key(VirtualServer::key);
        want.sort_by_key(VirtualServer::key);
        assert_eq!(got.len(), 600);
        assert_eq!(got, want);
        assert_eq!(
            configured(ipvs.real_servers(&key).expect("dump dests")),
            configured(dests)
        );
    });
}

/// Real TCP through IPVS: a VIP on a dummy interface, round robin over two local listeners.
#[test]
#[ignore = "needs root and IPVS: run via scripts/vm-test"]
fn kernel_round_robin_reaches_both_real_servers() {
    use std::{
        io::{Read, Write},
        net::{SocketAddr, TcpListener, TcpStream},
    };

    with_kernel_ipvs(|ipvs| {
        run("ip", &["link", "add", "svc0", "type", "dummy"]);
        for addr in ["198.18.0.100/32", "198.18.1.1/32", "198.18.1.2/32"] {
            run("ip", &["addr", "add", addr, "dev", "svc0"]);
        }
        run("ip", &["link", "set", "svc0", "up"]);

        let backends = ["198.18.1.1:8080", "198.18.1.2:8080"];
        for backend in backends {
            // Bound here, in the test's namespace; served from a thread, a bounded number of times.
            let listener = TcpListener::bind(backend).expect("bind backend");
            std::thread::spawn(move || {
                for conn in listener.incoming().take(4) {
                    let Ok(mut conn) = conn else { return };
                    let _ = conn.write_all(backend.as_bytes());
                }
            });
        }
        let vs = VirtualServer::new(ip("198.18.0.100"), Protocol::Tcp, 80, Scheduler::RoundRobin);
        ipvs.add_virtual_server(&vs).expect("add");
        for backend in backends {
            let addr: SocketAddr = backend.parse().expect("literal");
            ipvs.add_real_server(&vs.key(), &RealServer::new(addr.ip(), addr.port(), 1))
                .expect("add real server");
        }

        let mut answers = Vec::new();
        for _ in 0..4 {
            let vip: SocketAddr = "198.18.0.100:80".parse().expect("literal");
            let mut conn =
                TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect VIP");
            conn.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut answer = String::new();
            conn.read_to_string(&mut answer).expect("read");
            answers.push(answer);
        }
        answers.sort();
        assert_eq!(
            answers,
            [
                "198.18.1.1:8080",
                "198.18.1.1:8080",
                "198.18.1.2:8080",
                "198.18.1.2:8080"
            ],
            "round robin alternates between the two real servers"
        );
        let served: u32 = ipvs
            .real_servers(&vs.key())
            .expect("dump")
            .iter()
            .map(|rs| rs.conns.map_or(0, |c| c.active + c.inactive))
            .sum();
        assert!(served > 0, "the dump shows the connections we made");
    });
}

// === against the fake (everywhere) ===

#[test]
fn fake_create_dump_update_delete() {
    create_dump_update_delete(&FakeIpvs::new());
}

#[test]
fn fake_errors_name_the_errno() {
    errors_name_the_errno(&FakeIpvs::new());
}

#[test]
fn fake_ipv6_maglev_with_flags_and_persistence() {
    ipv6_maglev_with_flags_and_persistence(&FakeIpvs::new());
}

#[test]
fn fake_batch_reports_the_failing_op_and_applies_the_rest() {
    let fake = FakeIpvs::new();
    batch_reports_the_failing_op_and_applies_the_rest(&fake);
    assert_eq!(fake.batch_sizes(), vec![1, 4_000]);
}

#[test]
fn fake_real_servers_of_many_in_order() {
    real_servers_of_many_in_order(&FakeIpvs::new());
}

#[test]
fn fake_batch_maps_each_error_to_its_op() {
    batch_maps_each_error_to_its_op(&FakeIpvs::new());
}

#[test]
fn fake_timeouts_round_trip() {
    timeouts_round_trip(&FakeIpvs::new());
}

#[test]
fn fake_reports_connection_counts_it_was_given() {
    let ipvs = FakeIpvs::new();
    let vs = VirtualServer::new(ip("198.18.0.50"), Protocol::Tcp, 80, Scheduler::RoundRobin);
    let rs = RealServer::new(ip("198.18.1.50"), 80, 1);
    ipvs.add_virtual_server(&vs).expect("add");
    ipvs.add_real_server(&vs.key(), &rs).expect("add rs");
    let conns = ConnCounts {
        active: 3,
        inactive: 1,
        persistent: 0,
    };
    assert!(ipvs.set_conns(&vs.key(), &rs, conns));
    assert_eq!(
        ipvs.real_servers(&vs.key()).expect("dump")[0].conns,
        Some(conns)
    );
    let missing = ServiceKey {
        port: 81,
        ..vs.key()
    };
    assert!(!ipvs.set_conns(&missing, &rs, conns));
}
