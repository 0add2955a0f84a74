//! The attributes inside `IPSET_ATTR_DATA`: an entry's fields (add, del, list) or a set's
//! parameters (create, list). Which numbers mean what depends on the command: from 17 on, the
//! create-only and the entry attributes share numbers (`IPSET_ATTR_NETMASK` and `IPSET_ATTR_IP2`
//! are both 20), so parsing takes [`DataKind`].
//!
//! Traps, as the kernel has them (`net/netfilter/ipset/ip_set_core.c`, `ip_set_hash_gen.h`):
//! - every integer is in network byte order, and the kernel insists that requests flag it
//!   (`NLA_F_NET_BYTEORDER`, checked by `ip_set_attr_netorder()`): we set the flag on every
//!   integer of two bytes or more, as the `ipset` tool does;
//! - addresses are nested (`IPSET_ATTR_IP` holds one `IPSET_ATTR_IPADDR_IPV4`/`_IPV6`), and the
//!   nest must carry `NLA_F_NESTED` (`flag_nested()`); the kernel's dump replies set the nested
//!   flag but not the byte-order flag on the address inside, so parsing ignores both flags;
//! - one-byte values (`IPSET_ATTR_PROTO`, `IPSET_ATTR_CIDR`, `IPSET_ATTR_BUCKETSIZE`) carry no
//!   byte-order flag.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    emit_u16_be, emit_u32_be, parse_u16_be, parse_u32_be, parse_u8, DecodeError, DefaultNla,
    ErrorContext, Nla, NlaBuffer, NlasIterator, Parseable, NLA_F_NESTED, NLA_F_NET_BYTEORDER,
};

use super::constants::*;

/// Which attribute table applies inside `IPSET_ATTR_DATA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// The parameters of a set: create requests, list and header replies.
    Create,
    /// The fields of an entry: add, del, test requests and the entries of a list reply.
    Entry,
}

/// One attribute inside `IPSET_ATTR_DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataAttr {
    /// `IPSET_ATTR_IP`: the (first) address.
    Ip(IpAddr),
    /// `IPSET_ATTR_CIDR`: the prefix length of the first address (`hash:net`).
    Cidr(u8),
    /// `IPSET_ATTR_PORT`: the port.
    Port(u16),
    /// `IPSET_ATTR_TIMEOUT`: seconds.
    Timeout(u32),
    /// `IPSET_ATTR_PROTO`: the IP protocol number of the port.
    Proto(u8),
    /// `IPSET_ATTR_CADT_FLAGS`: `IPSET_FLAG_NOMATCH`... (entries), create flags (sets).
    CadtFlags(u32),
    /// `IPSET_ATTR_CADT_LINENO`: our number for the entry, echoed back by the kernel when it
    /// fails (see `ipset/socket.rs`).
    Lineno(u32),
    /// `IPSET_ATTR_IP2`: the second address (`hash:ip,port,ip`, `hash:ip,port,net`).
    Ip2(IpAddr),
    /// `IPSET_ATTR_CIDR2`: the prefix length of the second address (`hash:ip,port,net`).
    Cidr2(u8),
    /// `IPSET_ATTR_INITVAL`: the hash seed (sets).
    InitVal(u32),
    /// `IPSET_ATTR_HASHSIZE`: the initial number of buckets (sets).
    HashSize(u32),
    /// `IPSET_ATTR_MAXELEM`: the most entries the set may hold (sets).
    MaxElem(u32),
    /// `IPSET_ATTR_BUCKETSIZE`: entries per bucket (sets).
    BucketSize(u8),
    /// `IPSET_ATTR_ELEMENTS`: the number of entries (list replies).
    Elements(u32),
    /// `IPSET_ATTR_REFERENCES`: how many iptables rules use the set (list replies).
    References(u32),
    /// `IPSET_ATTR_MEMSIZE`: bytes of kernel memory (list replies).
    MemSize(u32),
    /// Any other attribute, kept as it came.
    Other(DefaultNla),
}

