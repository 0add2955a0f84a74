//! The pure half of the iptables suite: the table at each size, and for each layout the exact
//! restore inputs of a cold full sync, a one-endpoint change and a service added, with their
//! sizes, and the rules a new connection to the target walks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use backend_iptables::config::{DispatchLayout, InlineBalancing, IptablesConfig, TreeConfig};
use backend_iptables::names::Names;
use backend_iptables::plan::{Applied, Hook, Plan, Planner};
use backend_iptables::rules::{ChainName, Family, Rule, Table, TableName, Target};
use backend_iptables::testing::kube_layout::{kube_proxy_nat, kube_proxy_partial_nat};
use backend_iptables::testing::trace::{Packet, Tracer};
use proxy_core::table::{SessionAffinity, TrafficPolicy};
use proxy_core::testing::generate::{large_table, with_endpoint_changed, with_service_added};
use proxy_core::{diff, Protocol, ServicePort, ServiceTable, SyncMode};
use serde::{Deserialize, Serialize};

use crate::netns::{server_addr, CLIENT_ADDR, NODE_CLIENT_SIDE, NODE_SERVER_SIDE};

/// The first cluster IP: service port `i` gets `198.19.192.1 + i` (a dense block, like a
/// service CIDR, clear of the topology's 198.18.0.0/23, of the generator's endpoints, which end at
/// 198.19.173.112 for 10,000 x 10, and of the addresses `with_service_added` takes from
/// 198.19.255.254 down).
const FIRST_VIP: u32 = u32::from_be_bytes([198, 19, 192, 1]);
/// Most service ports [`bench_table`] can number in its block.
pub const MAX_PORTS: usize = 16_000;
/// The target's service port.
pub const TARGET_PORT: u16 = 80;
/// The backends' port in the server namespace.
pub const BACKEND_PORT: u16 = 8080;
/// Chain prefix of kube-proxy's layout (never `KUBE-`).
pub const KUBE_PREFIX: &str = "KPL-";

/// Which rules are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Our backend, tree dispatch with inline balancing (the default).
    Tree,
    /// Our backend, tree dispatch with a chain per service port (`TreeConfig::inline_balancing`
    /// off: the layout before issue #11).
    TreePortChains,
    /// Our backend, `DispatchLayout::Flat` (kube-proxy's list, our chains).
    Flat,
    /// Exactly kube-proxy's layout (`testing::kube_layout`).
    Kube,
}

impl Layout {
    /// The name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Layout::Tree => "ours (tree)",
            Layout::TreePortChains => "ours (tree, per-port chains)",
            Layout::Flat => "ours (flat)",
            Layout::Kube => "kube-proxy",
        }
    }
}

/// The VIP of service port `i` (in name order).
pub fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_VIP + u32::try_from(i).expect("below MAX_PORTS"))
}

/// The cluster IP connected to at size `n`: the last service port's.
pub fn target_vip(n: usize) -> Ipv4Addr {
    vip(n.saturating_sub(1))
}

/// The table at size `n`: `large_table(n, endpoints)` reduced to what kube-proxy's generated
/// layout models (cluster IPs only: no node port, health-check node port, `Local` policy or
/// session affinity), its cluster IPs renumbered into one dense block ([`vip`]), and its last
/// service port (in name order: the last rule of a flat dispatch chain, and as deep in our tree as
/// any) made the target: TCP [`TARGET_PORT`], no affinity, endpoints the server namespace's
/// addresses on [`BACKEND_PORT`], so real connections reach real backends.
///
/// # Panics
/// When `n` is 0 or above [`MAX_PORTS`], `endpoints` is 0 or above 249, or the generator's
/// address plan overflows.
pub fn bench_table(n: usize, endpoints: usize) -> ServiceTable {
    assert!(
        (1..=MAX_PORTS).contains(&n) && (1..250).contains(&endpoints),
        "n={n} endpoints={endpoints}"
    );
    let generated = large_table(n, endpoints);
    let mut builder = ServiceTable::builder();
    builder.set_node(generated.node().map(str::to_owned));
    for (i, port) in generated.iter().enumerate() {
        let mut port = ServicePort::clone(port);
        port.cluster_ips = vec![IpAddr::V4(vip(i))];
        port.node_port = None;
        port.health_check_node_port = None;
        port.external_traffic_policy = TrafficPolicy::Cluster;
        port.session_affinity = SessionAffinity::None;
        if i + 1 == n {
            port.protocol = Protocol::Tcp;
            port.port = TARGET_PORT;
            port.target_port = BACKEND_PORT;
            port.endpoints = (0..endpoints)
                .map(|j| {
                    let index = u8::try_from(j).expect("below 250");
                    proxy_core::Endpoint::new(IpAddr::V4(server_addr(index)), BACKEND_PORT)
                })
                .collect();
        }
        builder.upsert(port);
    }
    match builder.build() {
        Ok(table) => table,
        Err(errors) => panic!("benchmark table invalid: {errors}"),
    }
}

