//! [`VirtualServer`] and its [`Scheduler`].

use std::{fmt, net::IpAddr, time::Duration};

use proxy_core::table::{self, Protocol};

use super::{ModelError, ServiceKey};
use crate::netlink::{
    constants::{
        IP_VS_SVC_F_ONEPACKET, IP_VS_SVC_F_PERSISTENT, IP_VS_SVC_F_SCHED1, IP_VS_SVC_F_SCHED2,
        IP_VS_SVC_F_SCHED3,
    },
    AddressFamily, IpProtocol, ServiceAttr, ServiceFlags,
};

// === Scheduler ===

/// An IPVS scheduler, by its kernel module name (`ip_vs_<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scheduler {
    /// `rr`: round robin.
    RoundRobin,
    /// `wrr`: weighted round robin.
    WeightedRoundRobin,
    /// `lc`: least connections.
    LeastConnection,
    /// `wlc`: weighted least connections.
    WeightedLeastConnection,
    /// `sh`: source hashing.
    SourceHash,
    /// `dh`: destination hashing.
    DestinationHash,
    /// `sed`: shortest expected delay.
    ShortestExpectedDelay,
    /// `nq`: never queue.
    NeverQueue,
    /// `mh`: Maglev hashing.
    Maglev,
    /// Any other kernel scheduler (`lblc`, `fo`...), seen in a dump.
    Other(String),
}

impl Scheduler {
    /// The kernel's name, as in `IPVS_SVC_ATTR_SCHED_NAME`.
    pub fn name(&self) -> &str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnection => "lc",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::SourceHash => "sh",
            Scheduler::DestinationHash => "dh",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
            Scheduler::Maglev => "mh",
            Scheduler::Other(name) => name,
        }
    }

    /// The scheduler of a kernel name.
    pub fn from_name(name: &str) -> Self {
        match name {
            "rr" => Scheduler::RoundRobin,
            "wrr" => Scheduler::WeightedRoundRobin,
            "lc" => Scheduler::LeastConnection,
            "wlc" => Scheduler::WeightedLeastConnection,
            "sh" => Scheduler::SourceHash,
            "dh" => Scheduler::DestinationHash,
            "sed" => Scheduler::ShortestExpectedDelay,
            "nq" => Scheduler::NeverQueue,
            "mh" => Scheduler::Maglev,
            other => Scheduler::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<table::Scheduler> for Scheduler {
    type Error = ModelError;

    /// Maps the table's scheduler to the kernel's; `random` has no IPVS scheduler.
    fn try_from(value: table::Scheduler) -> Result<Self, Self::Error> {
        use table::Scheduler as T;
        Ok(match value {
            T::RoundRobin => Scheduler::RoundRobin,
            T::WeightedRoundRobin => Scheduler::WeightedRoundRobin,
            T::LeastConnection => Scheduler::LeastConnection,
            T::WeightedLeastConnection => Scheduler::WeightedLeastConnection,
            T::SourceHash => Scheduler::SourceHash,
            T::DestinationHash => Scheduler::DestinationHash,
            T::ShortestExpectedDelay => Scheduler::ShortestExpectedDelay,
            T::NeverQueue => Scheduler::NeverQueue,
            T::Maglev => Scheduler::Maglev,
            other => return Err(ModelError::UnsupportedScheduler(other)),
        })
    }
}

/// The three scheduler flags (`IP_VS_SVC_F_SCHED1..3`, `ipvsadm -b flag-1,flag-2,flag-3`).
/// `sh` and `mh` read `flag1` as *fallback* (skip unavailable servers) and `flag2` as *port*
/// (hash the source port too); other schedulers ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct SchedFlags {
    /// `IP_VS_SVC_F_SCHED1` (`sh-fallback`, `mh-fallback`).
    pub flag1: bool,
    /// `IP_VS_SVC_F_SCHED2` (`sh-port`, `mh-port`).
    pub flag2: bool,
    /// `IP_VS_SVC_F_SCHED3`.
    pub flag3: bool,
}

// === VirtualServer ===

/// An IPVS virtual server (service) named by address, protocol and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VirtualServer {
    /// The virtual address; its family is the service's.
    pub addr: IpAddr,
    /// The transport protocol.
    pub protocol: Protocol,
    /// The virtual port.
    pub port: u16,
    /// The scheduler.
    pub scheduler: Scheduler,
    /// Scheduler flags.
    pub sched_flags: SchedFlags,
    /// Client persistence (`IP_VS_SVC_F_PERSISTENT`) and its timeout, whole seconds
    /// (kube-proxy's `ClientIP` session affinity).
    pub persistence: Option<Duration>,
    /// One-packet scheduling (`IP_VS_SVC_F_ONEPACKET`, UDP only).
    pub one_packet: bool,
    /// Prefix length that groups clients for persistence (32 or 128 = per client address).
    pub netmask: u8,
}