/// The value length of a nested address: one `IPSET_ATTR_IPADDR_*` attribute.
fn ip_len(ip: &IpAddr) -> usize {
    4 + match ip {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    }
}

fn emit_ip(buffer: &mut [u8], ip: &IpAddr) {
    let (kind, octets): (u16, Vec<u8>) = match ip {
        IpAddr::V4(v4) => (IPSET_ATTR_IPADDR_IPV4, v4.octets().to_vec()),
        IpAddr::V6(v6) => (IPSET_ATTR_IPADDR_IPV6, v6.octets().to_vec()),
    };
    let len = u16::try_from(ip_len(ip)).expect("an address attribute is at most 20 bytes");
    buffer[..2].copy_from_slice(&len.to_ne_bytes());
    buffer[2..4].copy_from_slice(&(kind | NLA_F_NET_BYTEORDER).to_ne_bytes());
    buffer[4..4 + octets.len()].copy_from_slice(&octets);
}

fn parse_ip(payload: &[u8], what: &'static str) -> Result<IpAddr, DecodeError> {
    let inner = NlasIterator::new(payload)
        .next()
        .ok_or_else(|| DecodeError::from(format!("{what}: empty")))?
        .context(what)?;
    let value = inner.value();
    match inner.kind() {
        IPSET_ATTR_IPADDR_IPV4 => <[u8; 4]>::try_from(value)
            .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
            .map_err(|_| {
                DecodeError::from(format!(
                    "{what}: IPSET_ATTR_IPADDR_IPV4 of {} bytes",
                    value.len()
                ))
            }),
        IPSET_ATTR_IPADDR_IPV6 => <[u8; 16]>::try_from(value)
            .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .map_err(|_| {
                DecodeError::from(format!(
                    "{what}: IPSET_ATTR_IPADDR_IPV6 of {} bytes",
                    value.len()
                ))
            }),
        other => Err(DecodeError::from(format!(
            "{what}: address attribute {other}"
        ))),
    }
}

