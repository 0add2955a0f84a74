//! Attributes of a destination, a real server (inside `IPVS_CMD_ATTR_DEST`).

use netlink_packet_core::{
    emit_u16, emit_u16_be, emit_u32, parse_u16, parse_u16_be, parse_u32, parse_u8, DecodeError,
    DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, Parseable, NLA_F_NESTED,
};

use super::{
    constants::*,
    kinds::{AddressFamily, ForwardMethod, InetAddr},
    stats::{parse_nested, StatsAttr},
};

/// One attribute of a destination (`IPVS_DEST_ATTR_*`).
///
/// A destination is named by `Address` and `Port` (plus the service it belongs to, sent
/// beside it as `IPVS_CMD_ATTR_SERVICE`). Adding or editing one also needs `FwdMethod`,
/// `Weight`, `UThresh` and `LThresh` (`ip_vs_genl_parse_dest`, `net/netfilter/ipvs/ip_vs_ctl.c`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestAttr {
    /// `IPVS_DEST_ATTR_ADDR`: real server address (16-byte `nf_inet_addr`).
    Address(InetAddr),
    /// `IPVS_DEST_ATTR_PORT`: real server port, network byte order.
    Port(u16),
    /// `IPVS_DEST_ATTR_FWD_METHOD`: forwarding method (u32).
    FwdMethod(ForwardMethod),
    /// `IPVS_DEST_ATTR_WEIGHT`: destination weight.
    Weight(u32),
    /// `IPVS_DEST_ATTR_U_THRESH`: upper threshold (0: none).
    UThresh(u32),
    /// `IPVS_DEST_ATTR_L_THRESH`: lower threshold (0: none).
    LThresh(u32),
    /// `IPVS_DEST_ATTR_ACTIVE_CONNS`: active connections (dumps only).
    ActiveConns(u32),
    /// `IPVS_DEST_ATTR_INACT_CONNS`: inactive connections (dumps only).
    InactConns(u32),
    /// `IPVS_DEST_ATTR_PERSIST_CONNS`: persistent connections (dumps only).
    PersistConns(u32),
    /// `IPVS_DEST_ATTR_STATS`: nested attribute for dest stats.
    Stats(Vec<StatsAttr>),
    /// `IPVS_DEST_ATTR_ADDR_FAMILY`: address family of the address, when it may differ
    /// from the service's (tunnels).
    AddrFamily(AddressFamily),
    /// `IPVS_DEST_ATTR_STATS64`: nested attribute for dest stats, 64-bit counters.
    Stats64(Vec<StatsAttr>),
    /// `IPVS_DEST_ATTR_TUN_TYPE`: tunnel type (u8).
    TunType(u8),
    /// `IPVS_DEST_ATTR_TUN_PORT`: tunnel port, network byte order.
    TunPort(u16),
    /// `IPVS_DEST_ATTR_TUN_FLAGS`: tunnel flags (u16).
    TunFlags(u16),
    /// Any other attribute, kept as it came.
    Other(DefaultNla),
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        use DestAttr::*;
        match self {
            Address(_) => InetAddr::LEN,
            Port(_) | AddrFamily(_) | TunPort(_) | TunFlags(_) => 2,
            TunType(_) => 1,
            FwdMethod(_) | Weight(_) | UThresh(_) | LThresh(_) | ActiveConns(_) | InactConns(_)
            | PersistConns(_) => 4,
            Stats(attrs) | Stats64(attrs) => attrs.as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DestAttr::*;
        match self {
            Address(_) => IPVS_DEST_ATTR_ADDR,
            Port(_) => IPVS_DEST_ATTR_PORT,
            FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            UThresh(_) => IPVS_DEST_ATTR_U_THRESH,
            LThresh(_) => IPVS_DEST_ATTR_L_THRESH,
            ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            InactConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            PersistConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            Stats(_) => IPVS_DEST_ATTR_STATS | NLA_F_NESTED,
            AddrFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Stats64(_) => IPVS_DEST_ATTR_STATS64 | NLA_F_NESTED,
            TunType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            TunPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            TunFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use DestAttr::*;
        const SIZED: &str = "sized by value_len";
        match self {
            Address(addr) => buffer.copy_from_slice(&addr.0),
            // Both ports are read with nla_get_be16 by the kernel.
            Port(port) | TunPort(port) => emit_u16_be(buffer, *port).expect(SIZED),
            FwdMethod(m) => emit_u32(buffer, (*m).into()).expect(SIZED),
            Weight(v) | UThresh(v) | LThresh(v) | ActiveConns(v) | InactConns(v)
            | PersistConns(v) => emit_u32(buffer, *v).expect(SIZED),
            Stats(attrs) | Stats64(attrs) => attrs.as_slice().emit(buffer),
            AddrFamily(af) => emit_u16(buffer, (*af).into()).expect(SIZED),
            TunType(v) => buffer[0] = *v,
            TunFlags(v) => emit_u16(buffer, *v).expect(SIZED),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use DestAttr::*;
        let payload = buf.value();
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => {
                Address(InetAddr::parse(payload).context("invalid IPVS_DEST_ATTR_ADDR")?)
            }
            IPVS_DEST_ATTR_PORT => {
                Port(parse_u16_be(payload).context("invalid IPVS_DEST_ATTR_PORT")?)
            }
            IPVS_DEST_ATTR_FWD_METHOD => FwdMethod(
                parse_u32(payload)
                    .context("invalid IPVS_DEST_ATTR_FWD_METHOD")?
                    .into(),
            ),
            IPVS_DEST_ATTR_WEIGHT => {
                Weight(parse_u32(payload).context("invalid IPVS_DEST_ATTR_WEIGHT")?)
            }
            IPVS_DEST_ATTR_U_THRESH => {
                UThresh(parse_u32(payload).context("invalid IPVS_DEST_ATTR_U_THRESH")?)
            }
            IPVS_DEST_ATTR_L_THRESH => {
                LThresh(parse_u32(payload).context("invalid IPVS_DEST_ATTR_L_THRESH")?)
            }
            IPVS_DEST_ATTR_ACTIVE_CONNS => {
                ActiveConns(parse_u32(payload).context("invalid IPVS_DEST_ATTR_ACTIVE_CONNS")?)
            }
            IPVS_DEST_ATTR_INACT_CONNS => {
                InactConns(parse_u32(payload).context("invalid IPVS_DEST_ATTR_INACT_CONNS")?)
            }
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                PersistConns(parse_u32(payload).context("invalid IPVS_DEST_ATTR_PERSIST_CONNS")?)
            }
            IPVS_DEST_ATTR_STATS => Stats(parse_nested(payload, "invalid IPVS_DEST_ATTR_STATS")?),
            IPVS_DEST_ATTR_ADDR_FAMILY => AddrFamily(
                parse_u16(payload)
                    .context("invalid IPVS_DEST_ATTR_ADDR_FAMILY")?
                    .into(),
            ),
            IPVS_DEST_ATTR_STATS64 => {
                Stats64(parse_nested(payload, "invalid IPVS_DEST_ATTR_STATS64")?)
            }
            IPVS_DEST_ATTR_TUN_TYPE => {
                TunType(parse_u8(payload).context("invalid IPVS_DEST_ATTR_TUN_TYPE")?)
            }
            IPVS_DEST_ATTR_TUN_PORT => {
                TunPort(parse_u16_be(payload).context("invalid IPVS_DEST_ATTR_TUN_PORT")?)
            }
            IPVS_DEST_ATTR_TUN_FLAGS => {
                TunFlags(parse_u16(payload).context("invalid IPVS_DEST_ATTR_TUN_FLAGS")?)
            }
            _ => Other(DefaultNla::parse(buf).context("invalid IPVS destination attribute")?),
        })
    }
}