impl VirtualServer {
    /// A virtual server with `scheduler`, no flags, no persistence, full netmask.
    pub fn new(addr: IpAddr, protocol: Protocol, port: u16, scheduler: Scheduler) -> Self {
        VirtualServer {
            addr,
            protocol,
            port,
            scheduler,
            sched_flags: SchedFlags::default(),
            persistence: None,
            one_packet: false,
            netmask: full_prefix(addr),
        }
    }

    /// The key naming this virtual server.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            addr: self.addr,
            protocol: self.protocol,
            port: self.port,
        }
    }

    /// Every attribute `IPVS_CMD_NEW_SERVICE`/`SET_SERVICE` needs, in `ipvsadm`'s order.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidNetmask`] if `netmask` is longer than the address.
    pub fn to_attrs(&self) -> Result<Vec<ServiceAttr>, ModelError> {
        let mut flags = 0;
        for (set, bit) in [
            (self.persistence.is_some(), IP_VS_SVC_F_PERSISTENT),
            (self.one_packet, IP_VS_SVC_F_ONEPACKET),
            (self.sched_flags.flag1, IP_VS_SVC_F_SCHED1),
            (self.sched_flags.flag2, IP_VS_SVC_F_SCHED2),
            (self.sched_flags.flag3, IP_VS_SVC_F_SCHED3),
        ] {
            if set {
                flags |= bit;
            }
        }
        // The kernel takes whole seconds; a persistent service needs at least one.
        let timeout = self
            .persistence
            .map(|t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX).max(1))
            .unwrap_or(0);
        let mut attrs = self.key().to_attrs();
        attrs.extend([
            ServiceAttr::SchedName(self.scheduler.name().to_owned()),
            ServiceAttr::Flags(ServiceFlags {
                flags,
                mask: u32::MAX,
            }),
            ServiceAttr::Timeout(timeout),
            ServiceAttr::Netmask(netmask_to_wire(self.addr, self.netmask)?),
        ]);
        Ok(attrs)
    }
}

fn full_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Trap: IPv4 sends a mask (`/24` is `ff ff ff 00`), IPv6 sends the prefix length as a
/// host-order u32 in the `__be32` field (see [`ServiceAttr::Netmask`]).
fn netmask_to_wire(addr: IpAddr, prefix: u8) -> Result<u32, ModelError> {
    let family = AddressFamily::of(addr);
    if prefix > full_prefix(addr) {
        return Err(ModelError::InvalidNetmask {
            family,
            value: u32::from(prefix),
        });
    }
    Ok(match addr {
        IpAddr::V4(_) => u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0),
        IpAddr::V6(_) => u32::from_be_bytes(u32::from(prefix).to_ne_bytes()),
    })
}

