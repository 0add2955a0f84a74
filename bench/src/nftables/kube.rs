//! kube-proxy's nftables layout for a table, as one `nft -f` script: what its proxier's first
//! full sync writes (k/k `pkg/proxy/nftables/proxier.go` `setupNFTables` and
//! `syncProxyRules`, test fixture `baseRules`; the reference notes'
//! section 2.1-2.3), for cluster IPs with `Cluster` policy and no affinity, the shape
//! [`super::workload::table`] has.
//!
//! - one `ip` table `kube-proxy`, the base chains at kube-proxy's hooks and priorities, the
//!   `services` dispatch through the `service-ips` verdict map, the endpoint checks, the
//!   `cluster-ips` set and `cluster-ips-check`, `mark-for-masquerade` and `masquerading`;
//! - per service port a chain `service-<hash>-ns/svc/proto/port` holding the masquerade rule
//!   for sources outside the pod network and one `numgen random mod k vmap { 0 : goto
//!   endpoint-..., ... }` (an anonymous map bound by a rule: the kernel walks the whole
//!   transaction for each, `__nft_set_trans_bind`, which makes the load quadratic);
//! - per endpoint a chain `endpoint-<hash>-ns/svc/proto/port__ip/port` with the hairpin
//!   masquerade rule and the DNAT.
//!
//! Chain names take kube-proxy's shape: a prefix, 8 base32 characters of a hash of the
//! service port name, then the readable name. kube-proxy hashes with SHA-256; the bench uses
//! FNV-1a (no crypto dependency for a benchmark; the names keep their length).

use std::fmt::Write as _;
use std::net::IpAddr;

use proxy_core::{ServicePort, ServiceTable};

/// The table's name, as kube-proxy names it.
pub const TABLE: &str = "kube-proxy";
/// kube-proxy's masquerade mark (`--iptables-masquerade-bit` 14).
const MASQ_MARK: &str = "0x00004000";

/// What one script holds, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Chains declared.
    pub chains: usize,
    /// Rules added.
    pub rules: usize,
    /// Elements added to named sets and maps.
    pub elements: usize,
}

/// The whole first-sync script for `table`, with what it holds. `cluster_cidr` is the pod
/// network (`--cluster-cidr`): cluster-IP traffic from outside it is masqueraded.
pub fn script(table: &ServiceTable, cluster_cidr: &str) -> (String, Counts) {
    let mut out = String::with_capacity(table.len() * 4_096);
    let mut counts = Counts::default();
    base(&mut out, &mut counts);
    for port in table.iter() {
        service(&mut out, &mut counts, port, cluster_cidr);
    }
    (out, counts)
}

/// A base chain's type, hook and priority.
type Hook = (&'static str, &'static str, i32);

