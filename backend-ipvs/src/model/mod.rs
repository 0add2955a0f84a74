//! The backend's typed picture of IPVS state: [`VirtualServer`]s and their [`RealServer`]s.
//!
//! These are what plans are made of and what observing the kernel gives back. They convert
//! to and from the wire attributes of [`crate::netlink`] (`to_attrs`, `TryFrom<&[..Attr]>`);
//! the wire enums stay behind that line.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use proxy_core::table::{self, Protocol};

use crate::netlink::{AddressFamily, InetAddr, IpProtocol, ServiceAttr};

mod real_server;
mod virtual_server;

pub use real_server::{ConnCounts, ForwardMethod, RealServer};
pub use virtual_server::{SchedFlags, Scheduler, VirtualServer};

/// A kernel object that does not fit the model, or a model value the kernel cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Attributes the kernel must send (or must be sent) were absent.
    #[error("{object} without {}", attrs.join(", "))]
    MissingAttributes {
        /// What lacked them: `"service"`, `"destination"`, `"info"` or `"reply"`.
        object: &'static str,
        /// The missing attributes, by header name.
        attrs: Vec<&'static str>,
    },
    /// An address family other than IPv4 and IPv6.
    #[error("unknown address family {0}")]
    UnknownAddressFamily(u16),
    /// A protocol other than TCP, UDP and SCTP.
    #[error("unknown protocol {0}")]
    UnknownProtocol(u16),
    /// A service named by firewall mark, which we neither create nor model.
    #[error("service named by firewall mark {0:#x}")]
    FirewallMarkService(u32),
    /// A forwarding method outside the header's list.
    #[error("unknown forwarding method {0}")]
    UnknownForwardMethod(u32),
    /// A persistence netmask that is not a prefix.
    #[error("persistence netmask {value:#010x} is not a prefix for {family:?}")]
    InvalidNetmask {
        /// The service's family.
        family: AddressFamily,
        /// The attribute's value.
        value: u32,
    },
    /// A scheduler of the service table that IPVS does not have.
    #[error("scheduler {0} has no IPVS equivalent")]
    UnsupportedScheduler(table::Scheduler),
}

// === ServiceKey ===

/// What names a virtual server: address, protocol, port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The virtual address (its family is the service's).
    pub addr: IpAddr,
    /// The transport protocol.
    pub protocol: Protocol,
    /// The virtual port.
    pub port: u16,
}

impl fmt::Display for ServiceKey {
    /// `ipvsadm -Ln` style: `TCP 198.18.0.10:80`, `UDP [2001:db8::10]:53`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        };
        write!(f, "{proto} {}", SocketAddr::new(self.addr, self.port))
    }
}

impl ServiceKey {
    /// The attributes that name the service (`IPVS_SVC_ATTR_AF`, `_PROTOCOL`, `_ADDR`,
    /// `_PORT`): enough for deleting it and for destination commands.
    pub fn to_attrs(&self) -> Vec<ServiceAttr> {
        vec![
            ServiceAttr::Af(AddressFamily::of(self.addr)),
            ServiceAttr::Protocol(protocol_to_wire(self.protocol)),
            ServiceAttr::Address(InetAddr::from(self.addr)),
            ServiceAttr::Port(self.port),
        ]
    }
}

pub(crate) fn protocol_to_wire(protocol: Protocol) -> IpProtocol {
    match protocol {
        Protocol::Tcp => IpProtocol::Tcp,
        Protocol::Udp => IpProtocol::Udp,
        Protocol::Sctp => IpProtocol::Sctp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address literal")
    }

    #[test]
    fn keys_print_like_ipvsadm() {
        let v4 = ServiceKey {
            addr: ip("198.18.0.10"),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let v6 = ServiceKey {
            addr: ip("2001:db8::10"),
            protocol: Protocol::Udp,
            port: 53,
        };
        assert_eq!(v4.to_string(), "TCP 198.18.0.10:80");
        assert_eq!(v6.to_string(), "UDP [2001:db8::10]:53");
    }
}
