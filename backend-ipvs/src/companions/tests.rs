//! Companion sets and rules against the shared runner's fake tools (iptables) and the
//! in-memory ipset fake.

use std::sync::Arc;

use ipnet::IpNet;
use iptables_runner::testing::FakeTools;
use proxy_core::table::{
    Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable, TrafficPolicy,
};

use super::*;
use crate::ipset::{FakeIpset, SetEntry};
use crate::plan::plan_desired;

/// Companions over fresh fake tools (nft, empty tables) and ipset fake, with handles on both.
fn companions(config: &IpvsConfig) -> (Companions, FakeTools, Arc<FakeIpset>) {
    let tools = FakeTools::new();
    let ipset = Arc::new(FakeIpset::new());
    let companions = Companions::with_parts(
        config,
        Box::new(tools.clone()),
        Box::new(Arc::clone(&ipset)),
    );
    (companions, tools, ipset)
}

/// The tools run, in order.
fn tools_run(tools: &FakeTools) -> Vec<String> {
    tools
        .calls()
        .iter()
        .map(|c| c.tool(&[]).to_owned())
        .collect()
}

/// The sets' entries in `ipset` syntax, by set name.
fn set_texts(ipset: &FakeIpset) -> BTreeMap<String, Vec<String>> {
    ipset
        .sets()
        .into_iter()
        .map(|(name, entries)| (name, entries.iter().map(ToString::to_string).collect()))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

fn config() -> IpvsConfig {
    IpvsConfig {
        node_addresses: vec![ip("198.18.0.1")],
        cluster_cidrs: vec!["198.18.128.0/17".parse::<IpNet>().expect("cidr")],
        ..IpvsConfig::default()
    }
}

fn services(n: u32) -> ServiceTable {
    let mut builder = ServiceTable::builder().node("node-a");
    for i in 0..n {
        let vip = IpAddr::from([198, 19, (i / 250) as u8, (i % 250) as u8 + 1]);
        let port = ServicePort::new(
            ServicePortName::new("ns", format!("svc-{i}"), "p"),
            Protocol::Tcp,
            80,
        )
        .with_cluster_ip(vip)
        .with_endpoint(Endpoint::new(ip("198.18.1.10"), 8080));
        builder = builder.insert(port);
    }
    builder.build().expect("valid table")
}

fn mixed() -> ServiceTable {
    let mut local = ServicePort::new(ServicePortName::new("ns", "local", "p"), Protocol::Tcp, 80)
        .with_cluster_ip(ip("198.19.0.1"))
        .with_endpoint(Endpoint::new(ip("198.18.1.1"), 8080))
        .with_node_port(30001);
    local.external_traffic_policy = TrafficPolicy::Local;
    let mut lb = ServicePort::new(ServicePortName::new("ns", "lb", "p"), Protocol::Udp, 53)
        .with_cluster_ip(ip("2001:db8::53"))
        .with_endpoint(Endpoint::new(ip("2001:db8:1::53"), 5353));
    lb.load_balancer_ips = vec![ip("2001:db8:2::53")];
    lb.load_balancer_source_ranges = vec!["2001:db8:3::/48".parse().expect("net")];
    let empty = ServicePort::new(ServicePortName::new("ns", "empty", "p"), Protocol::Sctp, 9)
        .with_cluster_ip(ip("198.19.0.9"));
    ServiceTable::builder()
        .node("node-a")
        .insert(local)
        .insert(lb)
        .insert(empty)
        .build()
        .expect("valid table")
}

#[test]
fn set_entries_follow_the_roles_of_each_address() {
    let desired = plan_desired(&mixed(), &config());
    let entries = plan_entries(&desired, &config());
    let get = |kind, family| -> Vec<String> {
        entries
            .get(&(kind, family))
            .map(|s| s.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        get(SetKind::ClusterIp, Family::V4),
        ["198.19.0.1,tcp:80", "198.19.0.9,sctp:9"]
    );
    assert_eq!(get(SetKind::ClusterIp, Family::V6), ["2001:db8::53,udp:53"]);
    assert_eq!(
        get(SetKind::ExternalMasq, Family::V4),
        Vec::<String>::new(),
        "eTP=Local keeps the client source: no masquerade for its node port"
    );
    assert_eq!(
        get(SetKind::ExternalMasq, Family::V6),
        ["2001:db8:2::53,udp:53"]
    );
    assert_eq!(
        get(SetKind::LbFirewall, Family::V6),
        ["2001:db8:2::53,udp:53"]
    );
    assert_eq!(
        get(SetKind::LbSource, Family::V6),
        ["2001:db8:2::53,udp:53,2001:db8:3::/48"]
    );
    assert_eq!(get(SetKind::Reject, Family::V4), ["198.19.0.9,sctp:9"]);
    assert_eq!(
        get(SetKind::LoopBack, Family::V4),
        ["198.18.1.1,tcp:8080,198.18.1.1"]
    );
    assert_eq!(get(SetKind::ClusterCidr, Family::V4), ["198.18.128.0/17"]);
}

/// An eTP=Local node port with no local endpoint: its virtual server keeps the cluster
/// endpoints (kube-proxy's IPVS mode), so the drop must spare the cluster CIDRs, and only
/// them; an ITP=Local cluster IP with no local endpoint stays dropped for everyone.
#[test]
fn no_local_endpoint_on_an_external_address_drops_only_sources_outside_the_cluster() {
    let mut remote = ServicePort::new(ServicePortName::new("ns", "remote", "p"), Protocol::Tcp, 80)
        .with_cluster_ip(ip("198.19.0.2"))
        .with_endpoint(Endpoint::new(ip("198.18.129.1"), 8080))
        .with_node_port(30002);
    remote.external_traffic_policy = TrafficPolicy::Local;
    let mut internal = ServicePort::new(ServicePortName::new("ns", "itp", "p"), Protocol::Tcp, 80)
        .with_cluster_ip(ip("198.19.0.3"))
        .with_endpoint(Endpoint::new(ip("198.18.129.2"), 8080));
    internal.internal_traffic_policy = TrafficPolicy::Local;
    let table = ServiceTable::builder()
        .node("node-a")
        .insert(remote)
        .insert(internal)
        .build()
        .expect("valid table");
    let entries = plan_entries(&plan_desired(&table, &config()), &config());
    let get = |kind| -> Vec<String> {
        entries
            .get(&(kind, Family::V4))
            .map(|s| s.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    };
    assert_eq!(get(SetKind::DropOutside), ["198.18.0.1,tcp:30002"]);
    assert_eq!(get(SetKind::Drop), ["198.19.0.3,tcp:80"]);
    assert!(
        get(SetKind::ExternalMasq).is_empty(),
        "Local: not masqueraded"
    );

    let names = Names::new("SVCP-IPVS-");
    let rule = |config: &IpvsConfig| -> String {
        render_rules(&names, config, Family::V4, &[])
            .lines()
            .find(|l| l.contains("--match-set SVCP-IPVS-DROP-OUTSIDE "))
            .expect("a rule for the set")
            .to_owned()
    };
    assert_eq!(
        rule(&config()),
        "-A SVCP-IPVS-FILTER -m comment --comment \"svcp-ipvs no local endpoints, from outside \
         the cluster\" -m set --match-set SVCP-IPVS-DROP-OUTSIDE dst,dst -m set ! --match-set \
         SVCP-IPVS-CLUSTER-CIDR src -j DROP"
    );
    let no_cidr = IpvsConfig {
        cluster_cidrs: Vec::new(),
        ..config()
    };
    assert!(
        rule(&no_cidr).ends_with("--match-set SVCP-IPVS-DROP-OUTSIDE dst,dst -j DROP"),
        "without a cluster CIDR nothing tells pods apart: {}",
        rule(&no_cidr)
    );
}

#[test]
fn a_source_range_holding_a_node_address_admits_the_load_balancer_ip_itself() {
    // kube-proxy's allowFromNode (its KUBE-LOAD-BALANCER-SOURCE-IP entries): the node reaching
    // a load-balancer IP it holds locally sends from that IP. 198.18.0.0/24 holds the node
    // address 198.18.0.1.
    let mut lb = ServicePort::new(ServicePortName::new("ns", "lb", "p"), Protocol::Tcp, 443)
        .with_cluster_ip(ip("198.19.0.4"))
        .with_endpoint(Endpoint::new(ip("198.18.1.4"), 8443));
    lb.load_balancer_ips = vec![ip("198.18.7.1")];
    lb.load_balancer_source_ranges = vec!["198.18.0.0/24".parse().expect("net")];
    let sources = |port: &ServicePort| -> Vec<String> {
        let table = ServiceTable::builder()
            .insert(port.clone())
            .build()
            .expect("valid table");
        let entries = plan_entries(&plan_desired(&table, &config()), &config());
        entries
            .get(&(SetKind::LbSource, Family::V4))
            .map(|s| s.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        sources(&lb),
        [
            "198.18.7.1,tcp:443,198.18.0.0/24",
            "198.18.7.1,tcp:443,198.18.7.1/32"
        ]
    );
    lb.load_balancer_source_ranges = vec!["198.18.9.0/24".parse().expect("net")];
    assert_eq!(sources(&lb), ["198.18.7.1,tcp:443,198.18.9.0/24"]);
}

#[test]
fn rules_reference_only_our_sets_and_chains_and_never_kube() {
    let names = Names::new("SVCP-IPVS-");
    let declared: BTreeSet<String> = SetKind::ALL
        .iter()
        .flat_map(|k| Family::ALL.map(|f| names.set(*k, f)))
        .collect();
    for family in Family::ALL {
        let rules = render_rules(&names, &config(), family, &[]);
        assert!(!rules.contains("KUBE-"), "{rules}");
        let chains: BTreeSet<&str> = rules
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for line in rules.lines().filter(|l| l.starts_with("-A")) {
            let words: Vec<&str> = line.split(' ').collect();
            assert!(
                chains.contains(words[1]),
                "appends to an undeclared chain: {line}"
            );
            for pair in words.windows(2) {
                if pair[0] == "--match-set" {
                    assert!(declared.contains(pair[1]), "unknown set in {line}");
                }
                if pair[0] == "-j" && pair[1].starts_with("SVCP") {
                    assert!(chains.contains(pair[1]), "jump to undeclared chain: {line}");
                }
            }
        }
    }
}

#[test]
fn the_rule_count_is_the_same_for_one_and_a_thousand_services() {
    let count = |n| {
        let (mut companions, tools, ipset) = companions(&config());
        let desired = plan_desired(&services(n), &config());
        companions.sync(&desired, None).expect("sync");
        let rules: usize = tools
            .inputs_of("iptables-nft-restore")
            .iter()
            .chain(&tools.inputs_of("ip6tables-nft-restore"))
            .map(|input| input.lines().filter(|l| l.starts_with("-A")).count())
            .sum();
        let entries: usize = ipset.sets().values().map(BTreeSet::len).sum();
        (rules, entries)
    };
    let (rules_1, entries_1) = count(1);
    let (rules_1000, entries_1000) = count(1000);
    assert_eq!(rules_1, rules_1000);
    // 10 per family, plus the cluster-CIDR masquerade rule for IPv4 (the only family with a
    // CIDR).
    assert_eq!(rules_1, 10 + 11);
    assert_eq!(
        entries_1000 - entries_1,
        999,
        "one cluster-IP entry per service"
    );
}

#[test]
fn a_full_sync_swaps_sets_writes_rules_and_inserts_missing_jumps_once() {
    let (mut companions, tools, ipset) = companions(&config());
    let desired = plan_desired(&services(2), &config());
    companions.sync(&desired, None).expect("sync");
    let batches = ipset.batches();
    assert_eq!(batches.len(), 1, "every set in one batch: {batches:#?}");
    let (live, temp) = ("SVCP-IPVS-CLUSTER-IP", "SVCP-IPVS-CLUSTER-IP-T");
    let steps: Vec<String> = batches[0]
        .iter()
        .filter(|op| op.set() == live || op.set() == temp)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        steps.concat(),
        "create SVCP-IPVS-CLUSTER-IP hash:ip,port family inet maxelem 1048576 -exist\n\
         create SVCP-IPVS-CLUSTER-IP-T hash:ip,port family inet maxelem 1048576 -exist\n\
         flush SVCP-IPVS-CLUSTER-IP-T\n\
         add SVCP-IPVS-CLUSTER-IP-T 198.19.0.1,tcp:80\n\
         add SVCP-IPVS-CLUSTER-IP-T 198.19.0.2,tcp:80\n\
         swap SVCP-IPVS-CLUSTER-IP-T SVCP-IPVS-CLUSTER-IP\n\
         destroy SVCP-IPVS-CLUSTER-IP-T\n"
    );
    let sets = set_texts(&ipset);
    assert_eq!(sets[live], ["198.19.0.1,tcp:80", "198.19.0.2,tcp:80"]);
    assert_eq!(
        sets.len(),
        18,
        "9 kinds x 2 families, no temporary set left: {sets:#?}"
    );
    assert!(
        tools_run(&tools).iter().all(|p| p != "ipset"),
        "no ipset process"
    );
    // The missing jumps ride in the same restore as our chains, inside their table's block.
    let restores = tools.inputs_of("iptables-nft-restore");
    assert_eq!(restores.len(), 1, "one IPv4 restore");
    let inserted: Vec<&str> = restores[0]
        .lines()
        .filter(|l| l.starts_with("-I "))
        .collect();
    assert_eq!(
        inserted,
        [
            "-I PREROUTING -m comment --comment \"svcp-ipvs\" -j SVCP-IPVS-SERVICES",
            "-I OUTPUT -m comment --comment \"svcp-ipvs\" -j SVCP-IPVS-SERVICES",
            "-I POSTROUTING -m comment --comment \"svcp-ipvs\" -j SVCP-IPVS-POSTROUTING",
            "-I INPUT -m comment --comment \"svcp-ipvs\" -j SVCP-IPVS-FILTER",
            "-I FORWARD -m comment --comment \"svcp-ipvs\" -j SVCP-IPVS-FILTER",
        ]
    );
    let nat = restores[0].split("COMMIT").next().expect("nat block");
    assert!(
        nat.starts_with("*nat\n") && nat.contains("-I PREROUTING"),
        "{nat}"
    );
    assert_eq!(
        tools.inputs_of("ip6tables-nft-restore")[0]
            .lines()
            .filter(|l| l.starts_with("-I "))
            .count(),
        5
    );
    // The variant probe, then per family one save and one restore; nothing else.
    assert_eq!(
        tools_run(&tools),
        [
            "iptables",
            "iptables-nft-save",
            "iptables-nft-restore",
            "ip6tables-nft-save",
            "ip6tables-nft-restore"
        ]
    );
    assert_eq!(tools.calls()[0].argv, ["iptables", "--version"]);
    assert_eq!(
        tools.calls()[2].argv,
        ["iptables-nft-restore", "-w", "5", "--noflush"]
    );
}

#[test]
fn a_partial_sync_writes_only_changed_entries() {
    let (mut companions, tools, ipset) = companions(&config());
    let (three, two) = (services(3), services(2));
    let mut desired = plan_desired(&three, &config());
    companions.sync(&desired, None).expect("full");
    let calls_after_full = tools.calls().len();

    let touched = desired.update(&proxy_core::diff(&three, &two), &config());
    let written = companions.sync(&desired, Some(&touched)).expect("partial");
    assert_eq!(written, 1);
    assert_eq!(tools.calls().len(), calls_after_full, "no process at all");
    let batches = ipset.batches();
    assert_eq!(batches.len(), 2, "one batch for the partial sync");
    assert_eq!(
        batches[1],
        [IpsetOp::Del(
            "SVCP-IPVS-CLUSTER-IP".to_owned(),
            vec![SetEntry::IpPort {
                addr: ip("198.19.0.3"),
                protocol: Protocol::Tcp,
                port: 80
            }]
        )],
        "the endpoint is still used by two services: its hairpin entry stays"
    );
    // Nothing changed: nothing sent.
    let touched = desired.update(&proxy_core::diff(&two, &two), &config());
    companions.sync(&desired, Some(&touched)).expect("partial");
    assert_eq!(ipset.batches().len(), 2);
}

#[test]
fn an_endpoint_replaced_writes_only_its_own_hairpin_entry() {
    let (mut companions, _tools, ipset) = companions(&config());
    let before = services(2);
    let mut desired = plan_desired(&before, &config());
    companions.sync(&desired, None).expect("full");

    // svc-0 moves to 198.18.1.11; 198.18.1.10 stays in use by svc-1.
    let name = ServicePortName::new("ns", "svc-0", "p");
    let mut port = ServicePort::clone(before.get(&name).expect("svc-0 exists"));
    port.endpoints = vec![Endpoint::new(ip("198.18.1.11"), 8080)];
    let after = before.edit().insert(port).build().expect("valid table");
    let touched = desired.update(&proxy_core::diff(&before, &after), &config());
    let written = companions.sync(&desired, Some(&touched)).expect("partial");
    assert_eq!(
        ipset
            .batches()
            .last()
            .map(|b| b.iter().map(ToString::to_string).collect::<String>()),
        Some("add SVCP-IPVS-LOOP-BACK 198.18.1.11,tcp:8080,198.18.1.11\n".to_owned()),
        "the endpoint still in use is not written again"
    );
    assert_eq!(written, 1);
}

#[test]
fn a_refused_set_write_names_the_set_and_makes_the_next_sync_full() {
    let (mut companions, _tools, ipset) = companions(&config());
    let (three, two) = (services(3), services(2));
    let mut desired = plan_desired(&three, &config());
    companions.sync(&desired, None).expect("full");

    ipset.fail_on("SVCP-IPVS-CLUSTER-IP", crate::ipset::error::ENOENT);
    let touched = desired.update(&proxy_core::diff(&three, &two), &config());
    let err = companions
        .sync(&desired, Some(&touched))
        .expect_err("the kernel refuses");
    assert!(matches!(err, BackendError::Ipset(_)), "{err:?}");
    assert!(err.to_string().contains("SVCP-IPVS-CLUSTER-IP"), "{err}");
    assert!(err.to_string().contains("the set does not exist"), "{err}");

    ipset.heal();
    let touched = desired.update(&proxy_core::diff(&two, &two), &config());
    companions.sync(&desired, Some(&touched)).expect("retry");
    let last = ipset.batches().pop().expect("a batch");
    assert!(
        last.iter().any(|op| matches!(op, IpsetOp::Swap(..))),
        "the sync after a failure rewrites every set: {last:#?}"
    );
    let want = expected_sets(
        &plan_entries(&desired, &config()),
        &Names::new("SVCP-IPVS-"),
    );
    assert_eq!(ipset.sets(), want);
}

#[test]
fn an_endpoint_change_that_keeps_every_set_runs_no_process() {
    let (mut companions, tools, ipset) = companions(&config());
    let before = services(2);
    let mut desired = plan_desired(&before, &config());
    companions.sync(&desired, None).expect("full");
    let calls_after_full = tools.calls().len();

    // A new weight keeps the endpoint in use: the real server changes, no set entry does.
    let name = ServicePortName::new("ns", "svc-0", "p");
    let mut port = ServicePort::clone(before.get(&name).expect("svc-0 exists"));
    port.endpoints[0].weight = 5;
    let after = before.edit().insert(port).build().expect("valid table");
    let touched = desired.update(&proxy_core::diff(&before, &after), &config());
    assert!(
        !touched.endpoints.is_empty() || !touched.keys.is_empty(),
        "the change touches svc-0"
    );
    let written = companions.sync(&desired, Some(&touched)).expect("partial");
    assert_eq!(written, 0);
    assert_eq!(
        tools.calls().len(),
        calls_after_full,
        "no iptables process ran"
    );
    assert_eq!(ipset.batches().len(), 1, "no ipset message was sent");
}

#[test]
fn a_failed_restore_names_the_command_and_shows_the_input_around_the_line() {
    let (mut companions, tools, _ipset) = companions(&config());
    tools.fail("iptables-nft-restore", 2, "iptables-restore: line 6 failed");
    let err = companions
        .sync(&plan_desired(&services(1), &config()), None)
        .expect_err("restore fails");
    let text = err.to_string();
    assert!(
        text.contains("iptables-nft-restore -w 5 --noflush: exit code 2"),
        "{text}"
    );
    assert!(text.contains(">     6 -A SVCP-IPVS-SERVICES"), "{text}");
    assert_eq!(
        companions.restore_failures(),
        1,
        "counted for kube-proxy's restore failures metric"
    );
}

#[test]
fn cleanup_removes_our_jumps_chains_and_sets_and_nothing_else() {
    let (mut companions, tools, ipset) = companions(&config());
    // As iptables-nft-save prints them: a one-word comment unquoted, a foreign jump beside ours.
    tools.set_saved(
        Family::V4,
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:SVCP-IPVS-SERVICES - [0:0]\n\
         -A PREROUTING -m comment --comment svcp-ipvs -j SVCP-IPVS-SERVICES\n\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         COMMIT\n",
    );
    for name in [
        "KUBE-CLUSTER-IP",
        "SVCP-IPVS-CLUSTER-IP",
        "SVCP-IPVS-DROP6",
        "other",
    ] {
        ipset.insert(
            set_spec(name.to_owned(), SetKind::ClusterIp, Family::V4),
            [],
        );
    }
    let removed = companions.cleanup().expect("cleanup");
    assert_eq!(removed, 1 + 1 + 2, "one jump, one chain, two sets");
    assert_eq!(
        ipset.sets().into_keys().collect::<Vec<_>>(),
        ["KUBE-CLUSTER-IP", "other"]
    );
    let restores = tools.inputs_of("iptables-nft-restore");
    assert_eq!(restores.len(), 1, "only the family that has our chains");
    assert_eq!(
        restores[0],
        "*nat\n:SVCP-IPVS-SERVICES - [0:0]\n:SVCP-IPVS-MARK-MASQ - [0:0]\n\
         :SVCP-IPVS-POSTROUTING - [0:0]\n\
         -D PREROUTING -m comment --comment \"svcp-ipvs\" -j SVCP-IPVS-SERVICES\n\
         -X SVCP-IPVS-SERVICES\n-X SVCP-IPVS-MARK-MASQ\n-X SVCP-IPVS-POSTROUTING\nCOMMIT\n\
         *filter\n:SVCP-IPVS-FILTER - [0:0]\n-X SVCP-IPVS-FILTER\nCOMMIT\n"
    );
    assert!(tools.inputs_of("ip6tables-nft-restore").is_empty());
    assert_eq!(
        tools_run(&tools),
        [
            "iptables",
            "iptables-nft-save",
            "iptables-nft-restore",
            "ip6tables-nft-save"
        ],
        "one save per family, one restore where something is ours"
    );
}

#[test]
fn cleanup_without_iptables_still_removes_our_sets() {
    let (mut companions, tools, ipset) = companions(&config());
    tools.set_variant(None);
    ipset.insert(
        set_spec("SVCP-IPVS-REJECT".to_owned(), SetKind::Reject, Family::V4),
        [],
    );
    assert_eq!(companions.cleanup().expect("cleanup"), 1);
    assert!(ipset.sets().is_empty());
    assert_eq!(tools_run(&tools), ["iptables"], "only the probe ran");
}

#[test]
fn jumps_already_in_iptables_save_are_not_inserted_again() {
    let (mut companions, tools, _ipset) = companions(&config());
    tools.set_saved(
        Family::V4,
        "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n\
         -A PREROUTING -m comment --comment svcp-ipvs -j SVCP-IPVS-SERVICES\n\
         -A OUTPUT -m comment --comment \"svcp-ipvs\" -j SVCP-IPVS-SERVICES\nCOMMIT\n\
         *filter\n-A INPUT -m comment --comment svcp-ipvs -j SVCP-IPVS-FILTER\n\
         -A OUTPUT -m comment --comment svcp-ipvs -j SVCP-IPVS-SERVICES\n\
         -A FORWARD -m comment --comment other -j SVCP-IPVS-FILTER\nCOMMIT\n",
    );
    companions
        .sync(&plan_desired(&services(1), &config()), None)
        .expect("sync");
    let restores = tools.inputs_of("iptables-nft-restore");
    let inserted: Vec<&str> = restores[0]
        .lines()
        .filter(|l| l.starts_with("-I "))
        .collect();
    // The filter table's OUTPUT line is no nat OUTPUT jump: tables are told apart; a jump
    // with another comment is not ours.
    assert_eq!(
        inserted,
        [
            "-I POSTROUTING -m comment --comment \"svcp-ipvs\" -j SVCP-IPVS-POSTROUTING",
            "-I FORWARD -m comment --comment \"svcp-ipvs\" -j SVCP-IPVS-FILTER",
        ]
    );
}

fn expected_sets(entries: &Entries, names: &Names) -> BTreeMap<String, BTreeSet<SetEntry>> {
    let mut sets = BTreeMap::new();
    for kind in SetKind::ALL {
        for family in Family::ALL {
            sets.insert(
                names.set(kind, family),
                entries.get(&(kind, family)).cloned().unwrap_or_default(),
            );
        }
    }
    sets
}

mod properties {
    use proptest::prelude::*;
    use proxy_core::testing::strategy::arb_edited_pair;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A full write of one table, then the partial write of an edit, leave the sets as a
        /// full write of the edit would.
        #[test]
        fn partial_set_writes_reach_the_full_contents((before, after) in arb_edited_pair()) {
            let config = config();
            let names = Names::new(&config.prefix);
            let (mut companions, _tools, ipset) = companions(&config);
            let mut desired = plan_desired(&before, &config);
            companions.sync(&desired, None).expect("full");
            let touched = desired.update(&proxy_core::diff(&before, &after), &config);
            companions.sync(&desired, Some(&touched)).expect("partial");
            let sets = ipset.sets();
            let want = expected_sets(&plan_entries(&plan_desired(&after, &config), &config), &names);
            prop_assert_eq!(sets, want);
        }
    }
}

#[test]
fn auto_asks_plain_iptables_its_variant_once() {
    for (variant, want) in [
        (Variant::Legacy, "iptables-legacy-restore"),
        (Variant::Nft, "iptables-nft-restore"),
    ] {
        let (mut companions, tools, _ipset) = companions(&config());
        tools.set_variant(Some(variant));
        let desired = plan_desired(&services(1), &config());
        companions.sync(&desired, None).expect("sync");
        companions.sync(&desired, None).expect("sync");
        let run = tools_run(&tools);
        assert_eq!(
            run.iter().filter(|t| *t == "iptables").count(),
            1,
            "probed once: {run:?}"
        );
        assert_eq!(
            run.iter().filter(|t| *t == want).count(),
            2,
            "{variant}: {run:?}"
        );
    }
}

#[test]
fn a_configured_variant_is_not_probed() {
    let (mut companions, tools, _ipset) = companions(&IpvsConfig {
        iptables: IptablesVariant::Legacy,
        ..config()
    });
    companions
        .sync(&plan_desired(&services(1), &config()), None)
        .expect("sync");
    assert_eq!(
        tools_run(&tools),
        [
            "iptables-legacy-save",
            "iptables-legacy-restore",
            "ip6tables-legacy-save",
            "ip6tables-legacy-restore"
        ]
    );
}

#[test]
fn an_iptables_that_names_no_variant_fails_the_sync_until_it_does() {
    let (mut companions, tools, ipset) = companions(&config());
    tools.set_variant(None);
    let desired = plan_desired(&services(1), &config());
    let err = companions.sync(&desired, None).expect_err("no variant");
    assert!(
        matches!(&err, BackendError::Command { command, .. } if command == "iptables --version"),
        "{err:?}"
    );
    assert!(
        ipset.batches().is_empty(),
        "nothing written before the probe"
    );
    tools.set_variant(Some(Variant::Nft));
    companions.sync(&desired, None).expect("probed again");
    assert_eq!(tools.inputs_of("iptables-nft-restore").len(), 1);
}
