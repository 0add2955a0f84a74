//! What the ipset client works with: [`SetSpec`] (a set to create), [`SetEntry`] (one member,
//! typed by the set type), [`SetListing`] (a set read back). Wire attributes stay inside
//! [`super::client`]; these types convert to and from them.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use proxy_core::table::Protocol;

use super::attr::DataAttr;
use super::constants::{AF_INET, AF_INET6};

/// The set types the companions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetType {
    /// `hash:ip,port`: address, protocol and port.
    HashIpPort,
    /// `hash:ip,port,ip`: address, protocol, port and a second address.
    HashIpPortIp,
    /// `hash:ip,port,net`: address, protocol, port and a network.
    HashIpPortNet,
    /// `hash:net`: networks.
    HashNet,
}

impl SetType {
    /// Every type.
    pub const ALL: [SetType; 4] = [
        SetType::HashIpPort,
        SetType::HashIpPortIp,
        SetType::HashIpPortNet,
        SetType::HashNet,
    ];

    /// The kernel's name of the type (`IPSET_ATTR_TYPENAME`).
    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::HashNet => "hash:net",
        }
    }

    /// The type of a kernel type name, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        SetType::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set's address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `family inet` (`NFPROTO_IPV4`).
    Inet,
    /// `family inet6` (`NFPROTO_IPV6`).
    Inet6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        }
    }

    /// The `ipset` tool's word: `inet`, `inet6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }

    /// The number of `IPSET_ATTR_FAMILY`.
    pub fn number(self) -> u8 {
        match self {
            Family::Inet => AF_INET,
            Family::Inet6 => AF_INET6,
        }
    }

    /// The family of an `IPSET_ATTR_FAMILY` number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            AF_INET => Some(Family::Inet),
            AF_INET6 => Some(Family::Inet6),
            _ => None,
        }
    }
}

/// A set to create.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetSpec {
    /// Its name (at most 31 bytes).
    pub name: String,
    /// Its type.
    pub set_type: SetType,
    /// Its family.
    pub family: Family,
    /// The most entries it may hold (`maxelem`).
    pub max_elements: u32,
    /// The initial number of hash buckets (`hashsize`); the kernel's default (1024) if `None`.
    pub hash_size: Option<u32>,
}

impl fmt::Display for SetSpec {
    /// `ipset create` syntax without the verb: `NAME TYPE family F maxelem N [hashsize H]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} family {}",
            self.name,
            self.set_type,
            self.family.name()
        )?;
        if let Some(h) = self.hash_size {
            write!(f, " hashsize {h}")?;
        }
        write!(f, " maxelem {}", self.max_elements)
    }
}

/// One member of a set, by set type. `Display` writes the `ipset` tool's syntax
/// (`198.18.0.1,tcp:80`), which `ipset save` prints too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetEntry {
    /// A `hash:ip,port` member.
    IpPort {
        /// The address.
        addr: IpAddr,
        /// The protocol of the port.
        protocol: Protocol,
        /// The port.
        port: u16,
    },
    /// A `hash:ip,port,ip` member.
    IpPortIp {
        /// The first address.
        addr: IpAddr,
        /// The protocol of the port.
        protocol: Protocol,
        /// The port.
        port: u16,
        /// The second address.
        addr2: IpAddr,
    },
    /// A `hash:ip,port,net` member.
    IpPortNet {
        /// The address.
        addr: IpAddr,
        /// The protocol of the port.
        protocol: Protocol,
        /// The port.
        port: u16,
        /// The network (host bits zero: the kernel clears them).
        net: IpNet,
    },
    /// A `hash:net` member (host bits zero: the kernel clears them).
    Net(IpNet),
}

