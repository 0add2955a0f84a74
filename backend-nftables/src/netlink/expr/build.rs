//! Constructors of [`Expr`], in libnftnl's attribute order (so our bytes equal `nft`'s,
//! `tests/netlink_bytes.rs`).

use super::*;
use crate::netlink::data::{value, Verdict};

impl Expr {
    /// `payload load <len>b @ <base> + <offset> => reg <dreg>`.
    pub fn payload_load(base: PayloadBase, offset: u32, len: u32, dreg: u32) -> Expr {
        Expr::Payload(vec![
            PayloadAttr::Dreg(dreg),
            PayloadAttr::Base(base),
            PayloadAttr::Offset(offset),
            PayloadAttr::Len(len),
        ])
    }

    /// `meta load <key> => reg <dreg>`.
    pub fn meta_load(key: MetaKey, dreg: u32) -> Expr {
        Expr::Meta(vec![MetaAttr::Key(key), MetaAttr::Dreg(dreg)])
    }

    /// `meta set <key> with reg <sreg>`.
    pub fn meta_set(key: MetaKey, sreg: u32) -> Expr {
        Expr::Meta(vec![MetaAttr::Key(key), MetaAttr::Sreg(sreg)])
    }

    /// `cmp <op> reg <sreg> <data>`.
    pub fn cmp(op: CmpOp, sreg: u32, data: impl Into<Vec<u8>>) -> Expr {
        Expr::Cmp(vec![
            CmpAttr::Sreg(sreg),
            CmpAttr::Op(op),
            CmpAttr::Data(value(data)),
        ])
    }

    /// `bitwise reg <dreg> = (reg <sreg> & <mask>) ^ <xor>`, on `mask.len()` bytes.
    /// `with_op`: also send `NFTA_BITWISE_OP` (`NFT_BITWISE_MASK_XOR`, the default), as `nft`
    /// does for `meta mark set` but not for `ct state` matches.
    pub fn bitwise(sreg: u32, dreg: u32, mask: Vec<u8>, xor: Vec<u8>, with_op: bool) -> Expr {
        let len = u32::try_from(mask.len()).unwrap_or(u32::MAX);
        let mut attrs = vec![BitwiseAttr::Sreg(sreg), BitwiseAttr::Dreg(dreg)];
        if with_op {
            attrs.push(BitwiseAttr::Op(NFT_BITWISE_MASK_XOR));
        }
        attrs.extend([
            BitwiseAttr::Len(len),
            BitwiseAttr::Mask(value(mask)),
            BitwiseAttr::Xor(value(xor)),
        ]);
        Expr::Bitwise(attrs)
    }

    /// `lookup reg <sreg> set <set>`: match when present (or absent, `inverted`).
    pub fn lookup(set: &str, sreg: u32, inverted: bool) -> Expr {
        let mut attrs = vec![LookupAttr::Sreg(sreg), LookupAttr::Set(set.to_owned())];
        if inverted {
            attrs.push(LookupAttr::Flags(NFT_LOOKUP_F_INV));
        }
        Expr::Lookup(attrs)
    }

    /// `lookup reg <sreg> set <map> dreg <dreg>`: load the mapped data (a vmap's verdict with
    /// `dreg` [`reg::VERDICT`]).
    pub fn lookup_map(map: &str, sreg: u32, dreg: u32) -> Expr {
        Expr::Lookup(vec![
            LookupAttr::Sreg(sreg),
            LookupAttr::Dreg(dreg),
            LookupAttr::Set(map.to_owned()),
        ])
    }

    /// `immediate reg <dreg> <data>`.
    pub fn immediate(dreg: u32, data: impl Into<Vec<u8>>) -> Expr {
        Expr::Immediate(vec![
            ImmediateAttr::Dreg(dreg),
            ImmediateAttr::Data(value(data)),
        ])
    }

    /// `immediate reg 0 <verdict>`: the rule's verdict.
    pub fn verdict(verdict: Verdict) -> Expr {
        Expr::Immediate(vec![
            ImmediateAttr::Dreg(reg::VERDICT),
            ImmediateAttr::Data(verdict.to_data()),
        ])
    }

