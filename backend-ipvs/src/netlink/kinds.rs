//! Small kernel values shared by services and destinations: address family, protocol,
//! forwarding method, the `nf_inet_addr` address union and the `ip_vs_flags` pair.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{emit_u32, parse_u32, DecodeError};

use super::constants::*;

/// An address family (`IPVS_SVC_ATTR_AF`, `IPVS_DEST_ATTR_ADDR_FAMILY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressFamily {
    /// `AF_INET`.
    Inet,
    /// `AF_INET6`.
    Inet6,
    /// Any other family number.
    Other(u16),
}

impl From<u16> for AddressFamily {
    fn from(value: u16) -> Self {
        match value {
            AF_INET => AddressFamily::Inet,
            AF_INET6 => AddressFamily::Inet6,
            other => AddressFamily::Other(other),
        }
    }
}

impl From<AddressFamily> for u16 {
    fn from(value: AddressFamily) -> Self {
        match value {
            AddressFamily::Inet => AF_INET,
            AddressFamily::Inet6 => AF_INET6,
            AddressFamily::Other(other) => other,
        }
    }
}

impl AddressFamily {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        }
    }
}

/// A transport protocol number (`IPVS_SVC_ATTR_PROTOCOL`, a u16 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpProtocol {
    /// `IPPROTO_TCP`.
    Tcp,
    /// `IPPROTO_UDP`.
    Udp,
    /// `IPPROTO_SCTP`.
    Sctp,
    /// Any other protocol number.
    Other(u16),
}

impl From<u16> for IpProtocol {
    fn from(value: u16) -> Self {
        match value {
            IPPROTO_TCP => IpProtocol::Tcp,
            IPPROTO_UDP => IpProtocol::Udp,
            IPPROTO_SCTP => IpProtocol::Sctp,
            other => IpProtocol::Other(other),
        }
    }
}

impl From<IpProtocol> for u16 {
    fn from(value: IpProtocol) -> Self {
        match value {
            IpProtocol::Tcp => IPPROTO_TCP,
            IpProtocol::Udp => IPPROTO_UDP,
            IpProtocol::Sctp => IPPROTO_SCTP,
            IpProtocol::Other(other) => other,
        }
    }
}

/// How a destination is reached (`IPVS_DEST_ATTR_FWD_METHOD`, the `IP_VS_CONN_F_FWD_MASK` bits
/// of the connection flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardMethod {
    /// `IP_VS_CONN_F_MASQ`: masquerading/NAT, what kube-proxy uses.
    Masq,
    /// `IP_VS_CONN_F_LOCALNODE`: local node.
    LocalNode,
    /// `IP_VS_CONN_F_TUNNEL`: tunneling.
    Tunnel,
    /// `IP_VS_CONN_F_DROUTE`: direct routing.
    DirectRoute,
    /// `IP_VS_CONN_F_BYPASS`: cache bypass.
    Bypass,
    /// Any other value.
    Other(u32),
}

impl From<u32> for ForwardMethod {
    fn from(value: u32) -> Self {
        match value {
            IP_VS_CONN_F_MASQ => ForwardMethod::Masq,
            IP_VS_CONN_F_LOCALNODE => ForwardMethod::LocalNode,
            IP_VS_CONN_F_TUNNEL => ForwardMethod::Tunnel,
            IP_VS_CONN_F_DROUTE => ForwardMethod::DirectRoute,
            IP_VS_CONN_F_BYPASS => ForwardMethod::Bypass,
            other => ForwardMethod::Other(other),
        }
    }
}

impl From<ForwardMethod> for u32 {
    fn from(value: ForwardMethod) -> Self {
        match value {
            ForwardMethod::Masq => IP_VS_CONN_F_MASQ,
            ForwardMethod::LocalNode => IP_VS_CONN_F_LOCALNODE,
            ForwardMethod::Tunnel => IP_VS_CONN_F_TUNNEL,
            ForwardMethod::DirectRoute => IP_VS_CONN_F_DROUTE,
            ForwardMethod::Bypass => IP_VS_CONN_F_BYPASS,
            ForwardMethod::Other(other) => other,
        }
    }
}

/// The kernel's `union nf_inet_addr`: always 16 bytes on the wire, an IPv4 address in the
/// first four with the rest zero. Which one it is depends on the address family attribute
/// next to it, so the raw bytes are kept and read with [`InetAddr::to_ip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InetAddr(pub [u8; 16]);

impl InetAddr {
    /// Size of `union nf_inet_addr`.
    pub const LEN: usize = 16;

    /// Reads the union as an address of `family`; `None` for a family that is neither
    /// IPv4 nor IPv6.
    pub fn to_ip(&self, family: AddressFamily) -> Option<IpAddr> {
        match family {
            AddressFamily::Inet => Some(IpAddr::V4(Ipv4Addr::new(
                self.0[0], self.0[1], self.0[2], self.0[3],
            ))),
            AddressFamily::Inet6 => Some(IpAddr::V6(Ipv6Addr::from(self.0))),
            AddressFamily::Other(_) => None,
        }
    }

    pub(crate) fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let bytes: [u8; 16] = payload.try_into().map_err(|_| {
            DecodeError::from(format!(
                "nf_inet_addr must be {} bytes, got {}",
                Self::LEN,
                payload.len()
            ))
        })?;
        Ok(InetAddr(bytes))
    }
}

impl From<IpAddr> for InetAddr {
    fn from(addr: IpAddr) -> Self {
        let mut bytes = [0u8; 16];
        match addr {
            IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes = v6.octets(),
        }
        InetAddr(bytes)
    }
}

/// `struct ip_vs_flags` (`IPVS_SVC_ATTR_FLAGS`): the kernel sets the bits of `flags` that are
/// in `mask` and keeps the others (`ip_vs_genl_parse_service` in `net/netfilter/ipvs/ip_vs_ctl.c`).
/// Dumps carry the service's flags with a full mask. Both are host byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ServiceFlags {
    /// `IP_VS_SVC_F_*` bits.
    pub flags: u32,
    /// Which bits of `flags` apply.
    pub mask: u32,
}

/// Byte ranges of `struct ip_vs_flags`.
mod field {
    use std::ops::Range;
    pub(super) const FLAGS: Range<usize> = 0..4;
    pub(super) const MASK: Range<usize> = 4..8;
    pub(super) const LEN: usize = MASK.end;
}

impl ServiceFlags {
    /// Size of `struct ip_vs_flags` on the wire.
    pub const LEN: usize = field::LEN;

    pub(crate) fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        if payload.len() != field::LEN {
            return Err(DecodeError::from(format!(
                "ip_vs_flags must be {} bytes, got {}",
                field::LEN,
                payload.len()
            )));
        }
        Ok(ServiceFlags {
            flags: parse_u32(&payload[field::FLAGS])?,
            mask: parse_u32(&payload[field::MASK])?,
        })
    }

    pub(crate) fn emit(&self, buffer: &mut [u8]) {
        emit_u32(&mut buffer[field::FLAGS], self.flags).expect("4-byte field");
        emit_u32(&mut buffer[field::MASK], self.mask).expect("4-byte field");
    }
}
