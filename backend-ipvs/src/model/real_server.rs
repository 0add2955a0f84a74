//! [`RealServer`]: a destination of a virtual server.

use std::net::{IpAddr, SocketAddr};

use super::ModelError;
use crate::netlink::{self, AddressFamily, DestAttr, InetAddr};

// === RealServer ===

/// How IPVS forwards to a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ForwardMethod {
    /// NAT: rewrite the destination (`ipvsadm -m`), what kube-proxy uses.
    Masquerade,
    /// Deliver locally.
    LocalNode,
    /// IP-in-IP tunnel (`-i`).
    Tunnel,
    /// Direct routing, MAC rewrite (`-g`).
    DirectRoute,
    /// Cache bypass.
    Bypass,
}

impl From<ForwardMethod> for netlink::ForwardMethod {
    fn from(value: ForwardMethod) -> Self {
        match value {
            ForwardMethod::Masquerade => netlink::ForwardMethod::Masq,
            ForwardMethod::LocalNode => netlink::ForwardMethod::LocalNode,
            ForwardMethod::Tunnel => netlink::ForwardMethod::Tunnel,
            ForwardMethod::DirectRoute => netlink::ForwardMethod::DirectRoute,
            ForwardMethod::Bypass => netlink::ForwardMethod::Bypass,
        }
    }
}

impl TryFrom<netlink::ForwardMethod> for ForwardMethod {
    type Error = ModelError;

    fn try_from(value: netlink::ForwardMethod) -> Result<Self, Self::Error> {
        Ok(match value {
            netlink::ForwardMethod::Masq => ForwardMethod::Masquerade,
            netlink::ForwardMethod::LocalNode => ForwardMethod::LocalNode,
            netlink::ForwardMethod::Tunnel => ForwardMethod::Tunnel,
            netlink::ForwardMethod::DirectRoute => ForwardMethod::DirectRoute,
            netlink::ForwardMethod::Bypass => ForwardMethod::Bypass,
            other => return Err(ModelError::UnknownForwardMethod(other.into())),
        })
    }
}

/// Connection counts of a real server, as a dump reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnCounts {
    /// Established connections (`IPVS_DEST_ATTR_ACTIVE_CONNS`).
    pub active: u32,
    /// Other connections, e.g. TIME_WAIT or UDP (`IPVS_DEST_ATTR_INACT_CONNS`).
    pub inactive: u32,
    /// Persistence templates (`IPVS_DEST_ATTR_PERSIST_CONNS`).
    pub persistent: u32,
}

/// An IPVS real server (destination) of a virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RealServer {
    /// The real server's address.
    pub addr: IpAddr,
    /// The real server's port.
    pub port: u16,
    /// Scheduling weight; 0 takes it out of rotation without dropping its connections.
    pub weight: u32,
    /// Forwarding method.
    pub forward: ForwardMethod,
    /// Stop scheduling above this many connections (0: no limit).
    pub upper_threshold: u32,
    /// Resume scheduling below this many connections (0: no limit).
    pub lower_threshold: u32,
    /// Connection counts: `Some` when read from the kernel, `None` in desired state.
    pub conns: Option<ConnCounts>,
}

impl RealServer {
    /// A masquerading real server with `weight` and no thresholds.
    pub fn new(addr: IpAddr, port: u16, weight: u32) -> Self {
        RealServer {
            addr,
            port,
            weight,
            forward: ForwardMethod::Masquerade,
            upper_threshold: 0,
            lower_threshold: 0,
            conns: None,
        }
    }

    /// Address and port.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// The same server without connection counts: what to compare with desired state.
    pub fn without_conns(&self) -> Self {
        RealServer {
            conns: None,
            ..self.clone()
        }
    }

