//! Cost follows the change: one endpoint changed among 1,000 or 10,000 services plans the
//! same, constant number of element changes; a new endpoint count adds its chain only the
//! first time; the partial plan equals the full diff.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use backend_nftables::config::NftablesConfig;
use backend_nftables::model::Table;
use backend_nftables::names::ChainName;
use backend_nftables::plan::{apply_changes, desired, plan, Change, DesiredTable};
use proxy_core::diff::diff;
use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// Service `i`: cluster IP 198.19.x.y:80; endpoint `e` at 198.18.0.0 + 4i + e, port 8080 (no two
/// services share an endpoint address).
fn service(i: usize, endpoints: usize) -> ServicePort {
    let (hi, lo) = (u8::try_from(i / 256).expect("< 65536"), (i % 256) as u8);
    let mut port = ServicePort::new(
        ServicePortName::new("ns", format!("svc-{i}"), "p"),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(v4(198, 19, hi, lo));
    for e in 0..endpoints {
        let e = u8::try_from(e).expect("few endpoints");
        let addr = u32::from(Ipv4Addr::new(198, 18, 0, 0))
            + 4 * u32::try_from(i).expect("small")
            + u32::from(e);
        port = port.with_endpoint(Endpoint::new(IpAddr::V4(Ipv4Addr::from(addr)), 8080));
    }
    port
}

fn table(n: usize) -> ServiceTable {
    let mut builder = ServiceTable::builder().node("node-a");
    for i in 0..n {
        builder.upsert(service(i, 2));
    }
    builder.build().expect("valid table")
}

struct Sync {
    desired: DesiredTable,
    kernel: Table,
}

impl Sync {
    fn new(t: &ServiceTable) -> Self {
        let config = NftablesConfig {
            cluster_cidrs: vec!["198.18.0.0/17".parse().expect("cidr")],
            ..NftablesConfig::default()
        };
        let desired = desired(t, &config, &BTreeSet::new());
        let mut kernel = Table::new(config.table.clone());
        apply_changes(&mut kernel, &plan(&desired, None, None));
        assert_eq!(kernel, desired.table);
        Self { desired, kernel }
    }

    /// A partial sync from `old` to `new`: the plan, checked against the full diff and
    /// applied to the kernel table.
    fn step(&mut self, old: &ServiceTable, new: &ServiceTable) -> Vec<Change> {
        let changes = diff(old, new);
        self.desired.update(&changes);
        let partial = plan(&self.desired, Some(&self.kernel), Some(&changes));
        let full = plan(&self.desired, Some(&self.kernel), None);
        // The purges of affinity elements are the partial plan's own: the full diff compares
        // the planned objects only (the datapath writes affinity elements).
        let planned: Vec<Change> = partial
            .iter()
            .filter(|c| !matches!(c, Change::PurgeAffinity(..)))
            .cloned()
            .collect();
        assert_eq!(planned, full, "the partial plan differs from the full diff");
        apply_changes(&mut self.kernel, &partial);
        assert_eq!(self.kernel, self.desired.table);
        partial
    }
}

fn counts(changes: &[Change]) -> (usize, usize) {
    let elements = changes.iter().filter(|c| c.is_element()).count();
    (elements, changes.len() - elements)
}

/// (element changes, other changes) of: one endpoint's address changed; one endpoint added
/// (2 -> 3, a new count); the same for a second service (count 3 exists now).
fn costs(n: usize) -> [(usize, usize, Vec<Change>); 3] {
    let t0 = table(n);
    let mut sync = Sync::new(&t0);
    let mut moved = service(n / 2, 2);
    moved.endpoints[1].addr = v4(198, 18, 250, 1);
    let t1 = t0.edit().insert(moved).build().expect("valid");
    let a = sync.step(&t0, &t1);
    let t2 = t1.edit().insert(service(1, 3)).build().expect("valid");
    let b = sync.step(&t1, &t2);
    let t3 = t2.edit().insert(service(2, 3)).build().expect("valid");
    let c = sync.step(&t2, &t3);
    let with = |v: Vec<Change>| {
        let (e, o) = counts(&v);
        (e, o, v)
    };
    [with(a), with(b), with(c)]
}

#[test]
fn one_endpoint_change_costs_the_same_among_1000_and_10000_services() {
    let small = costs(1_000);
    let large = costs(10_000);
    for (i, (s, l)) in small.iter().zip(&large).enumerate() {
        assert_eq!(
            (s.0, s.1),
            (l.0, l.1),
            "step {i}: cost differs with the table size\n1,000: {:?}\n10,000: {:?}",
            s.2,
            l.2
        );
    }
    // An endpoint moved: its slot rewritten (delete + add), the old hairpin pair out, the new
    // one in; no chain touched.
    assert_eq!((small[0].0, small[0].1), (4, 0), "{:?}", small[0].2);
}

#[test]
fn a_new_endpoint_count_adds_its_chain_only_the_first_time() {
    let [_, first, second] = costs(1_000);
    let chains = |v: &[Change]| -> Vec<ChainName> {
        v.iter()
            .filter_map(|c| match c {
                Change::AddChain(name, _) => Some(*name),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        chains(&first.2),
        vec![ChainName::Service(3)],
        "{:?}",
        first.2
    );
    // The chain and its four rules (the v4 and v6 affinity lookups, v4 and v6 DNAT), nothing
    // else but elements.
    assert_eq!(first.1, 5, "{:?}", first.2);
    assert!(chains(&second.2).is_empty(), "{:?}", second.2);
    assert_eq!(second.1, 0, "{:?}", second.2);
    // Re-pointed dispatch (delete + add), one new slot, one new hairpin pair.
    assert_eq!(first.0, 4, "{:?}", first.2);
    assert_eq!(second.0, first.0);
}

#[test]
fn an_unchanged_sync_plans_nothing() {
    let t = table(100);
    let sync = Sync::new(&t);
    assert!(plan(&sync.desired, Some(&sync.kernel), None).is_empty());
    let none = diff(&t, &t);
    assert!(plan(&sync.desired, Some(&sync.kernel), Some(&none)).is_empty());
}

#[test]
fn removing_the_last_service_of_a_count_deletes_its_chain() {
    let t0 = table(10);
    let t1 = t0.edit().insert(service(3, 3)).build().expect("valid");
    let mut sync = Sync::new(&t0);
    sync.step(&t0, &t1);
    assert!(sync.kernel.chains.contains_key(&ChainName::Service(3)));
    let mut b = t1.edit();
    b.remove(&ServicePortName::new("ns", "svc-3", "p"));
    let t2 = b.build().expect("valid");
    let changes = sync.step(&t1, &t2);
    assert!(
        changes.contains(&Change::DeleteChain(ChainName::Service(3))),
        "{changes:?}"
    );
    assert!(!sync.kernel.chains.contains_key(&ChainName::Service(3)));
}

#[test]
fn an_affinity_port_losing_an_endpoint_purges_its_affinity_elements() {
    let sticky = |endpoints: usize| {
        let mut port = service(7, endpoints);
        port.session_affinity = proxy_core::table::SessionAffinity::ClientIp {
            timeout: std::time::Duration::from_secs(600),
        };
        port
    };
    let t0 = table(10).edit().insert(sticky(2)).build().expect("valid");
    let t1 = t0.edit().insert(sticky(1)).build().expect("valid");
    let mut sync = Sync::new(&t0);
    let changes = sync.step(&t0, &t1);
    let gone = sticky(2).endpoints[1].addr;
    let purges: Vec<&Change> = changes
        .iter()
        .filter(|c| matches!(c, Change::PurgeAffinity(..)))
        .collect();
    assert_eq!(
        purges,
        vec![&Change::PurgeAffinity(
            backend_nftables::model::Family::V4,
            std::net::SocketAddr::new(gone, 8080)
        )],
        "{changes:?}"
    );
    // A port without affinity purges nothing.
    let t2 = t1.edit().insert(service(3, 1)).build().expect("valid");
    let changes = sync.step(&t1, &t2);
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, Change::PurgeAffinity(..))),
        "{changes:?}"
    );
}
