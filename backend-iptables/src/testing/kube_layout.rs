//! kube-proxy's own layout, for side-by-side measurements: a flat services chain, a `SVC` chain
//! per service port that jumps to a `SEP` chain per endpoint (`-s ep -j MARK-MASQ`, then DNAT),
//! as `pkg/proxy/iptables/proxier.go` writes for cluster IPs. Names use a prefix of their own
//! (`KPL-` by default), never `KUBE-`, so a measurement cannot touch a real kube-proxy.

use std::net::SocketAddr;

use proxy_core::ServiceTable;

use crate::names::Names;
use crate::rules::{Chain, Family, Match, Probability, Rule, Table, TableName, Target};

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