fn netmask_from_wire(family: AddressFamily, value: u32) -> Result<u8, ModelError> {
    let invalid = ModelError::InvalidNetmask { family, value };
    match family {
        AddressFamily::Inet6 => {
            let prefix = u32::from_ne_bytes(value.to_be_bytes());
            u8::try_from(prefix)
                .ok()
                .filter(|p| *p <= 128)
                .ok_or(invalid)
        }
        _ => {
            let ones = value.leading_ones();
            if value.count_ones() != ones {
                return Err(invalid);
            }
            u8::try_from(ones).map_err(|_| invalid)
        }
    }
}

impl TryFrom<&[ServiceAttr]> for VirtualServer {
    type Error = ModelError;

    fn try_from(attrs: &[ServiceAttr]) -> Result<Self, Self::Error> {
        let (mut af, mut proto, mut addr, mut port, mut sched) = (None, None, None, None, None);
        let (mut flags, mut timeout, mut netmask, mut fwmark) = (None, None, None, None);
        for attr in attrs {
            match attr {
                ServiceAttr::Af(v) => af = Some(*v),
                ServiceAttr::Protocol(v) => proto = Some(*v),
                ServiceAttr::Address(v) => addr = Some(*v),
                ServiceAttr::Port(v) => port = Some(*v),
                ServiceAttr::Fwmark(v) => fwmark = Some(*v),
                ServiceAttr::SchedName(v) => sched = Some(v.as_str()),
                ServiceAttr::Flags(v) => flags = Some(*v),
                ServiceAttr::Timeout(v) => timeout = Some(*v),
                ServiceAttr::Netmask(v) => netmask = Some(*v),
                _ => {}
            }
        }
        if let Some(mark) = fwmark.filter(|m| *m != 0) {
            return Err(ModelError::FirewallMarkService(mark));
        }
        let missing: Vec<&'static str> = [
            ("IPVS_SVC_ATTR_AF", af.is_none()),
            ("IPVS_SVC_ATTR_PROTOCOL", proto.is_none()),
            ("IPVS_SVC_ATTR_ADDR", addr.is_none()),
            ("IPVS_SVC_ATTR_PORT", port.is_none()),
            ("IPVS_SVC_ATTR_SCHED_NAME", sched.is_none()),
            ("IPVS_SVC_ATTR_FLAGS", flags.is_none()),
            ("IPVS_SVC_ATTR_TIMEOUT", timeout.is_none()),
            ("IPVS_SVC_ATTR_NETMASK", netmask.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        let (Some(af), Some(proto), Some(addr), Some(port), Some(sched)) =
            (af, proto, addr, port, sched)
        else {
            return Err(ModelError::MissingAttributes {
                object: "service",
                attrs: missing,
            });
        };
        let (Some(flags), Some(timeout), Some(netmask)) = (flags, timeout, netmask) else {
            return Err(ModelError::MissingAttributes {
                object: "service",
                attrs: missing,
            });
        };
        let addr = addr
            .to_ip(af)
            .ok_or(ModelError::UnknownAddressFamily(af.into()))?;
        let protocol = match proto {
            IpProtocol::Tcp => Protocol::Tcp,
            IpProtocol::Udp => Protocol::Udp,
            IpProtocol::Sctp => Protocol::Sctp,
            other => return Err(ModelError::UnknownProtocol(other.into())),
        };
        // Only the bits that were set count; IP_VS_SVC_F_HASHED is the kernel's own.
        let bits = flags.flags & flags.mask;
        let persistent = bits & IP_VS_SVC_F_PERSISTENT != 0;
        Ok(VirtualServer {
            addr,
            protocol,
            port,
            scheduler: Scheduler::from_name(sched),
            sched_flags: SchedFlags {
                flag1: bits & IP_VS_SVC_F_SCHED1 != 0,
                flag2: bits & IP_VS_SVC_F_SCHED2 != 0,
                flag3: bits & IP_VS_SVC_F_SCHED3 != 0,
            },
            persistence: persistent.then(|| Duration::from_secs(u64::from(timeout))),
            one_packet: bits & IP_VS_SVC_F_ONEPACKET != 0,
            netmask: netmask_from_wire(af, netmask)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::InetAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address literal")
    }

    #[test]
    fn every_table_scheduler_but_random_maps_to_its_kernel_name() {
        for s in table::Scheduler::ALL {
            match Scheduler::try_from(s) {
                Ok(k) => assert_eq!(k.name(), s.as_str(), "{s:?}"),
                Err(e) => {
                    assert_eq!(s, table::Scheduler::Random);
                    assert_eq!(e.to_string(), "scheduler random has no IPVS equivalent");
                }
            }
        }
        assert_eq!(
            Scheduler::from_name("lblc"),
            Scheduler::Other("lblc".into())
        );
        assert_eq!(
            Scheduler::from_name("sed"),
            Scheduler::ShortestExpectedDelay
        );
    }

    #[test]
    fn missing_service_attributes_are_all_named() {
        let attrs = vec![
            ServiceAttr::Af(AddressFamily::Inet),
            ServiceAttr::Address(InetAddr::from(ip("198.18.0.10"))),
            ServiceAttr::SchedName("rr".into()),
        ];
        let err = VirtualServer::try_from(attrs.as_slice()).expect_err("incomplete");
        assert_eq!(
            err.to_string(),
            "service without IPVS_SVC_ATTR_PROTOCOL, IPVS_SVC_ATTR_PORT, IPVS_SVC_ATTR_FLAGS, \
             IPVS_SVC_ATTR_TIMEOUT, IPVS_SVC_ATTR_NETMASK"
        );
    }

    #[test]
    fn firewall_mark_services_are_not_ours() {
        let attrs = vec![
            ServiceAttr::Af(AddressFamily::Inet),
            ServiceAttr::Fwmark(0x4000),
        ];
        assert_eq!(
            VirtualServer::try_from(attrs.as_slice()),
            Err(ModelError::FirewallMarkService(0x4000))
        );
    }

    #[test]
    fn ipv4_netmask_is_a_mask_and_ipv6_a_host_order_prefix() {
        assert_eq!(netmask_to_wire(ip("198.18.0.1"), 24), Ok(0xffff_ff00));
        assert_eq!(netmask_to_wire(ip("198.18.0.1"), 0), Ok(0));
        assert_eq!(
            netmask_to_wire(ip("2001:db8::1"), 64).map(u32::to_be_bytes),
            Ok(64u32.to_ne_bytes())
        );
        assert!(netmask_to_wire(ip("198.18.0.1"), 33).is_err());
        assert_eq!(netmask_from_wire(AddressFamily::Inet, 0xffff_ff00), Ok(24));
        assert_eq!(
            netmask_from_wire(AddressFamily::Inet, 0xff00_ff00),
            Err(ModelError::InvalidNetmask {
                family: AddressFamily::Inet,
                value: 0xff00_ff00
            })
        );
        assert!(netmask_from_wire(
            AddressFamily::Inet6,
            u32::from_be_bytes(129u32.to_ne_bytes())
        )
        .is_err());
    }

    #[test]
    fn persistence_sends_the_flag_and_whole_seconds() {
        let vs = VirtualServer {
            persistence: Some(Duration::from_millis(10_800_900)),
            ..VirtualServer::new(ip("198.18.0.10"), Protocol::Tcp, 80, Scheduler::RoundRobin)
        };
        let attrs = vs.to_attrs().expect("valid");
        assert!(attrs.contains(&ServiceAttr::Timeout(10_800)), "{attrs:?}");
        assert!(attrs.contains(&ServiceAttr::Flags(ServiceFlags {
            flags: IP_VS_SVC_F_PERSISTENT,
            mask: u32::MAX
        })));
        // A sub-second persistence still needs a non-zero kernel timeout.
        let short = VirtualServer {
            persistence: Some(Duration::from_millis(10)),
            ..vs
        };
        assert!(short
            .to_attrs()
            .expect("valid")
            .contains(&ServiceAttr::Timeout(1)));
    }
}
