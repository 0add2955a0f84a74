use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use proxy_core::diff::diff;
use proxy_core::table::{Endpoint, Scheduler, ServicePort, SessionAffinity, TrafficPolicy};
use proxy_core::testing::generate::{
    large_table, with_endpoint_changed, with_service_added, with_service_removed,
};

use super::*;
use crate::plan::{plan, RouteTarget};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid ip")
}

fn key(protocol: Protocol, s: &str) -> ListenerKey {
    ListenerKey {
        protocol,
        addr: s.parse().expect("socket addr"),
    }
}

/// `applied` after `plan`, as apply leaves it when every listener binds.
fn applied_after(applied: &Listeners, plan: &Plan) -> Listeners {
    let mut next = applied.clone();
    for key in &plan.close {
        next.remove(key);
    }
    for key in plan.open.iter().chain(&plan.update) {
        next.insert(*key, plan.desired[key].clone());
    }
    next
}

/// The service ports `problems` belong to: what the dataplane keeps for the next partial plan.
fn ports_of(problems: &[SyncProblem]) -> BTreeSet<ServicePortName> {
    problems
        .iter()
        .filter_map(|problem| problem.service_port.clone())
        .collect()
}

/// The fixed node addresses of `config`.
fn ips(config: &UserspaceConfig) -> NodeIps {
    config.node_addresses.iter().copied().collect()
}

