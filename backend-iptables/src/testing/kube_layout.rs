//! kube-proxy's own layout, for side-by-side measurements: a flat services chain, a `SVC` chain
//! per service port that jumps to a `SEP` chain per endpoint (`-s ep -j MARK-MASQ`, then DNAT),
//! as `pkg/proxy/iptables/proxier.go` writes for cluster IPs. Names use a prefix of their own
//! (`KPL-` by default), never `KUBE-`, so a measurement cannot touch a real kube-proxy.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use proxy_core::{ServicePortName, ServiceTable};

use crate::names::Names;
use crate::rules::{Chain, ChainName, Family, Match, Probability, Rule, Table, TableName, Target};

/// The nat table kube-proxy would write for `table`'s IPv4 cluster IPs (ready endpoints only).
pub fn kube_proxy_nat(table: &ServiceTable, names: &Names) -> Table {
    let mut nat = Table::new(TableName::Nat);
    let mut services = Chain::new(names.services());
    let mut mark = Chain::new(names.mark_masq());
    mark.push(Rule::new(Target::Mark {
        value: 0x4000,
        mask: 0x4000,
    }));
    let mut per_port = Vec::new();
    for port in table.iter() {
        let Some(&vip) = port.cluster_ips.iter().find(|ip| Family::V4.contains(**ip)) else {
            continue;
        };
        let ready: Vec<_> = port.endpoints.iter().filter(|e| e.ready).collect();
        if ready.is_empty() {
            continue;
        }
        let name = &port.name;
        let svc = names.service_cluster(name, port.protocol);
        services.push(
            Rule::new(Target::Jump(svc.clone()))
                .destination(vip)
                .protocol(port.protocol)
                .comment(format!("{name} cluster IP"))
                .dport(port.protocol, port.port),
        );
        let mut svc_chain = Chain::new(svc);
        let n = ready.len();
        for (i, ep) in ready.iter().enumerate() {
            let sep = names.endpoint(name, port.protocol, &ep.key());
            let mut jump =
                Rule::new(Target::Jump(sep.clone())).comment(format!("{name} -> {}", ep.key()));
            if i + 1 < n {
                jump = jump.with(Match::Statistic(Probability::ratio(1, (n - i) as u64)));
            }
            svc_chain.push(jump);
            let mut sep_chain = Chain::new(sep);
            sep_chain.push(
                Rule::new(Target::Jump(names.mark_masq()))
                    .source(ep.addr)
                    .comment(name.to_string()),
            );
            sep_chain.push(
                Rule::new(Target::Dnat(SocketAddr::new(ep.addr, ep.port)))
                    .protocol(port.protocol)
                    .comment(name.to_string()),
            );
            per_port.push(sep_chain);
        }
        per_port.push(svc_chain);
    }
    nat.chains.push(services);
    nat.chains.push(mark);
    nat.chains.extend(per_port);
    nat
}

/// kube-proxy's partial sync (KEP-3453) from `before` to `after`: the top-level chains (services
/// and mark-masq) rewritten in full, plus the service and endpoint chains of every service port
/// in `changed` (as `after` has them), and a `:CHAIN` + `-X` line for every chain of `before`'s
/// layout that `after`'s no longer has. Chains of unchanged service ports are left out, as
/// `--noflush` keeps them.
pub fn kube_proxy_partial_nat<'a>(
    before: &ServiceTable,
    after: &ServiceTable,
    changed: impl IntoIterator<Item = &'a ServicePortName>,
    names: &Names,
) -> Table {
    let old = kube_proxy_nat(before, names);
    let new = kube_proxy_nat(after, names);
    let mut keep: BTreeSet<ChainName> = [names.services(), names.mark_masq()].into();
    for name in changed {
        let Some(port) = after.get(name) else {
            continue;
        };
        keep.insert(names.service_cluster(name, port.protocol));
        for ep in &port.endpoints {
            keep.insert(names.endpoint(name, port.protocol, &ep.key()));
        }
    }
    let mut partial = Table::new(TableName::Nat);
    partial.deleted = old
        .chains
        .iter()
        .filter(|c| new.chain(&c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    partial.chains = new
        .chains
        .into_iter()
        .filter(|c| keep.contains(&c.name))
        .collect();
    partial
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::testing::generate::{large_table, with_endpoint_changed, with_service_added};

    fn names() -> Names {
        Names::new("KPL-").expect("valid prefix")
    }

    #[test]
    fn partial_sync_writes_top_chains_and_the_changed_service_only() {
        let before = large_table(20, 4);
        let after = with_endpoint_changed(&before, 0);
        let changes = proxy_core::diff(&before, &after);
        let partial = kube_proxy_partial_nat(&before, &after, changes.touched(), &names());
        let full = kube_proxy_nat(&after, &names());
        let port = after.iter().next().expect("port 0");
        let svc = names().service_cluster(&port.name, port.protocol);
        let written: Vec<&ChainName> = partial.chains.iter().map(|c| &c.name).collect();
        // services, mark-masq, the SVC chain and its ready endpoints' SEP chains.
        let ready = port.endpoints.iter().filter(|e| e.ready).count();
        assert_eq!(written.len(), 3 + ready, "{written:?}");
        assert!(written.contains(&&names().services()));
        assert!(written.contains(&&svc));
        assert_eq!(
            partial.chain(&names().services()),
            full.chain(&names().services()),
            "the services chain is written in full"
        );
        // The flipped endpoint went from ready to terminating: its SEP chain is deleted.
        let flipped = names().endpoint(&port.name, port.protocol, &port.endpoints[0].key());
        assert_eq!(partial.deleted, vec![flipped]);
        assert!(partial.to_string().len() < full.to_string().len() / 2);
    }

    #[test]
    fn partial_sync_of_an_added_service_writes_its_chains() {
        let before = large_table(10, 3);
        let after = with_service_added(&before);
        let changes = proxy_core::diff(&before, &after);
        let partial = kube_proxy_partial_nat(&before, &after, changes.touched(), &names());
        assert!(partial.deleted.is_empty());
        // services + mark-masq + SVC + 3 SEP.
        assert_eq!(partial.chains.len(), 6);
        let text = partial.to_string();
        assert!(text.contains("198.19.255.254/32"), "{text}");
    }
}