/// One sync step: the restores as the backend runs them (ours: one per family, both tables in
/// one input; kube-proxy's generated layout: nat only).
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// Each restore's input.
    pub inputs: Vec<String>,
    /// Rules written.
    pub rules: usize,
    /// Chains written.
    pub chains: usize,
}

impl Step {
    fn from_plan(plan: &Plan) -> Step {
        // One process per family, both tables in one input: as `apply_plan` runs it.
        let input: String = plan
            .restores
            .iter()
            .filter(|r| r.family == Family::V4)
            .map(|r| r.input())
            .collect();
        Step {
            inputs: if input.is_empty() {
                Vec::new()
            } else {
                vec![input]
            },
            rules: plan.rules_written(),
            chains: plan.chains_written(),
        }
    }

    fn from_table(table: &Table) -> Step {
        Step {
            inputs: vec![table.to_string()],
            rules: table.rule_count(),
            chains: table.chains.len(),
        }
    }

    /// Bytes of restore input.
    pub fn bytes(&self) -> usize {
        self.inputs.iter().map(String::len).sum()
    }
}

/// Everything one (size, layout) cell loads, in order.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Cold full sync of the table.
    pub full: Step,
    /// Then one endpoint of the middle service port flipped.
    pub endpoint_change: Step,
    /// Then one service port added.
    pub service_added: Step,
    /// The jumps from the built-in chains, as restore input (loaded after the syncs, untimed).
    pub hooks: String,
    /// Rules a new connection to the target walks in nat from PREROUTING to its DNAT.
    pub walk: Walk,
}

/// The rule walk of a new connection to the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walk {
    /// Worst case over the endpoints picked.
    pub nat_rules: usize,
    /// `tracer`, or `analytic` (with why) when the tracer refused the rules.
    pub method: String,
}

/// The config our layouts use.
pub fn our_config(layout: Layout) -> IptablesConfig {
    let default = IptablesConfig::default();
    IptablesConfig {
        dispatch: if layout == Layout::Flat {
            DispatchLayout::Flat
        } else {
            DispatchLayout::Tree
        },
        tree: TreeConfig {
            // Explicit, whatever the variant: the backend's default picks inline with nft and a
            // chain per port with legacy (`InlineBalancing::Nft`).
            inline_balancing: if layout == Layout::Tree {
                InlineBalancing::Always
            } else {
                InlineBalancing::Never
            },
            ..default.tree
        },
        ..default
    }
}

/// The packet traced: the client's first SYN to the target.
fn target_packet(n: usize) -> Packet {
    Packet::tcp(
        &CLIENT_ADDR.to_string(),
        &target_vip(n).to_string(),
        TARGET_PORT,
    )
}

fn node_addrs() -> Vec<IpAddr> {
    vec![NODE_CLIENT_SIDE.into(), NODE_SERVER_SIDE.into()]
}

