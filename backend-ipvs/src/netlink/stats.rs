//! Service and destination statistics (`IPVS_SVC_ATTR_STATS[64]`, `IPVS_DEST_ATTR_STATS[64]`).
//!
//! Trap: the same `IPVS_STATS_ATTR_*` numbers are u32 inside `*_STATS` (except the byte
//! counters, u64) and u64 inside `*_STATS64`. A [`Counter`] keeps the width it was read with,
//! so emitting a parsed message gives the same bytes back.

use netlink_packet_core::{
    emit_u32, emit_u64, parse_u32, parse_u64, DecodeError, DefaultNla, ErrorContext, Nla,
    NlaBuffer, Parseable,
};

use super::constants::*;

/// A statistics counter with its wire width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// A 32-bit counter.
    U32(u32),
    /// A 64-bit counter.
    U64(u64),
}

impl Counter {
    /// The value, whatever its width.
    pub fn get(self) -> u64 {
        match self {
            Counter::U32(v) => u64::from(v),
            Counter::U64(v) => v,
        }
    }

    fn len(self) -> usize {
        match self {
            Counter::U32(_) => 4,
            Counter::U64(_) => 8,
        }
    }

    fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        match payload.len() {
            4 => Ok(Counter::U32(parse_u32(payload)?)),
            8 => Ok(Counter::U64(parse_u64(payload)?)),
            n => Err(DecodeError::from(format!(
                "a counter is 4 or 8 bytes, got {n}"
            ))),
        }
    }

    fn emit(self, buffer: &mut [u8]) {
        match self {
            Counter::U32(v) => emit_u32(buffer, v).expect("sized by value_len"),
            Counter::U64(v) => emit_u64(buffer, v).expect("sized by value_len"),
        }
    }
}

/// One statistics attribute (`IPVS_STATS_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatsAttr {
    /// `IPVS_STATS_ATTR_CONNS`: connections scheduled.
    Conns(Counter),
    /// `IPVS_STATS_ATTR_INPKTS`: incoming packets.
    InPkts(Counter),
    /// `IPVS_STATS_ATTR_OUTPKTS`: outgoing packets.
    OutPkts(Counter),
    /// `IPVS_STATS_ATTR_INBYTES`: incoming bytes.
    InBytes(Counter),
    /// `IPVS_STATS_ATTR_OUTBYTES`: outgoing bytes.
    OutBytes(Counter),
    /// `IPVS_STATS_ATTR_CPS`: current connection rate.
    Cps(Counter),
    /// `IPVS_STATS_ATTR_INPPS`: current in packet rate.
    InPps(Counter),
    /// `IPVS_STATS_ATTR_OUTPPS`: current out packet rate.
    OutPps(Counter),
    /// `IPVS_STATS_ATTR_INBPS`: current in byte rate.
    InBps(Counter),
    /// `IPVS_STATS_ATTR_OUTBPS`: current out byte rate.
    OutBps(Counter),
    /// Anything else, `IPVS_STATS_ATTR_PAD` included.
    Other(DefaultNla),
}

impl StatsAttr {
    fn counter(&self) -> Option<Counter> {
        use StatsAttr::*;
        match self {
            Conns(c) | InPkts(c) | OutPkts(c) | InBytes(c) | OutBytes(c) | Cps(c) | InPps(c)
            | OutPps(c) | InBps(c) | OutBps(c) => Some(*c),
            Other(_) => None,
        }
    }
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match (self, self.counter()) {
            (_, Some(c)) => c.len(),
            (StatsAttr::Other(nla), None) => nla.value_len(),
            (_, None) => 0,
        }
    }

    fn kind(&self) -> u16 {
        use StatsAttr::*;
        match self {
            Conns(_) => IPVS_STATS_ATTR_CONNS,
            InPkts(_) => IPVS_STATS_ATTR_INPKTS,
            OutPkts(_) => IPVS_STATS_ATTR_OUTPKTS,
            InBytes(_) => IPVS_STATS_ATTR_INBYTES,
            OutBytes(_) => IPVS_STATS_ATTR_OUTBYTES,
            Cps(_) => IPVS_STATS_ATTR_CPS,
            InPps(_) => IPVS_STATS_ATTR_INPPS,
            OutPps(_) => IPVS_STATS_ATTR_OUTPPS,
            InBps(_) => IPVS_STATS_ATTR_INBPS,
            OutBps(_) => IPVS_STATS_ATTR_OUTBPS,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match (self, self.counter()) {
            (_, Some(c)) => c.emit(buffer),
            (StatsAttr::Other(nla), None) => nla.emit_value(buffer),
            (_, None) => {}
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for StatsAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use StatsAttr::*;
        let payload = buf.value();
        let counter = || Counter::parse(payload);
        Ok(match buf.kind() {
            IPVS_STATS_ATTR_CONNS => Conns(counter().context("invalid IPVS_STATS_ATTR_CONNS")?),
            IPVS_STATS_ATTR_INPKTS => InPkts(counter().context("invalid IPVS_STATS_ATTR_INPKTS")?),
            IPVS_STATS_ATTR_OUTPKTS => {
                OutPkts(counter().context("invalid IPVS_STATS_ATTR_OUTPKTS")?)
            }
            IPVS_STATS_ATTR_INBYTES => {
                InBytes(counter().context("invalid IPVS_STATS_ATTR_INBYTES")?)
            }
            IPVS_STATS_ATTR_OUTBYTES => {
                OutBytes(counter().context("invalid IPVS_STATS_ATTR_OUTBYTES")?)
            }
            IPVS_STATS_ATTR_CPS => Cps(counter().context("invalid IPVS_STATS_ATTR_CPS")?),
            IPVS_STATS_ATTR_INPPS => InPps(counter().context("invalid IPVS_STATS_ATTR_INPPS")?),
            IPVS_STATS_ATTR_OUTPPS => OutPps(counter().context("invalid IPVS_STATS_ATTR_OUTPPS")?),
            IPVS_STATS_ATTR_INBPS => InBps(counter().context("invalid IPVS_STATS_ATTR_INBPS")?),
            IPVS_STATS_ATTR_OUTBPS => OutBps(counter().context("invalid IPVS_STATS_ATTR_OUTBPS")?),
            _ => Other(DefaultNla::parse(buf).context("invalid IPVS stats attribute")?),
        })
    }
}

/// Parses the inner attributes of a nested attribute.
pub(crate) fn parse_nested<A>(payload: &[u8], what: &'static str) -> Result<Vec<A>, DecodeError>
where
    A: for<'b> Parseable<NlaBuffer<&'b [u8]>>,
{
    parse_nested_except(payload, &[], what)
}

/// Parses the inner attributes of a nested attribute but those of the kinds in `skip`, which
/// are stepped over unread.
pub(crate) fn parse_nested_except<A>(
    payload: &[u8],
    skip: &[u16],
    what: &'static str,
) -> Result<Vec<A>, DecodeError>
where
    A: for<'b> Parseable<NlaBuffer<&'b [u8]>>,
{
    netlink_packet_core::NlasIterator::new(payload)
        .filter(|nla| !nla.as_ref().is_ok_and(|nla| skip.contains(&nla.kind())))
        .map(|nla| nla.and_then(|nla| A::parse(&nla)))
        .collect::<Result<Vec<_>, _>>()
        .context(what)
}