fn render(problems: &[SyncProblem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

// === Cost follows the change ===

/// 10,000 service ports of 10 endpoints, every fifth with a node port on two node addresses.
fn at_scale() -> (ServiceTable, UserspaceConfig, Listeners) {
    let table = large_table(10_000, 10);
    let config = UserspaceConfig {
        node_addresses: vec![ip("198.19.255.255"), ip("2001:db8::1")],
        ..UserspaceConfig::default()
    };
    let full = plan(&table, &config, &ips(&config), &Listeners::new());
    assert_eq!(
        full.desired.len(),
        14_000,
        "10,000 cluster IPs and 2 x 2,000 node ports"
    );
    assert!(full.problems.is_empty(), "{:?}", render(&full.problems));
    (table, config, full.desired)
}

#[test]
fn one_endpoint_changed_among_10_000_service_ports_plans_one_listener() {
    let (table, config, applied) = at_scale();
    let edited = with_endpoint_changed(&table, 42);
    let changes = diff(&table, &edited);
    let p = plan_partial(
        &edited,
        &changes,
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &applied,
        &BTreeSet::new(),
    );
    let name = edited.iter().nth(42).expect("port 42").name.clone();
    assert_eq!(p.listeners_planned(), 1, "{p:?}");
    assert_eq!(p.update, [key(Protocol::Tcp, "198.18.0.43:80")]);
    assert_eq!(p.desired.len(), 1);
    assert_eq!(p.scope, Scope::Ports(BTreeSet::from([name])));
    assert!(p.problems.is_empty(), "{:?}", render(&p.problems));
    assert_eq!(
        applied_after(&applied, &p),
        plan(&edited, &config, &ips(&config), &Listeners::new()).desired
    );
}

#[test]
fn a_port_whose_endpoints_go_to_zero_and_back_plans_its_own_listener_only() {
    let (table, config, applied) = at_scale();
    let mut emptied = ServicePort::clone(table.iter().nth(42).expect("port 42"));
    emptied.endpoints.clear();
    let without = table.edit().insert(emptied).build().expect("valid table");
    let (node_ips, none) = (ips(&config), BTreeSet::new());
    let unchanged = NodeIpsChange::unchanged(&node_ips, &none);
    let to_zero = plan_partial(
        &without,
        &diff(&table, &without),
        &config,
        unchanged,
        &applied,
        &none,
    );
    let listener = key(Protocol::Tcp, "198.18.0.43:80");
    assert_eq!(to_zero.listeners_planned(), 1, "{to_zero:?}");
    assert_eq!(
        to_zero.update,
        [listener],
        "the socket stays; its route rejects"
    );
    assert_eq!(to_zero.desired[&listener].target, RouteTarget::Reject);
    let applied_without = applied_after(&applied, &to_zero);

    let back = plan_partial(
        &table,
        &diff(&without, &table),
        &config,
        unchanged,
        &applied_without,
        &none,
    );
    assert_eq!(back.listeners_planned(), 1, "{back:?}");
    assert_eq!(back.update, [listener]);
    assert!(matches!(
        back.desired[&listener].target,
        RouteTarget::Endpoints(_)
    ));
    assert_eq!(applied_after(&applied_without, &back), applied);
}

#[test]
fn a_node_address_added_and_one_removed_plan_only_the_node_port_listeners() {
    let (table, config, applied) = at_scale();
    let dependent: BTreeSet<ServicePortName> = table
        .iter()
        .filter(|port| crate::plan::depends_on_node_ips(port))
        .map(|port| port.name.clone())
        .collect();
    assert_eq!(dependent.len(), 2_000);
    let previous = ips(&config);
    // 198.19.255.255 goes, 198.19.255.254 comes; 2001:db8::1 stays.
    let current: NodeIps = [ip("198.19.255.254"), ip("2001:db8::1")].into();
    let p = plan_partial(
        &table,
        &diff(&table, &table),
        &config,
        NodeIpsChange {
            previous: &previous,
            current: &current,
            dependent: &dependent,
        },
        &applied,
        &BTreeSet::new(),
    );
    assert!(p.problems.is_empty(), "{:?}", render(&p.problems));
    assert_eq!(
        p.open.len(),
        2_000,
        "a listener per node port on the new address"
    );
    assert_eq!(p.close.len(), 2_000, "and none left on the old one");
    assert!(
        p.update.is_empty(),
        "{:?}",
        &p.update[..p.update.len().min(3)]
    );
    assert!(p.open.iter().all(|k| k.addr.ip() == ip("198.19.255.254")));
    assert!(p.close.iter().all(|k| k.addr.ip() == ip("198.19.255.255")));
    // Only the node ports on the two addresses that changed were planned: not their ports'
    // cluster IPs or node ports on the address that stayed, nor the 8,000 other ports.
    assert_eq!(p.listeners_planned(), 2_000 * 2);
    assert_eq!(p.scope, Scope::Ports(BTreeSet::new()));
    let full = plan(&table, &config, &current, &Listeners::new());
    assert_eq!(applied_after(&applied, &p), full.desired);

    // Unchanged addresses plan nothing at all.
    let p = plan_partial(
        &table,
        &diff(&table, &table),
        &config,
        NodeIpsChange::unchanged(&current, &dependent),
        &full.desired,
        &BTreeSet::new(),
    );
    assert_eq!(p.listeners_planned(), 0, "{p:?}");
}

#[test]
fn a_node_address_that_is_a_cluster_ip_of_another_port_goes_to_the_first_claim() {
    // `db` (first by name) has cluster IP 198.18.0.1 on port 30080; `web`'s node port is
    // 30080. When 198.18.0.1 becomes a node address, `db` keeps the key and `web` loses it, as
    // in the full plan; when it goes, `db` still holds it.
    let db = ServicePort::new(
        ServicePortName::new("default", "db", "sql"),
        Protocol::Tcp,
        30080,
    )
    .with_cluster_ip(ip("198.18.0.1"))
    .with_endpoint(Endpoint::new(ip("198.18.9.1"), 5432));
    let web = ServicePort::new(
        ServicePortName::new("default", "web", "http"),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(ip("198.18.0.10"))
    .with_node_port(30080)
    .with_endpoint(Endpoint::new(ip("198.18.9.2"), 8080));
    let t = ServiceTable::builder()
        .insert(db.clone())
        .insert(web.clone())
        .build()
        .expect("valid");
    let config = UserspaceConfig::default();
    let dependent = BTreeSet::from([web.name.clone()]);
    let before: NodeIps = [ip("198.18.0.2")].into();
    let after: NodeIps = [ip("198.18.0.1"), ip("198.18.0.2")].into();
    let applied = plan(&t, &config, &before, &Listeners::new()).desired;
    let change = NodeIpsChange {
        previous: &before,
        current: &after,
        dependent: &dependent,
    };
    let p = plan_partial(
        &t,
        &diff(&t, &t),
        &config,
        change,
        &applied,
        &BTreeSet::new(),
    );
    let full = plan(&t, &config, &after, &Listeners::new());
    assert_eq!(render(&p.problems), render(&full.problems));
    assert_eq!(ports_of(&p.problems), BTreeSet::from([web.name.clone()]));
    let applied = applied_after(&applied, &p);
    assert_eq!(applied, full.desired);

    let back = NodeIpsChange {
        previous: &after,
        current: &before,
        dependent: &dependent,
    };
    let p = plan_partial(
        &t,
        &diff(&t, &t),
        &config,
        back,
        &applied,
        &ports_of(&p.problems),
    );
    assert!(p.problems.is_empty(), "{:?}", render(&p.problems));
    assert_eq!(
        applied_after(&applied, &p),
        plan(&t, &config, &before, &Listeners::new()).desired
    );
}

#[test]
fn a_node_port_service_plans_its_cluster_ip_and_one_listener_per_node_address() {
    let (table, config, applied) = at_scale();
    let edited = with_endpoint_changed(&table, 40);
    let p = plan_partial(
        &edited,
        &diff(&table, &edited),
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &applied,
        &BTreeSet::new(),
    );
    assert_eq!(p.listeners_planned(), 3, "{p:?}");
    assert_eq!(
        p.update.len(),
        3,
        "the node port selects external endpoints too"
    );
}

#[test]
fn adding_and_removing_a_service_port_at_10_000_opens_or_closes_only_its_listeners() {
    let (table, config, applied) = at_scale();
    let smaller = with_service_removed(&table, 0);
    let p = plan_partial(
        &smaller,
        &diff(&table, &smaller),
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &applied,
        &BTreeSet::new(),
    );
    assert_eq!(p.listeners_planned(), 3, "{p:?}");
    assert_eq!(p.close.len(), 3, "cluster IP and two node addresses");

    let bigger = with_service_added(&table);
    let p = plan_partial(
        &bigger,
        &diff(&table, &bigger),
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &applied,
        &BTreeSet::new(),
    );
    assert_eq!((p.listeners_planned(), p.open.len()), (1, 1), "{p:?}");
}

#[test]
fn an_unchanged_table_plans_nothing_but_the_ports_left_with_problems() {
    let (table, config, applied) = at_scale();
    let p = plan_partial(
        &table,
        &diff(&table, &table),
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &applied,
        &BTreeSet::new(),
    );
    assert_eq!(p.listeners_planned(), 0, "{p:?}");
    assert_eq!(p.scope, Scope::Ports(BTreeSet::new()));

    // A listener that could not be bound: its port is planned again, and only it.
    let name = table.iter().nth(7).expect("port 7").name.clone();
    let failed = key(Protocol::Tcp, "198.18.0.8:80");
    let mut without = applied.clone();
    without.remove(&failed);
    let p = plan_partial(
        &table,
        &diff(&table, &table),
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &without,
        &BTreeSet::from([name]),
    );
    assert_eq!(p.open, [failed]);
    assert_eq!(p.listeners_planned(), 1, "{p:?}");
}

// === Shared and clashing addresses ===

/// Node port 30080 on node address 127.0.0.1, which `db`'s cluster IP claims on port 30080 too.
fn clash() -> (ServicePort, ServicePort, UserspaceConfig) {
    let web = ServicePort::new(
        ServicePortName::new("default", "web", "http"),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(ip("127.0.0.10"))
    .with_node_port(30080)
    .with_endpoint(Endpoint::new(ip("127.0.0.50"), 8080));
    let db = ServicePort::new(
        ServicePortName::new("default", "db", "sql"),
        Protocol::Tcp,
        30080,
    )
    .with_cluster_ip(ip("127.0.0.1"))
    .with_endpoint(Endpoint::new(ip("127.0.0.60"), 5432));
    let config = UserspaceConfig {
        node_addresses: vec![ip("127.0.0.1")],
        ..UserspaceConfig::default()
    };
    (web, db, config)
}

fn table_of(ports: impl IntoIterator<Item = ServicePort>) -> ServiceTable {
    ports
        .into_iter()
        .fold(ServiceTable::builder(), |builder, port| {
            builder.insert(port)
        })
        .build()
        .expect("valid table")
}

#[test]
fn removing_the_owner_of_a_shared_address_hands_it_to_the_port_that_lost_it() {
    let (web, db, config) = clash();
    let shared = key(Protocol::Tcp, "127.0.0.1:30080");
    let both = table_of([web.clone(), db]);
    let first = plan(&both, &config, &ips(&config), &Listeners::new());
    assert_eq!(
        first.desired[&shared].service_port,
        ServicePortName::new("default", "db", "sql")
    );
    let with_problems = ports_of(&first.problems);
    assert_eq!(with_problems, BTreeSet::from([web.name.clone()]));

    let web_only = table_of([web.clone()]);
    let p = plan_partial(
        &web_only,
        &diff(&both, &web_only),
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &first.desired,
        &with_problems,
    );
    assert_eq!(p.update, [shared], "{p:?}");
    assert_eq!(p.desired[&shared].service_port, web.name);
    assert!(p.problems.is_empty(), "{:?}", render(&p.problems));
    assert_eq!(
        applied_after(&first.desired, &p),
        plan(&web_only, &config, &ips(&config), &Listeners::new()).desired
    );
}

#[test]
fn a_changed_port_that_takes_an_address_reports_the_unchanged_port_that_lost_it() {
    let (web, db, config) = clash();
    let shared = key(Protocol::Tcp, "127.0.0.1:30080");
    let mut db_elsewhere = db.clone();
    db_elsewhere.port = 5432;
    let before = table_of([web.clone(), db_elsewhere]);
    let applied = plan(&before, &config, &ips(&config), &Listeners::new()).desired;
    assert_eq!(applied[&shared].service_port, web.name);

    // `db` moves to port 30080: its name comes first, so it takes the address from `web`,
    // which the change set does not name.
    let after = table_of([web.clone(), db.clone()]);
    let changes = diff(&before, &after);
    assert_eq!(changes.touched().collect::<Vec<_>>(), [&db.name]);
    let p = plan_partial(
        &after,
        &changes,
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &applied,
        &BTreeSet::new(),
    );
    assert!(p.update.contains(&shared), "{p:?}");
    assert_eq!(p.desired[&shared].service_port, db.name);
    assert_eq!(ports_of(&p.problems), BTreeSet::from([web.name.clone()]));
    let full = plan(&after, &config, &ips(&config), &Listeners::new());
    assert_eq!(render(&p.problems), render(&full.problems));
    assert_eq!(applied_after(&applied, &p), full.desired);
}

#[test]
fn an_unchanged_owner_keeps_its_address_against_a_later_claim() {
    let (web, db, config) = clash();
    let shared = key(Protocol::Tcp, "127.0.0.1:30080");
    let mut web_without = web.clone();
    web_without.node_port = None;
    let before = table_of([web_without, db.clone()]);
    let applied = plan(&before, &config, &ips(&config), &Listeners::new()).desired;
    let after = table_of([web.clone(), db.clone()]);
    let p = plan_partial(
        &after,
        &diff(&before, &after),
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &applied,
        &BTreeSet::new(),
    );
    assert_eq!(
        p.desired[&shared].service_port, db.name,
        "db keeps it: {p:?}"
    );
    assert!(p.keep.contains(&shared) && p.is_noop(), "{p:?}");
    assert_eq!(
        render(&p.problems),
        render(&plan(&after, &config, &ips(&config), &applied).problems)
    );
    assert_eq!(ports_of(&p.problems), BTreeSet::from([web.name.clone()]));

    // Touching `db` alone later still reports `web`'s problem (it is planned again).
    let mut db_changed = db.clone();
    db_changed
        .endpoints
        .push(Endpoint::new(ip("127.0.0.61"), 5432));
    let later = table_of([web.clone(), db_changed]);
    let applied = applied_after(&applied, &p);
    let p2 = plan_partial(
        &later,
        &diff(&after, &later),
        &config,
        NodeIpsChange::unchanged(&ips(&config), &BTreeSet::new()),
        &applied,
        &ports_of(&p.problems),
    );
    assert_eq!(render(&p2.problems), render(&p.problems));
}

// === A series of partial plans ends where one full plan does ===

/// A small deterministic generator (xorshift64*): the workspace's proptest strategies keep every
/// address apart, and this test wants addresses that clash.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n")
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

const SLOTS: usize = 6;

/// A service port in `slot` with every field random, on addresses that often clash with the
/// node addresses of [`clashing_config`] (and with the same port's other addresses).
fn random_port(rng: &mut Rng, slot: usize) -> ServicePort {
    let protocol = rng.pick(&[
        Protocol::Tcp,
        Protocol::Tcp,
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Udp,
        Protocol::Sctp,
    ]);
    let vip = |rng: &mut Rng| ip(&format!("198.18.0.{}", 1 + rng.below(3)));
    let mut port = ServicePort::new(
        ServicePortName::new("ns", format!("svc-{slot}"), "p"),
        protocol,
        rng.pick(&[80, 30080, 30081]),
    );
    port.cluster_ips = vec![vip(rng)];
    if rng.one_in(4) {
        port.external_ips = vec![vip(rng)];
    }
    if rng.one_in(5) {
        port.load_balancer_ips = vec![ip("198.18.0.4")];
        if rng.one_in(2) {
            port.load_balancer_source_ranges = vec!["198.18.0.0/24".parse().expect("net")];
        }
    }
    if rng.one_in(2) {
        port.node_port = Some(rng.pick(&[30080, 30081, 30082]));
    }
    for host in 1..=4 {
        if rng.one_in(3) {
            continue;
        }
        let mut endpoint = Endpoint::new(ip(&format!("198.18.1.{host}")), 8080);
        (endpoint.ready, endpoint.serving, endpoint.terminating) = rng.pick(&[
            (true, true, false),
            (true, true, false),
            (false, true, true),
            (false, false, true),
        ]);
        endpoint.is_local = rng.one_in(2);
        endpoint.weight = rng.pick(&[1, 1, 2]);
        port.endpoints.push(endpoint);
    }
    let policy = |rng: &mut Rng| rng.pick(&[TrafficPolicy::Cluster, TrafficPolicy::Local]);
    port.external_traffic_policy = policy(rng);
    port.internal_traffic_policy = policy(rng);
    if rng.one_in(3) {
        port.session_affinity = SessionAffinity::ClientIp {
            timeout: Duration::from_secs(rng.pick(&[10, 20])),
        };
    }
    port.scheduler = rng.pick(&[
        None,
        None,
        Some(Scheduler::Maglev),
        Some(Scheduler::LeastConnection),
    ]);
    port.idle_timeout = rng.pick(&[None, None, Some(Duration::from_secs(60))]);
    port
}

/// One to three slots changed: a port added, removed, replaced, or one endpoint flipped.
fn mutate(rng: &mut Rng, ports: &BTreeMap<usize, ServicePort>) -> BTreeMap<usize, ServicePort> {
    let mut next = ports.clone();
    for _ in 0..=rng.below(3) {
        let slot = rng.below(SLOTS);
        match (next.get_mut(&slot), rng.below(3)) {
            (None, _) => {
                next.insert(slot, random_port(rng, slot));
            }
            (Some(_), 0) => {
                next.remove(&slot);
            }
            (Some(port), 1) if !port.endpoints.is_empty() => {
                let which = rng.below(port.endpoints.len());
                let endpoint = &mut port.endpoints[which];
                endpoint.ready = !endpoint.ready;
                endpoint.serving = endpoint.ready;
                endpoint.terminating = !endpoint.ready;
            }
            (Some(_), _) => {
                next.insert(slot, random_port(rng, slot));
            }
        }
    }
    next
}

/// The valid table of `ports`: each port in slot order is kept only if the table stays valid
/// with it (two ports on one (address, port, protocol), a node port used twice...).
fn valid_table(
    ports: &BTreeMap<usize, ServicePort>,
) -> (ServiceTable, BTreeMap<usize, ServicePort>) {
    let mut kept = BTreeMap::new();
    let mut table = ServiceTable::empty();
    for (slot, port) in ports {
        let candidate = table.edit().insert(port.clone()).build();
        if let Ok(candidate) = candidate {
            table = candidate;
            kept.insert(*slot, port.clone());
        }
    }
    (table, kept)
}

fn clashing_config() -> UserspaceConfig {
    UserspaceConfig {
        node_addresses: vec![ip("198.18.0.1"), ip("198.18.0.2")],
        ..UserspaceConfig::default()
    }
}

/// Every step: a random change (of the table, and now and then of the node's addresses), a
/// partial plan applied with some listeners failing to bind. After each step the listeners
/// equal the full plan's, less those that failed, and the problems are the full plan's; one
/// more partial plan with no change then binds the failed ones.
#[test]
fn a_series_of_partial_plans_ends_where_one_full_plan_does() {
    let config = clashing_config();
    let pool = [ip("198.18.0.1"), ip("198.18.0.2"), ip("198.18.0.3")];
    let mut steps_with_clashes = 0;
    let mut steps_with_bind_failures = 0;
    let mut steps_readdressed = 0;
    for seed in 1..=300_u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut ports = BTreeMap::new();
        let mut table = ServiceTable::empty();
        let mut applied = Listeners::new();
        let mut with_problems = BTreeSet::new();
        let mut history = Vec::new();
        let mut node_ips = ips(&config);
        for step in 0..12 {
            let (next, kept) = valid_table(&mutate(&mut rng, &ports));
            ports = kept;
            let changes = diff(&table, &next);
            let mut next_ips = node_ips.clone();
            if rng.one_in(3) {
                next_ips.clear();
                for ip in pool {
                    if !rng.one_in(2) {
                        next_ips.insert(ip);
                    }
                }
            }
            steps_readdressed += usize::from(next_ips != node_ips);
            // What the dataplane passes: the dependent ports of the table the last sync planned.
            let dependent: BTreeSet<ServicePortName> = table
                .iter()
                .filter(|port| crate::plan::depends_on_node_ips(port))
                .map(|port| port.name.clone())
                .collect();
            let p = plan_partial(
                &next,
                &changes,
                &config,
                NodeIpsChange {
                    previous: &node_ips,
                    current: &next_ips,
                    dependent: &dependent,
                },
                &applied,
                &with_problems,
            );
            node_ips = next_ips;
            // Some listeners fail to bind: not applied, and a problem of their port.
            let failed: Vec<ListenerKey> =
                p.open.iter().copied().filter(|_| rng.one_in(6)).collect();
            applied = applied_after(&applied, &p);
            with_problems = ports_of(&p.problems);
            for key in &failed {
                with_problems.insert(applied[key].service_port.clone());
                applied.remove(key);
            }
            table = next;
            history.push(format!("{changes:?} on {node_ips:?}"));

            let full = plan(&table, &config, &node_ips, &Listeners::new());
            let mut expected = full.desired.clone();
            for key in &failed {
                expected.remove(key);
            }
            let context = || format!("seed {seed} step {step}\nchanges: {history:#?}");
            assert_eq!(applied, expected, "{}", context());
            assert_eq!(render(&p.problems), render(&full.problems), "{}", context());
            steps_with_clashes +=
                usize::from(full.problems.iter().any(|p| p.reason.contains("claimed")));
            steps_with_bind_failures += usize::from(!failed.is_empty());
        }
        // No change at all: the ports left with problems are planned again, and bind.
        let p = plan_partial(
            &table,
            &diff(&table, &table),
            &config,
            NodeIpsChange::unchanged(&node_ips, &BTreeSet::new()),
            &applied,
            &with_problems,
        );
        applied = applied_after(&applied, &p);
        let full = plan(&table, &config, &node_ips, &applied);
        assert!(
            full.is_noop(),
            "seed {seed}: a full sync after the series would change {full:?}"
        );
        assert_eq!(render(&p.problems), render(&full.problems), "seed {seed}");
    }
    assert!(
        steps_with_clashes > 100,
        "too few clashes tried: {steps_with_clashes}"
    );
    assert!(
        steps_with_bind_failures > 100,
        "too few bind failures tried: {steps_with_bind_failures}"
    );
    assert!(
        steps_readdressed > 100,
        "too few changes of node addresses tried: {steps_readdressed}"
    );
}