/// Builds one cell's inputs: `table` full, then `with_endpoint_changed(table, n/2)`, then
/// `with_service_added` of that.
pub fn inputs(table: &ServiceTable, layout: Layout) -> Inputs {
    let changed = with_endpoint_changed(table, table.len() / 2);
    let added = with_service_added(&changed);
    match layout {
        Layout::Tree | Layout::TreePortChains | Layout::Flat => {
            let planner = Planner::new(our_config(layout)).expect("the default config is valid");
            let full = planner.plan_full(table);
            let mut applied = Applied::new();
            applied.commit(&full);
            let endpoint_change = planner.plan(
                &changed,
                &diff(table, &changed),
                &applied,
                SyncMode::Partial,
            );
            applied.commit(&endpoint_change);
            let service_added =
                planner.plan(&added, &diff(&changed, &added), &applied, SyncMode::Partial);
            let hooks = planner.hooks();
            let walk = match Tracer::from_plan(&planner, &full, Family::V4, node_addrs()) {
                Ok(tracer) => traced_walk(&tracer, table.len()),
                Err(e) => Err(e.to_string()),
            };
            Inputs {
                full: Step::from_plan(&full),
                endpoint_change: Step::from_plan(&endpoint_change),
                service_added: Step::from_plan(&service_added),
                hooks: hooks_input(&hooks),
                walk: walk.unwrap_or_else(|e| Walk {
                    nat_rules: 0,
                    method: format!("tracer failed: {e}"),
                }),
            }
        }
        Layout::Kube => {
            let names = Names::new(KUBE_PREFIX).expect("a valid prefix");
            let full = kube_proxy_nat(table, &names);
            let endpoint_change =
                kube_proxy_partial_nat(table, &changed, diff(table, &changed).touched(), &names);
            let service_added =
                kube_proxy_partial_nat(&changed, &added, diff(&changed, &added).touched(), &names);
            let hooks = vec![Hook {
                table: TableName::Nat,
                chain: ChainName::new("PREROUTING"),
                rule: Rule::new(Target::Jump(names.services())),
            }];
            let walk = Tracer::new(Family::V4, &full.to_string(), &hooks, node_addrs())
                .map_err(|e| e.to_string())
                .and_then(|tracer| traced_walk(&tracer, table.len()))
                .unwrap_or_else(|e| kube_walk_analytic(table, &e));
            Inputs {
                full: Step::from_table(&full),
                endpoint_change: Step::from_table(&endpoint_change),
                service_added: Step::from_table(&service_added),
                hooks: hooks_input(&hooks),
                walk,
            }
        }
    }
}

fn traced_walk(tracer: &Tracer, n: usize) -> Result<Walk, String> {
    let trace = tracer.trace(&target_packet(n)).map_err(|e| e.to_string())?;
    let target = SocketAddr::new(IpAddr::V4(server_addr(0)), BACKEND_PORT);
    if !trace.destinations().contains_key(&target) {
        return Err(format!(
            "the target is not DNATed to {target}: {}",
            trace.summary()
        ));
    }
    Ok(Walk {
        nat_rules: trace.max_nat_rules_walked(),
        method: "tracer".to_owned(),
    })
}

/// kube-proxy's walk computed: the PREROUTING jump, every services rule up to the target's
/// (its position), then the SVC chain's probability rules (worst case: all of them) and the
/// SEP chain's two rules.
fn kube_walk_analytic(table: &ServiceTable, why: &str) -> Walk {
    let position = table
        .iter()
        .filter(|p| p.endpoints.iter().any(|e| e.ready))
        .position(|p| p.cluster_ips.contains(&IpAddr::V4(target_vip(table.len()))))
        .map_or(table.len(), |i| i + 1);
    let endpoints = table.iter().last().map_or(0, |p| p.endpoints.len());
    Walk {
        nat_rules: 1 + position + endpoints + 2,
        method: format!("analytic (tracer: {why})"),
    }
}

