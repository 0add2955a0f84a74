//! Chain names. Every chain we create takes one prefix (default [`DEFAULT_PREFIX`], not `KUBE-`, so
//! we can run beside kube-proxy) and is made by one function per kind here; [`Names::is_owned`]
//! recognises all of them, so `cleanup` finds exactly what is ours.
//!
//! Per-object names are kube-proxy's scheme (`pkg/proxy/iptables/proxier.go`,
//! `servicePortPolicyClusterChain` and friends): a kind prefix plus the first 16 characters of the
//! base32 of a sha256 of the object's key, so a restart finds its own chains again. With a prefix of
//! at most [`MAX_PREFIX_LEN`] characters every name stays within iptables' 28-character limit.
//!
//! ```
//! use backend_iptables::names::Names;
//! use proxy_core::{Protocol, ServicePortName};
//!
//! let names = Names::new("SVCP-").unwrap();
//! let svc = names.service_cluster(&ServicePortName::new("default", "web", "http"), Protocol::Tcp);
//! assert!(svc.as_str().starts_with("SVCP-SVC-"));
//! assert_eq!(svc.as_str().len(), 5 + 4 + 16);
//! assert!(names.is_owned(svc.as_str()));
//! assert!(!names.is_owned("KUBE-SVC-ABCDEFGHIJKLMNOP"));
//! ```

use data_encoding::BASE32;
use ipnet::IpNet;
use proxy_core::table::EndpointKey;
use proxy_core::{Protocol, ServicePortName};
use sha2::{Digest, Sha256};

use crate::error::ConfigError;
use crate::rules::{ChainName, Family};

/// The default prefix of every chain we own.
pub const DEFAULT_PREFIX: &str = "SVCP-";
/// The longest prefix: 28 (iptables' limit) - 4 (`SVC-`) - 16 (hash).
pub const MAX_PREFIX_LEN: usize = 8;
/// Length of the hash part of per-object names.
pub const HASH_LEN: usize = 16;

/// Fixed chains, by suffix.
const SERVICES: &str = "SERVICES";
const NODEPORTS: &str = "NODEPORTS";
const MARK_MASQ: &str = "MARK-MASQ";
const POSTROUTING: &str = "POSTROUTING";
const EXTERNAL_SERVICES: &str = "EXT-SERVICES";
const FORWARD: &str = "FORWARD";
const FIREWALL: &str = "FIREWALL";
const CANARY: &str = "CANARY";
const FIXED: [&str; 8] = [
    SERVICES,
    NODEPORTS,
    MARK_MASQ,
    POSTROUTING,
    EXTERNAL_SERVICES,
    FORWARD,
    FIREWALL,
    CANARY,
];

/// Hashed kinds.
const SVC: &str = "SVC-";
const SVL: &str = "SVL-";
const EXT: &str = "EXT-";
const FW: &str = "FW-";
const SEP: &str = "SEP-";
const DT: &str = "DT-";
const HASHED: [&str; 6] = [SVC, SVL, EXT, FW, SEP, DT];

/// Makes every chain name; holds the validated prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Default for Names {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// kube-proxy's `portProtoHash`: base32(sha256(key)), first 16 characters.
fn hash16(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut encoded = BASE32.encode(&digest);
    encoded.truncate(HASH_LEN);
    encoded
}

fn port_key(port: &ServicePortName, protocol: Protocol) -> String {
    format!("{port}{protocol}")
}