/// `IPPROTO_*` of a protocol.
pub fn ip_protocol(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn protocol_of(n: u8) -> Option<Protocol> {
    Protocol::ALL.into_iter().find(|p| ip_protocol(*p) == n)
}

impl SetEntry {
    /// The set type this entry belongs in.
    pub fn set_type(&self) -> SetType {
        match self {
            SetEntry::IpPort { .. } => SetType::HashIpPort,
            SetEntry::IpPortIp { .. } => SetType::HashIpPortIp,
            SetEntry::IpPortNet { .. } => SetType::HashIpPortNet,
            SetEntry::Net(_) => SetType::HashNet,
        }
    }

    /// The family of its (first) address.
    pub fn family(&self) -> Family {
        match self {
            SetEntry::IpPort { addr, .. }
            | SetEntry::IpPortIp { addr, .. }
            | SetEntry::IpPortNet { addr, .. } => Family::of(*addr),
            SetEntry::Net(net) => Family::of(net.addr()),
        }
    }

    /// The attributes of the entry's `IPSET_ATTR_DATA`, in the order the `ipset` tool sends
    /// them (see `tests/captures/ipset/restore_adds`).
    pub fn to_attrs(&self) -> Vec<DataAttr> {
        let prefix = |net: &IpNet| net.prefix_len();
        match self {
            SetEntry::IpPort {
                addr,
                protocol,
                port,
            } => vec![
                DataAttr::Ip(*addr),
                DataAttr::Port(*port),
                DataAttr::Proto(ip_protocol(*protocol)),
            ],
            SetEntry::IpPortIp {
                addr,
                protocol,
                port,
                addr2,
            } => vec![
                DataAttr::Ip(*addr),
                DataAttr::Port(*port),
                DataAttr::Proto(ip_protocol(*protocol)),
                DataAttr::Ip2(*addr2),
            ],
            SetEntry::IpPortNet {
                addr,
                protocol,
                port,
                net,
            } => vec![
                DataAttr::Ip(*addr),
                DataAttr::Port(*port),
                DataAttr::Proto(ip_protocol(*protocol)),
                DataAttr::Ip2(net.addr()),
                DataAttr::Cidr2(prefix(net)),
            ],
            SetEntry::Net(net) => vec![DataAttr::Ip(net.addr()), DataAttr::Cidr(prefix(net))],
        }
    }

    /// The entry of a set of `set_type` from its `IPSET_ATTR_DATA` (other attributes, such as
    /// `IPSET_ATTR_CADT_LINENO`, are ignored).
    ///
    /// # Errors
    /// A missing field, a protocol other than TCP, UDP or SCTP, or a bad prefix length.
    pub fn from_attrs(set_type: SetType, attrs: &[DataAttr]) -> Result<Self, String> {
        let (mut ip, mut ip2, mut cidr, mut cidr2, mut port, mut proto) =
            (None, None, None, None, None, None);
        for attr in attrs {
            match attr {
                DataAttr::Ip(a) => ip = Some(*a),
                DataAttr::Ip2(a) => ip2 = Some(*a),
                DataAttr::Cidr(c) => cidr = Some(*c),
                DataAttr::Cidr2(c) => cidr2 = Some(*c),
                DataAttr::Port(p) => port = Some(*p),
                DataAttr::Proto(p) => proto = Some(*p),
                _ => {}
            }
        }
        let need = |what: &str| format!("{set_type} entry without {what}");
        let addr = ip.ok_or_else(|| need("IPSET_ATTR_IP"))?;
        let net = |addr: IpAddr, cidr: Option<u8>| {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            IpNet::new(addr, cidr.unwrap_or(max))
                .map(|n| n.trunc())
                .map_err(|_| format!("{set_type} entry: prefix length {cidr:?} for {addr}"))
        };
        let port_of = || -> Result<(Protocol, u16), String> {
            let port = port.ok_or_else(|| need("IPSET_ATTR_PORT"))?;
            let proto = proto.ok_or_else(|| need("IPSET_ATTR_PROTO"))?;
            let protocol = protocol_of(proto)
                .ok_or_else(|| format!("{set_type} entry with IP protocol {proto}"))?;
            Ok((protocol, port))
        };
        Ok(match set_type {
            SetType::HashNet => SetEntry::Net(net(addr, cidr)?),
            SetType::HashIpPort => {
                let (protocol, port) = port_of()?;
                SetEntry::IpPort {
                    addr,
                    protocol,
                    port,
                }
            }
            SetType::HashIpPortIp => {
                let (protocol, port) = port_of()?;
                SetEntry::IpPortIp {
                    addr,
                    protocol,
                    port,
                    addr2: ip2.ok_or_else(|| need("IPSET_ATTR_IP2"))?,
                }
            }
            SetType::HashIpPortNet => {
                let (protocol, port) = port_of()?;
                SetEntry::IpPortNet {
                    addr,
                    protocol,
                    port,
                    net: net(ip2.ok_or_else(|| need("IPSET_ATTR_IP2"))?, cidr2)?,
                }
            }
        })
    }
}

impl fmt::Display for SetEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetEntry::IpPort {
                addr,
                protocol,
                port,
            } => write!(f, "{addr},{protocol}:{port}"),
            SetEntry::IpPortIp {
                addr,
                protocol,
                port,
                addr2,
            } => write!(f, "{addr},{protocol}:{port},{addr2}"),
            SetEntry::IpPortNet {
                addr,
                protocol,
                port,
                net,
            } => write!(f, "{addr},{protocol}:{port},{net}"),
            SetEntry::Net(net) => write!(f, "{net}"),
        }
    }
}

/// A set as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetListing {
    /// Its name.
    pub name: String,
    /// Its type, if it is one of ours (entries of other types are not parsed).
    pub set_type: Option<SetType>,
    /// The kernel's type name.
    pub type_name: String,
    /// Its family, if inet or inet6.
    pub family: Option<Family>,
    /// `maxelem`, as the kernel reports it.
    pub max_elements: Option<u32>,
    /// Its members, in the kernel's order.
    pub entries: Vec<SetEntry>,
}