/// The hooks as one restore input per table (appended in order; the namespace is fresh).
pub fn hooks_input(hooks: &[Hook]) -> String {
    let mut out = String::new();
    for table in [TableName::Filter, TableName::Nat] {
        let rules: Vec<&Hook> = hooks.iter().filter(|h| h.table == table).collect();
        if rules.is_empty() {
            continue;
        }
        out.push_str(&format!("*{table}\n"));
        for hook in rules {
            out.push_str(&format!("-A {} {}\n", hook.chain, hook.rule));
        }
        out.push_str("COMMIT\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_last_port_and_reaches_the_server_namespace() {
        let table = bench_table(30, 10);
        let last = table.iter().last().expect("ports");
        assert_eq!(
            last.cluster_ips,
            [IpAddr::V4(Ipv4Addr::new(198, 19, 192, 30))]
        );
        assert_eq!(target_vip(30), Ipv4Addr::new(198, 19, 192, 30));
        assert_eq!(vip(MAX_PORTS - 1), Ipv4Addr::new(198, 19, 254, 128));
        // Only cluster IPs: what kube-proxy's generated layout models too.
        assert!(table.iter().all(|p| p.node_port.is_none()
            && p.session_affinity == SessionAffinity::None
            && p.external_traffic_policy == TrafficPolicy::Cluster));
        assert!(table.iter().any(|p| p.protocol == Protocol::Udp));
        assert_eq!(last.protocol, Protocol::Tcp);
        assert_eq!(last.endpoints.len(), 10);
        assert_eq!(last.endpoints[9].addr, IpAddr::V4(server_addr(9)));
        assert_eq!(table.len(), 30);
    }

    #[test]
    fn partial_syncs_are_smaller_than_full_ones_and_kube_proxy_rewrites_more() {
        let table = bench_table(200, 10);
        let tree = inputs(&table, Layout::Tree);
        let kube = inputs(&table, Layout::Kube);
        for inputs in [&tree, &kube] {
            assert!(inputs.endpoint_change.bytes() * 5 < inputs.full.bytes());
            assert!(inputs.service_added.bytes() * 5 < inputs.full.bytes());
        }
        // kube-proxy's partial sync rewrites the whole services chain: 200 rules at least.
        assert!(
            kube.endpoint_change.rules >= 200,
            "{}",
            kube.endpoint_change.rules
        );
        // Ours: one chain, the port's (a chain per port) or the leaf holding it (inline, at most
        // `leaf_max_rules`, 80).
        let per_port = inputs(&table, Layout::TreePortChains);
        assert!(per_port.endpoint_change.rules < kube.endpoint_change.rules / 5);
        assert!(
            tree.endpoint_change.rules <= 80,
            "{}",
            tree.endpoint_change.rules
        );
        assert!(
            kube.hooks.contains("-A PREROUTING -j KPL-SERVICES"),
            "{}",
            kube.hooks
        );
        assert!(tree.hooks.starts_with("*filter\n"), "{}", tree.hooks);
    }

    #[test]
    fn inline_balancing_writes_fewer_chains_than_a_chain_per_port() {
        let table = bench_table(1_000, 10);
        let inline = inputs(&table, Layout::Tree);
        let per_port = inputs(&table, Layout::TreePortChains);
        // 1,000 service chains become ~250 leaves (4 ports of 10 endpoints, 4 of them on this
        // node with their hairpin rules: ~18 rules a port).
        assert!(
            inline.full.chains * 3 < per_port.full.chains,
            "{} vs {}",
            inline.full.chains,
            per_port.full.chains
        );
        // One endpoint change: one chain either way (the leaf, or the port's chain).
        assert_eq!(inline.endpoint_change.chains, 1);
        assert_eq!(per_port.endpoint_change.chains, 1);
        assert!(
            inline.endpoint_change.rules <= 80,
            "{}",
            inline.endpoint_change.rules
        );
        assert_eq!(inline.walk.method, "tracer");
        assert!(inline.walk.nat_rules < 100, "{:?}", inline.walk);
    }

    #[test]
    fn walks_are_traced_and_the_flat_ones_grow_with_n() {
        let table = bench_table(300, 10);
        let tree = inputs(&table, Layout::Tree).walk;
        let flat = inputs(&table, Layout::Flat).walk;
        let kube = inputs(&table, Layout::Kube).walk;
        assert_eq!(tree.method, "tracer");
        assert!(tree.nat_rules < 100, "{tree:?}");
        assert!(flat.nat_rules > 300, "{flat:?}");
        assert!(kube.nat_rules > 300, "{kube:?}");
    }
}