impl Names {
    /// Names under `prefix`.
    ///
    /// # Errors
    /// [`ConfigError::Prefix`] if the prefix is empty, longer than [`MAX_PREFIX_LEN`], has a
    /// character other than `A-Z`, `0-9`, `-`, `_`, or is `KUBE-` (kube-proxy's own).
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        let bad = |reason| ConfigError::Prefix {
            prefix: prefix.to_owned(),
            reason,
        };
        if prefix.is_empty() {
            return Err(bad("must not be empty"));
        }
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(bad(
                "longer than 8 characters (chain names are limited to 28)",
            ));
        }
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(bad("only A-Z, 0-9, '-' and '_' are allowed"));
        }
        if prefix.starts_with("KUBE") {
            return Err(bad("KUBE* is kube-proxy's; pick our own prefix"));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn fixed(&self, suffix: &str) -> ChainName {
        ChainName::new(format!("{}{suffix}", self.prefix))
    }

    fn hashed(&self, kind: &str, key: &str) -> ChainName {
        ChainName::new(format!("{}{kind}{}", self.prefix, hash16(key)))
    }

    /// nat: the services dispatch chain, hooked from `PREROUTING` and `OUTPUT` (kube-proxy's
    /// `KUBE-SERVICES`). filter: the reject/drop chain for service IPs without usable endpoints,
    /// hooked from `FORWARD` and `OUTPUT`.
    pub fn services(&self) -> ChainName {
        self.fixed(SERVICES)
    }

    /// nat: node ports, jumped to last from the services chain (`KUBE-NODEPORTS`).
    pub fn node_ports(&self) -> ChainName {
        self.fixed(NODEPORTS)
    }

    /// nat: sets the masquerade mark (`KUBE-MARK-MASQ`).
    pub fn mark_masq(&self) -> ChainName {
        self.fixed(MARK_MASQ)
    }

    /// nat: masquerades marked packets, hooked from `POSTROUTING` (`KUBE-POSTROUTING`).
    pub fn postrouting(&self) -> ChainName {
        self.fixed(POSTROUTING)
    }

    /// filter: reject/drop for external destinations without usable endpoints
    /// (`KUBE-EXTERNAL-SERVICES`), hooked from `INPUT` and `FORWARD`.
    pub fn external_services(&self) -> ChainName {
        self.fixed(EXTERNAL_SERVICES)
    }

    /// filter: accepts forwarded service traffic (`KUBE-FORWARD`).
    pub fn forward(&self) -> ChainName {
        self.fixed(FORWARD)
    }

    /// filter: drops load-balancer traffic from sources outside the allowed ranges
    /// (`KUBE-PROXY-FIREWALL`).
    pub fn firewall(&self) -> ChainName {
        self.fixed(FIREWALL)
    }

    /// nat and filter: an empty chain whose disappearance means someone flushed the table, so the
    /// next sync must be full (kube-proxy's `KUBE-PROXY-CANARY`).
    pub fn canary(&self) -> ChainName {
        self.fixed(CANARY)
    }

    /// nat: a service port's chain over its cluster-policy endpoints (`KUBE-SVC-`).
    pub fn service_cluster(&self, port: &ServicePortName, protocol: Protocol) -> ChainName {
        self.hashed(SVC, &port_key(port, protocol))
    }

    /// nat: a service port's chain over its node-local endpoints (`KUBE-SVL-`).
    pub fn service_local(&self, port: &ServicePortName, protocol: Protocol) -> ChainName {
        self.hashed(SVL, &port_key(port, protocol))
    }

    /// nat: a service port's entry for external destinations: node port, external and LB IPs
    /// (`KUBE-EXT-`).
    pub fn external(&self, port: &ServicePortName, protocol: Protocol) -> ChainName {
        self.hashed(EXT, &port_key(port, protocol))
    }

    /// nat: a service port's load-balancer source-range check (`KUBE-FW-`).
    pub fn firewall_lb(&self, port: &ServicePortName, protocol: Protocol) -> ChainName {
        self.hashed(FW, &port_key(port, protocol))
    }

    /// nat: one endpoint of a service port with client-IP affinity (`KUBE-SEP-`); also the name of
    /// its `-m recent` list. Only affinity needs per-endpoint chains in our layout.
    pub fn endpoint(
        &self,
        port: &ServicePortName,
        protocol: Protocol,
        endpoint: &EndpointKey,
    ) -> ChainName {
        self.hashed(SEP, &format!("{}{endpoint}", port_key(port, protocol)))
    }

    /// nat: one node of the tree dispatch layout, covering destinations in `net`.
    pub fn dispatch_node(&self, family: Family, net: IpNet) -> ChainName {
        self.hashed(DT, &format!("{family} {net}"))
    }

    /// nat: one node of the node-ports tree, covering `protocol` ports `first..=last`.
    pub fn node_port_node(
        &self,
        family: Family,
        protocol: Protocol,
        first: u16,
        last: u16,
    ) -> ChainName {
        self.hashed(DT, &format!("{family} {protocol} {first}:{last}"))
    }

    /// Whether `name` is a chain this prefix owns: one of the fixed names, or a kind prefix plus a
    /// 16-character base32 hash.
    pub fn is_owned(&self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        if FIXED.contains(&rest) {
            return true;
        }
        HASHED.iter().any(|kind| {
            rest.strip_prefix(kind).is_some_and(|hash| {
                hash.len() == HASH_LEN
                    && hash
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_within_28_chars() {
        let names = Names::new("ABCDEFGH").expect("8 chars is fine");
        let port = ServicePortName::new("ns", "svc", "p");
        let ep = EndpointKey {
            addr: "198.18.1.1".parse().expect("ip"),
            port: 80,
        };
        let all = [
            names.service_cluster(&port, Protocol::Tcp),
            names.service_local(&port, Protocol::Tcp),
            names.external(&port, Protocol::Tcp),
            names.firewall_lb(&port, Protocol::Tcp),
            names.endpoint(&port, Protocol::Tcp, &ep),
            names.dispatch_node(Family::V4, "198.19.0.0/20".parse().expect("net")),
            names.services(),
            names.external_services(),
        ];
        for name in &all {
            assert!(name.as_str().len() <= 28, "{name} too long");
            assert!(names.is_owned(name.as_str()), "{name} not owned");
        }
        assert_eq!(
            names.service_cluster(&port, Protocol::Tcp),
            names.service_cluster(&port, Protocol::Tcp)
        );
        assert_ne!(
            names.service_cluster(&port, Protocol::Tcp),
            names.service_cluster(&port, Protocol::Udp)
        );
    }

    #[test]
    fn ownership_is_exact() {
        let names = Names::default();
        assert!(names.is_owned("SVCP-SERVICES"));
        assert!(!names.is_owned("SVCP-SERVICESX"));
        assert!(!names.is_owned("SVCP-SVC-SHORT"));
        assert!(!names.is_owned("KUBE-SERVICES"));
        assert!(!names.is_owned("PREROUTING"));
        assert!(!names.is_owned("SVCP-SVC-abcdefghijklmnop"));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in ["", "TOOLONGPREFIX", "lower-", "KUBE-", "A B"] {
            assert!(Names::new(p).is_err(), "{p:?} accepted");
        }
    }
}