    /// `nat <type> <family> addr_min reg <addr> proto_min reg <port> [flags <flags>]`, as
    /// `nft` writes `dnat ip to ...`: the kernel takes the max registers equal to the min
    /// ones and sets `MAP_IPS`/`PROTO_SPECIFIED` itself when the registers are given
    /// (`nft_nat_init`), so `nft` sends flags only for a constant port.
    pub fn nat(
        nat_type: NatType,
        family: u32,
        addr: Option<u32>,
        port: Option<u32>,
        flags: Option<u32>,
    ) -> Expr {
        let mut attrs = vec![NatAttr::Type(nat_type), NatAttr::Family(family)];
        attrs.extend(addr.map(NatAttr::RegAddrMin));
        attrs.extend(port.map(NatAttr::RegProtoMin));
        attrs.extend(flags.map(NatAttr::Flags));
        Expr::Nat(attrs)
    }

    /// `masq flags <flags>`.
    pub fn masq(flags: u32) -> Expr {
        Expr::Masq(vec![MasqAttr::Flags(flags)])
    }

    /// `numgen reg <dreg> = random mod <modulus>` (offset 0).
    pub fn numgen_random(modulus: u32, dreg: u32) -> Expr {
        Expr::Numgen(vec![
            NumgenAttr::Dreg(dreg),
            NumgenAttr::Modulus(modulus),
            NumgenAttr::Type(NFT_NG_RANDOM),
            NumgenAttr::Offset(0),
        ])
    }

    /// `ct load <key> => reg <dreg>`.
    pub fn ct_load(key: CtKey, dreg: u32) -> Expr {
        Expr::Ct(vec![CtAttr::Key(key), CtAttr::Dreg(dreg)])
    }

    /// `counter` starting from zero (no attributes, as `nft` sends it).
    pub fn counter() -> Expr {
        Expr::Counter(Vec::new())
    }

    /// `reject with icmp <code>` (`NFT_REJECT_ICMP_UNREACH`; 3 is port unreachable).
    pub fn reject_icmp(code: u8) -> Expr {
        Expr::Reject(vec![
            RejectAttr::Type(NFT_REJECT_ICMP_UNREACH),
            RejectAttr::IcmpCode(code),
        ])
    }

    /// `reject with icmpx <code>` (`NFT_REJECT_ICMPX_UNREACH`, any family; 1 is port
    /// unreachable).
    pub fn reject_icmpx(code: u8) -> Expr {
        Expr::Reject(vec![
            RejectAttr::Type(NFT_REJECT_ICMPX_UNREACH),
            RejectAttr::IcmpCode(code),
        ])
    }

    /// `reject with tcp reset`.
    pub fn reject_tcp_reset() -> Expr {
        Expr::Reject(vec![
            RejectAttr::Type(NFT_REJECT_TCP_RST),
            RejectAttr::IcmpCode(0),
        ])
    }

    /// `dynset <add|update> reg_key <sreg_key> set <set> [timeout <ms>]` (`update` when
    /// `update`; without a timeout, the set's default applies).
    pub fn dynset(set: &str, update: bool, sreg_key: u32, timeout_ms: Option<u64>) -> Expr {
        let op = if update {
            NFT_DYNSET_OP_UPDATE
        } else {
            NFT_DYNSET_OP_ADD
        };
        let mut attrs = vec![DynsetAttr::SregKey(sreg_key), DynsetAttr::Op(op)];
        attrs.extend(timeout_ms.map(DynsetAttr::Timeout));
        attrs.push(DynsetAttr::SetName(set.to_owned()));
        Expr::Dynset(attrs)
    }

    /// `fib daddr type => reg <dreg>`: the address type of the destination
    /// (`NFT_FIB_RESULT_ADDRTYPE`; `local` is `RTN_LOCAL`, 2).
    pub fn fib_daddr_type(dreg: u32) -> Expr {
        Expr::Fib(vec![
            FibAttr::Flags(NFTA_FIB_F_DADDR),
            FibAttr::Result(NFT_FIB_RESULT_ADDRTYPE),
            FibAttr::Dreg(dreg),
        ])
    }

    /// `range <eq|neq> reg <sreg> <from> <to>`.
    pub fn range(sreg: u32, negated: bool, from: Vec<u8>, to: Vec<u8>) -> Expr {
        Expr::Range(vec![
            RangeAttr::Sreg(sreg),
            RangeAttr::Op(if negated { NFT_RANGE_NEQ } else { NFT_RANGE_EQ }),
            RangeAttr::FromData(value(from)),
            RangeAttr::ToData(value(to)),
        ])
    }
}