    /// The attributes that name the destination (`IPVS_DEST_ATTR_ADDR_FAMILY`, `_ADDR`,
    /// `_PORT`): enough to delete it.
    pub fn key_attrs(&self) -> Vec<DestAttr> {
        vec![
            DestAttr::AddrFamily(AddressFamily::of(self.addr)),
            DestAttr::Address(InetAddr::from(self.addr)),
            DestAttr::Port(self.port),
        ]
    }

    /// Every attribute `IPVS_CMD_NEW_DEST`/`SET_DEST` needs, in `ipvsadm`'s order (without
    /// the tunnel attributes, which only tunnels use).
    pub fn to_attrs(&self) -> Vec<DestAttr> {
        let mut attrs = self.key_attrs();
        attrs.extend([
            DestAttr::FwdMethod(self.forward.into()),
            DestAttr::Weight(self.weight),
            DestAttr::UThresh(self.upper_threshold),
            DestAttr::LThresh(self.lower_threshold),
        ]);
        attrs
    }
}

impl TryFrom<&[DestAttr]> for RealServer {
    type Error = ModelError;

    /// Reads a dumped destination. Kernels before 4.3 send no `IPVS_DEST_ATTR_ADDR_FAMILY`;
    /// callers then add the service's family first.
    fn try_from(attrs: &[DestAttr]) -> Result<Self, Self::Error> {
        let (mut af, mut addr, mut port, mut fwd, mut weight) = (None, None, None, None, None);
        let (mut upper, mut lower) = (None, None);
        let (mut active, mut inactive, mut persistent) = (None, None, None);
        for attr in attrs {
            match attr {
                DestAttr::AddrFamily(v) => af = Some(*v),
                DestAttr::Address(v) => addr = Some(*v),
                DestAttr::Port(v) => port = Some(*v),
                DestAttr::FwdMethod(v) => fwd = Some(*v),
                DestAttr::Weight(v) => weight = Some(*v),
                DestAttr::UThresh(v) => upper = Some(*v),
                DestAttr::LThresh(v) => lower = Some(*v),
                DestAttr::ActiveConns(v) => active = Some(*v),
                DestAttr::InactConns(v) => inactive = Some(*v),
                DestAttr::PersistConns(v) => persistent = Some(*v),
                _ => {}
            }
        }
        let (Some(af), Some(addr), Some(port), Some(fwd), Some(weight)) =
            (af, addr, port, fwd, weight)
        else {
            let missing = [
                ("IPVS_DEST_ATTR_ADDR_FAMILY", af.is_none()),
                ("IPVS_DEST_ATTR_ADDR", addr.is_none()),
                ("IPVS_DEST_ATTR_PORT", port.is_none()),
                ("IPVS_DEST_ATTR_FWD_METHOD", fwd.is_none()),
                ("IPVS_DEST_ATTR_WEIGHT", weight.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
            return Err(ModelError::MissingAttributes {
                object: "destination",
                attrs: missing,
            });
        };
        let conns =
            (active.is_some() || inactive.is_some() || persistent.is_some()).then(|| ConnCounts {
                active: active.unwrap_or(0),
                inactive: inactive.unwrap_or(0),
                persistent: persistent.unwrap_or(0),
            });
        Ok(RealServer {
            addr: addr
                .to_ip(af)
                .ok_or(ModelError::UnknownAddressFamily(af.into()))?,
            port,
            weight,
            forward: ForwardMethod::try_from(fwd)?,
            upper_threshold: upper.unwrap_or(0),
            lower_threshold: lower.unwrap_or(0),
            conns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dest_attributes_are_all_named() {
        let err = RealServer::try_from(&[DestAttr::Port(80)][..]).expect_err("incomplete");
        assert_eq!(
            err,
            ModelError::MissingAttributes {
                object: "destination",
                attrs: vec![
                    "IPVS_DEST_ATTR_ADDR_FAMILY",
                    "IPVS_DEST_ATTR_ADDR",
                    "IPVS_DEST_ATTR_FWD_METHOD",
                    "IPVS_DEST_ATTR_WEIGHT",
                ],
            }
        );
    }
}
