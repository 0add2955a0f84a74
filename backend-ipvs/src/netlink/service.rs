//! Attributes of a virtual service (inside `IPVS_CMD_ATTR_SERVICE`).

use netlink_packet_core::{
    emit_u16, emit_u16_be, emit_u32, emit_u32_be, parse_string, parse_u16, parse_u16_be, parse_u32,
    parse_u32_be, DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, Parseable,
    NLA_F_NESTED,
};

use super::{
    constants::*,
    kinds::{AddressFamily, InetAddr, IpProtocol, ServiceFlags},
    stats::{parse_nested, StatsAttr},
};

/// One attribute of a virtual service (`IPVS_SVC_ATTR_*`).
///
/// A service is named either by (`Af`, `Protocol`, `Address`, `Port`) or by (`Af`, `Fwmark`).
/// Adding or editing one also needs `SchedName`, `Flags`, `Timeout` and `Netmask`
/// (`ip_vs_genl_parse_service`, `net/netfilter/ipvs/ip_vs_ctl.c`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceAttr {
    /// `IPVS_SVC_ATTR_AF`: address family (u16).
    Af(AddressFamily),
    /// `IPVS_SVC_ATTR_PROTOCOL`: virtual service protocol (u16).
    Protocol(IpProtocol),
    /// `IPVS_SVC_ATTR_ADDR`: virtual service address (16-byte `nf_inet_addr`).
    Address(InetAddr),
    /// `IPVS_SVC_ATTR_PORT`: virtual service port, network byte order.
    Port(u16),
    /// `IPVS_SVC_ATTR_FWMARK`: firewall mark of service.
    Fwmark(u32),
    /// `IPVS_SVC_ATTR_SCHED_NAME`: name of scheduler (NUL-terminated).
    SchedName(String),
    /// `IPVS_SVC_ATTR_FLAGS`: virtual service flags (`struct ip_vs_flags`).
    Flags(ServiceFlags),
    /// `IPVS_SVC_ATTR_TIMEOUT`: persistent timeout, in seconds.
    Timeout(u32),
    /// `IPVS_SVC_ATTR_NETMASK`: persistent netmask, kept as the kernel's `__be32`.
    ///
    /// Trap: for IPv4 it is a mask (`255.255.255.255` is `ff ff ff ff`); for IPv6 the kernel
    /// stores a prefix length in the same field without byte swapping, so `/128` is the
    /// host-order u32 128. [`ServiceAttr::Netmask`] holds the big-endian reading of the four
    /// bytes; `crate::model` turns it into a prefix length by family.
    Netmask(u32),
    /// `IPVS_SVC_ATTR_STATS`: nested attribute for service stats.
    Stats(Vec<StatsAttr>),
    /// `IPVS_SVC_ATTR_PE_NAME`: name of ct retriever (persistence engine).
    PeName(String),
    /// `IPVS_SVC_ATTR_STATS64`: nested attribute for service stats, 64-bit counters.
    Stats64(Vec<StatsAttr>),
    /// Any other attribute, kept as it came.
    Other(DefaultNla),
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        use ServiceAttr::*;
        match self {
            Af(_) | Protocol(_) | Port(_) => 2,
            Address(_) => InetAddr::LEN,
            Fwmark(_) | Timeout(_) | Netmask(_) => 4,
            SchedName(s) | PeName(s) => s.len() + 1,
            Flags(_) => ServiceFlags::LEN,
            Stats(attrs) | Stats64(attrs) => attrs.as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use ServiceAttr::*;
        match self {
            Af(_) => IPVS_SVC_ATTR_AF,
            Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Address(_) => IPVS_SVC_ATTR_ADDR,
            Port(_) => IPVS_SVC_ATTR_PORT,
            Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Flags(_) => IPVS_SVC_ATTR_FLAGS,
            Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Stats(_) => IPVS_SVC_ATTR_STATS | NLA_F_NESTED,
            PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            Stats64(_) => IPVS_SVC_ATTR_STATS64 | NLA_F_NESTED,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use ServiceAttr::*;
        const SIZED: &str = "sized by value_len";
        match self {
            Af(af) => emit_u16(buffer, (*af).into()).expect(SIZED),
            Protocol(p) => emit_u16(buffer, (*p).into()).expect(SIZED),
            Address(addr) => buffer.copy_from_slice(&addr.0),
            // The kernel reads it with nla_get_be16.
            Port(port) => emit_u16_be(buffer, *port).expect(SIZED),
            Fwmark(v) | Timeout(v) => emit_u32(buffer, *v).expect(SIZED),
            Netmask(v) => emit_u32_be(buffer, *v).expect(SIZED),
            SchedName(s) | PeName(s) => {
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            Flags(flags) => flags.emit(buffer),
            Stats(attrs) | Stats64(attrs) => attrs.as_slice().emit(buffer),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ServiceAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use ServiceAttr::*;
        let payload = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => Af(parse_u16(payload)
                .context("invalid IPVS_SVC_ATTR_AF")?
                .into()),
            IPVS_SVC_ATTR_PROTOCOL => Protocol(
                parse_u16(payload)
                    .context("invalid IPVS_SVC_ATTR_PROTOCOL")?
                    .into(),
            ),
            IPVS_SVC_ATTR_ADDR => {
                Address(InetAddr::parse(payload).context("invalid IPVS_SVC_ATTR_ADDR")?)
            }
            IPVS_SVC_ATTR_PORT => {
                Port(parse_u16_be(payload).context("invalid IPVS_SVC_ATTR_PORT")?)
            }
            IPVS_SVC_ATTR_FWMARK => {
                Fwmark(parse_u32(payload).context("invalid IPVS_SVC_ATTR_FWMARK")?)
            }
            IPVS_SVC_ATTR_SCHED_NAME => {
                SchedName(parse_string(payload).context("invalid IPVS_SVC_ATTR_SCHED_NAME")?)
            }
            IPVS_SVC_ATTR_FLAGS => {
                Flags(ServiceFlags::parse(payload).context("invalid IPVS_SVC_ATTR_FLAGS")?)
            }
            IPVS_SVC_ATTR_TIMEOUT => {
                Timeout(parse_u32(payload).context("invalid IPVS_SVC_ATTR_TIMEOUT")?)
            }
            IPVS_SVC_ATTR_NETMASK => {
                Netmask(parse_u32_be(payload).context("invalid IPVS_SVC_ATTR_NETMASK")?)
            }
            IPVS_SVC_ATTR_STATS => Stats(parse_nested(payload, "invalid IPVS_SVC_ATTR_STATS")?),
            IPVS_SVC_ATTR_PE_NAME => {
                PeName(parse_string(payload).context("invalid IPVS_SVC_ATTR_PE_NAME")?)
            }
            IPVS_SVC_ATTR_STATS64 => {
                Stats64(parse_nested(payload, "invalid IPVS_SVC_ATTR_STATS64")?)
            }
            _ => Other(DefaultNla::parse(buf).context("invalid IPVS service attribute")?),
        })
    }
}