impl Nla for DataAttr {
    fn value_len(&self) -> usize {
        use DataAttr::*;
        match self {
            Ip(ip) | Ip2(ip) => ip_len(ip),
            Cidr(_) | Proto(_) | Cidr2(_) | BucketSize(_) => 1,
            Port(_) => 2,
            Timeout(_) | CadtFlags(_) | Lineno(_) | InitVal(_) | HashSize(_) | MaxElem(_)
            | Elements(_) | References(_) | MemSize(_) => 4,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DataAttr::*;
        match self {
            Ip(_) => IPSET_ATTR_IP | NLA_F_NESTED,
            Ip2(_) => IPSET_ATTR_IP2 | NLA_F_NESTED,
            Cidr(_) => IPSET_ATTR_CIDR,
            Cidr2(_) => IPSET_ATTR_CIDR2,
            Proto(_) => IPSET_ATTR_PROTO,
            BucketSize(_) => IPSET_ATTR_BUCKETSIZE,
            Port(_) => IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER,
            Timeout(_) => IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER,
            CadtFlags(_) => IPSET_ATTR_CADT_FLAGS | NLA_F_NET_BYTEORDER,
            Lineno(_) => IPSET_ATTR_CADT_LINENO | NLA_F_NET_BYTEORDER,
            InitVal(_) => IPSET_ATTR_INITVAL | NLA_F_NET_BYTEORDER,
            HashSize(_) => IPSET_ATTR_HASHSIZE | NLA_F_NET_BYTEORDER,
            MaxElem(_) => IPSET_ATTR_MAXELEM | NLA_F_NET_BYTEORDER,
            Elements(_) => IPSET_ATTR_ELEMENTS | NLA_F_NET_BYTEORDER,
            References(_) => IPSET_ATTR_REFERENCES | NLA_F_NET_BYTEORDER,
            MemSize(_) => IPSET_ATTR_MEMSIZE | NLA_F_NET_BYTEORDER,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use DataAttr::*;
        match self {
            Ip(ip) | Ip2(ip) => emit_ip(buffer, ip),
            Cidr(v) | Proto(v) | Cidr2(v) | BucketSize(v) => buffer[0] = *v,
            Port(v) => emit_u16_be(buffer, *v).expect("sized by value_len"),
            Timeout(v) | CadtFlags(v) | Lineno(v) | InitVal(v) | HashSize(v) | MaxElem(v)
            | Elements(v) | References(v) | MemSize(v) => {
                emit_u32_be(buffer, *v).expect("sized by value_len")
            }
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl DataAttr {
    /// Parses one attribute of `IPSET_ATTR_DATA` under the table `kind` names.
    ///
    /// # Errors
    /// A known attribute whose value has the wrong size.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        buf: &NlaBuffer<&T>,
        kind: DataKind,
    ) -> Result<Self, DecodeError> {
        use DataAttr::*;
        let v = buf.value();
        let u32_be = |what: &'static str| parse_u32_be(v).context(what);
        Ok(match (buf.kind(), kind) {
            (IPSET_ATTR_IP, DataKind::Entry) => Ip(parse_ip(v, "invalid IPSET_ATTR_IP")?),
            (IPSET_ATTR_CIDR, DataKind::Entry) => {
                Cidr(parse_u8(v).context("invalid IPSET_ATTR_CIDR")?)
            }
            (IPSET_ATTR_PORT, DataKind::Entry) => {
                Port(parse_u16_be(v).context("invalid IPSET_ATTR_PORT")?)
            }
            (IPSET_ATTR_TIMEOUT, _) => Timeout(u32_be("invalid IPSET_ATTR_TIMEOUT")?),
            (IPSET_ATTR_PROTO, DataKind::Entry) => {
                Proto(parse_u8(v).context("invalid IPSET_ATTR_PROTO")?)
            }
            (IPSET_ATTR_CADT_FLAGS, _) => CadtFlags(u32_be("invalid IPSET_ATTR_CADT_FLAGS")?),
            (IPSET_ATTR_CADT_LINENO, _) => Lineno(u32_be("invalid IPSET_ATTR_CADT_LINENO")?),
            (IPSET_ATTR_IP2, DataKind::Entry) => Ip2(parse_ip(v, "invalid IPSET_ATTR_IP2")?),
            (IPSET_ATTR_CIDR2, DataKind::Entry) => {
                Cidr2(parse_u8(v).context("invalid IPSET_ATTR_CIDR2")?)
            }
            (IPSET_ATTR_INITVAL, DataKind::Create) => {
                InitVal(u32_be("invalid IPSET_ATTR_INITVAL")?)
            }
            (IPSET_ATTR_HASHSIZE, DataKind::Create) => {
                HashSize(u32_be("invalid IPSET_ATTR_HASHSIZE")?)
            }
            (IPSET_ATTR_MAXELEM, DataKind::Create) => {
                MaxElem(u32_be("invalid IPSET_ATTR_MAXELEM")?)
            }
            (IPSET_ATTR_BUCKETSIZE, DataKind::Create) => {
                BucketSize(parse_u8(v).context("invalid IPSET_ATTR_BUCKETSIZE")?)
            }
            (IPSET_ATTR_ELEMENTS, DataKind::Create) => {
                Elements(u32_be("invalid IPSET_ATTR_ELEMENTS")?)
            }
            (IPSET_ATTR_REFERENCES, DataKind::Create) => {
                References(u32_be("invalid IPSET_ATTR_REFERENCES")?)
            }
            (IPSET_ATTR_MEMSIZE, DataKind::Create) => {
                MemSize(u32_be("invalid IPSET_ATTR_MEMSIZE")?)
            }
            _ => Other(DefaultNla::parse(buf).context("invalid ipset data attribute")?),
        })
    }
}

/// Parses the attributes nested in one `IPSET_ATTR_DATA`.
pub(crate) fn parse_data(payload: &[u8], kind: DataKind) -> Result<Vec<DataAttr>, DecodeError> {
    NlasIterator::new(payload)
        .map(|nla| nla.and_then(|nla| DataAttr::parse(&nla, kind)))
        .collect::<Result<Vec<_>, _>>()
        .context("invalid IPSET_ATTR_DATA")
}