fn base(out: &mut String, counts: &mut Counts) {
    let t = TABLE;
    let _ = writeln!(
        out,
        "add table ip {t} {{ comment \"rules for kube-proxy\" ; }}"
    );
    let chain =
        |out: &mut String, counts: &mut Counts, name: &str, hook: Option<(&str, &str, i32)>| {
            counts.chains += 1;
            match hook {
                Some((kind, hook, priority)) => {
                    let _ = writeln!(
                    out,
                    "add chain ip {t} {name} {{ type {kind} hook {hook} priority {priority} ; }}"
                );
                }
                None => {
                    let _ = writeln!(out, "add chain ip {t} {name}");
                }
            }
        };
    let rule = |out: &mut String, counts: &mut Counts, chain: &str, text: &str| {
        counts.rules += 1;
        let _ = writeln!(out, "add rule ip {t} {chain} {text}");
    };
    chain(out, counts, "mark-for-masquerade", None);
    rule(
        out,
        counts,
        "mark-for-masquerade",
        &format!("mark set mark or {MASQ_MARK}"),
    );
    chain(out, counts, "masquerading", None);
    rule(
        out,
        counts,
        "masquerading",
        &format!("mark and {MASQ_MARK} == 0 return"),
    );
    rule(
        out,
        counts,
        "masquerading",
        &format!("mark set mark xor {MASQ_MARK}"),
    );
    rule(out, counts, "masquerading", "masquerade fully-random");
    let _ = writeln!(
        out,
        "add set ip {t} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    for (name, key, comment) in [
        (
            "service-ips",
            "ipv4_addr . inet_proto . inet_service",
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
        (
            "service-nodeports",
            "inet_proto . inet_service",
            "NodePort traffic",
        ),
        (
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service",
            "vmap to drop or reject packets to services with no endpoints",
        ),
        (
            "no-endpoint-nodeports",
            "inet_proto . inet_service",
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        (
            "firewall-ips",
            "ipv4_addr . inet_proto . inet_service",
            "destinations that are subject to LoadBalancerSourceRanges",
        ),
    ] {
        let _ = writeln!(
            out,
            "add map ip {t} {name} {{ type {key} : verdict ; comment \"{comment}\" ; }}"
        );
    }
    for name in [
        "services",
        "service-endpoints-check",
        "nodeport-endpoints-check",
        "firewall-check",
        "cluster-ips-check",
        "reject-chain",
    ] {
        chain(out, counts, name, None);
    }
    rule(out, counts, "reject-chain", "reject");
    rule(
        out,
        counts,
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    rule(
        out,
        counts,
        "services",
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
    );
    rule(
        out,
        counts,
        "service-endpoints-check",
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    );
    rule(
        out,
        counts,
        "nodeport-endpoints-check",
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports",
    );
    rule(
        out,
        counts,
        "firewall-check",
        "ip daddr . meta l4proto . th dport vmap @firewall-ips",
    );
    rule(
        out,
        counts,
        "cluster-ips-check",
        "ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"",
    );
    rule(
        out,
        counts,
        "cluster-ips-check",
        "ip daddr { 198.19.0.0/16 } drop comment \"Drop traffic to unallocated ClusterIPs\"",
    );
    let hooks: [(&str, Hook, &[&str]); 8] = [
        (
            "filter-prerouting-pre-dnat",
            ("filter", "prerouting", -110),
            &["ct state new jump firewall-check"],
        ),
        (
            "filter-output-pre-dnat",
            ("filter", "output", -110),
            &["ct state new jump firewall-check"],
        ),
        (
            "nat-prerouting",
            ("nat", "prerouting", -100),
            &["jump services"],
        ),
        ("nat-output", ("nat", "output", -100), &["jump services"]),
        (
            "filter-input",
            ("filter", "input", 0),
            &[
                "ct state new jump nodeport-endpoints-check",
                "ct state new jump service-endpoints-check",
            ],
        ),
        (
            "filter-forward",
            ("filter", "forward", 0),
            &[
                "ct state new jump service-endpoints-check",
                "ct state new jump cluster-ips-check",
            ],
        ),
        (
            "filter-output",
            ("filter", "output", 0),
            &[
                "ct state new jump service-endpoints-check",
                "ct state new jump cluster-ips-check",
            ],
        ),
        (
            "nat-postrouting",
            ("nat", "postrouting", 100),
            &["jump masquerading"],
        ),
    ];
    for (name, hook, rules) in hooks {
        chain(out, counts, name, Some(hook));
        for text in rules {
            rule(out, counts, name, text);
        }
    }
}

/// A service port's chains, rules and elements.
fn service(out: &mut String, counts: &mut Counts, port: &ServicePort, cluster_cidr: &str) {
    let t = TABLE;
    let proto = port.protocol.as_str();
    let readable = format!(
        "{}/{}/{proto}/{}",
        port.name.namespace, port.name.name, port.name.port
    );
    let service_chain = format!("service-{}-{readable}", hash8(&readable));
    let endpoint_chains: Vec<String> = port
        .endpoints
        .iter()
        .map(|e| {
            let readable = format!("{readable}__{}/{}", e.addr, e.port);
            format!("endpoint-{}-{readable}", hash8(&readable))
        })
        .collect();
    // Endpoint chains first: the service chain's vmap refers to them.
    for (chain, e) in endpoint_chains.iter().zip(&port.endpoints) {
        counts.chains += 1;
        counts.rules += 2;
        let _ = writeln!(out, "add chain ip {t} {chain}");
        let _ = writeln!(
            out,
            "add rule ip {t} {chain} ip saddr {} jump mark-for-masquerade",
            e.addr
        );
        let _ = writeln!(
            out,
            "add rule ip {t} {chain} meta l4proto {proto} dnat to {}:{}",
            e.addr, e.port
        );
    }
    counts.chains += 1;
    let _ = writeln!(out, "add chain ip {t} {service_chain}");
    for ip in &port.cluster_ips {
        if let IpAddr::V4(ip) = ip {
            counts.rules += 1;
            let _ = writeln!(
                out,
                "add rule ip {t} {service_chain} ip daddr {ip} {proto} dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade",
                port.port
            );
        }
    }
    if !endpoint_chains.is_empty() {
        counts.rules += 1;
        let vmap: Vec<String> = endpoint_chains
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{i} : goto {c}"))
            .collect();
        let _ = writeln!(
            out,
            "add rule ip {t} {service_chain} numgen random mod {} vmap {{ {} }}",
            endpoint_chains.len(),
            vmap.join(" , ")
        );
    }
    for ip in &port.cluster_ips {
        if let IpAddr::V4(ip) = ip {
            counts.elements += 2;
            let _ = writeln!(out, "add element ip {t} cluster-ips {{ {ip} }}");
            let _ = writeln!(
                out,
                "add element ip {t} service-ips {{ {ip} . {proto} . {} : goto {service_chain} }}",
                port.port
            );
        }
    }
}

/// 8 base32 characters of a 64-bit FNV-1a hash of `text` (kube-proxy: of its SHA-256).
fn hash8(text: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (0..8)
        .map(|i| char::from(ALPHABET[((hash >> (i * 5)) & 31) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_port_gets_a_service_chain_and_an_endpoint_chain_per_endpoint() {
        let table = super::super::workload::table(1, 3);
        let (text, counts) = script(&table, "198.18.0.0/16");
        // 8 fixed chains and 8 base chains, then 3 endpoint chains and one service chain.
        assert_eq!(counts.chains, 16 + 4, "{text}");
        assert_eq!(counts.elements, 2);
        let service = text
            .lines()
            .find(|l| l.contains("numgen random mod 3 vmap"))
            .unwrap_or_else(|| panic!("no numgen rule in\n{text}"));
        assert!(
            service.starts_with("add rule ip kube-proxy service-"),
            "{service}"
        );
        assert!(
            service.contains("-ns-0000/svc-000000/tcp/http numgen"),
            "{service}"
        );
        assert!(
            service.contains("0 : goto endpoint-") && service.contains("2 : goto endpoint-"),
            "{service}"
        );
        assert!(text.contains(
            "add element ip kube-proxy service-ips { 198.19.0.1 . tcp . 80 : goto service-"
        ));
        assert!(text.contains("dnat to 198.18.0.1:8080"), "{text}");
        // Every chain a rule or element leads to is declared before it is used.
        let mut declared = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("add chain ip kube-proxy ") {
                declared.insert(rest.split(' ').next().unwrap_or_default().to_owned());
            }
            for target in line.split("goto ").skip(1) {
                let name = target.split([' ', ',', '}']).next().unwrap_or_default();
                assert!(
                    declared.contains(name),
                    "{name} used before declared: {line}"
                );
            }
        }
    }

    #[test]
    fn names_are_stable_and_the_hash_is_eight_base32_characters() {
        assert_eq!(hash8("ns1/svc1/tcp/p80"), hash8("ns1/svc1/tcp/p80"));
        assert_ne!(hash8("ns1/svc1/tcp/p80"), hash8("ns1/svc1/tcp/p81"));
        let h = hash8("x");
        assert_eq!(h.len(), 8);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    }
}
