//! One attribute enum per expression (`enum nft_*_attributes`), each with `Other` for the
//! rest.

use super::kinds::{CmpOp, CtKey, MetaKey, NatType, PayloadBase};
use crate::netlink::attr::nft_attrs;
use crate::netlink::constants::*;
use crate::netlink::data::DataAttr;

nft_attrs! {
    /// `payload` (`enum nft_payload_attributes`): load packet bytes into a register, or
    /// write them from one.
    pub enum PayloadAttr {
        /// `NFTA_PAYLOAD_DREG`: destination register to load data into.
        Dreg(u32) = NFTA_PAYLOAD_DREG,
        /// `NFTA_PAYLOAD_BASE`: payload base.
        Base(PayloadBase) = NFTA_PAYLOAD_BASE,
        /// `NFTA_PAYLOAD_OFFSET`: payload offset relative to base.
        Offset(u32) = NFTA_PAYLOAD_OFFSET,
        /// `NFTA_PAYLOAD_LEN`: payload length.
        Len(u32) = NFTA_PAYLOAD_LEN,
        /// `NFTA_PAYLOAD_SREG`: source register to load data from.
        Sreg(u32) = NFTA_PAYLOAD_SREG,
        /// `NFTA_PAYLOAD_CSUM_TYPE`: checksum type.
        CsumType(u32) = NFTA_PAYLOAD_CSUM_TYPE,
        /// `NFTA_PAYLOAD_CSUM_OFFSET`: checksum offset relative to base.
        CsumOffset(u32) = NFTA_PAYLOAD_CSUM_OFFSET,
        /// `NFTA_PAYLOAD_CSUM_FLAGS`: checksum flags.
        CsumFlags(u32) = NFTA_PAYLOAD_CSUM_FLAGS,
    }
}

nft_attrs! {
    /// `meta` (`enum nft_meta_attributes`): load or set packet metadata.
    pub enum MetaAttr {
        /// `NFTA_META_DREG`: destination register.
        Dreg(u32) = NFTA_META_DREG,
        /// `NFTA_META_KEY`: meta data item to load.
        Key(MetaKey) = NFTA_META_KEY,
        /// `NFTA_META_SREG`: source register (`meta mark set`).
        Sreg(u32) = NFTA_META_SREG,
    }
}

nft_attrs! {
    /// `cmp` (`enum nft_cmp_attributes`): compare a register with data; no match ends the rule.
    pub enum CmpAttr {
        /// `NFTA_CMP_SREG`: source register of data to compare.
        Sreg(u32) = NFTA_CMP_SREG,
        /// `NFTA_CMP_OP`: cmp operation.
        Op(CmpOp) = NFTA_CMP_OP,
        /// `NFTA_CMP_DATA`: data to compare against.
        Data(Vec<DataAttr>) = NFTA_CMP_DATA,
    }
}

nft_attrs! {
    /// `bitwise` (`enum nft_bitwise_attributes`): `dreg = (sreg & mask) ^ xor`.
    pub enum BitwiseAttr {
        /// `NFTA_BITWISE_SREG`: source register.
        Sreg(u32) = NFTA_BITWISE_SREG,
        /// `NFTA_BITWISE_DREG`: destination register.
        Dreg(u32) = NFTA_BITWISE_DREG,
        /// `NFTA_BITWISE_LEN`: length of operands.
        Len(u32) = NFTA_BITWISE_LEN,
        /// `NFTA_BITWISE_MASK`: mask value.
        Mask(Vec<DataAttr>) = NFTA_BITWISE_MASK,
        /// `NFTA_BITWISE_XOR`: xor value.
        Xor(Vec<DataAttr>) = NFTA_BITWISE_XOR,
        /// `NFTA_BITWISE_OP`: type of operation (`NFT_BITWISE_MASK_XOR`, shifts...).
        Op(u32) = NFTA_BITWISE_OP,
        /// `NFTA_BITWISE_DATA`: argument for non-boolean operations.
        Data(Vec<DataAttr>) = NFTA_BITWISE_DATA,
    }
}

nft_attrs! {
    /// `lookup` (`enum nft_lookup_attributes`): look a register up in a set; for a map, load
    /// the data into `dreg` (the verdict register for a vmap).
    pub enum LookupAttr {
        /// `NFTA_LOOKUP_SET`: name of the set where to look for.
        Set(String) = NFTA_LOOKUP_SET,
        /// `NFTA_LOOKUP_SREG`: source register of the data to look for.
        Sreg(u32) = NFTA_LOOKUP_SREG,
        /// `NFTA_LOOKUP_DREG`: destination register.
        Dreg(u32) = NFTA_LOOKUP_DREG,
        /// `NFTA_LOOKUP_SET_ID`: uniquely identifies a set in a transaction.
        SetId(u32) = NFTA_LOOKUP_SET_ID,
        /// `NFTA_LOOKUP_FLAGS`: flags (`NFT_LOOKUP_F_INV`: match when absent).
        Flags(u32) = NFTA_LOOKUP_FLAGS,
    }
}

nft_attrs! {
    /// `immediate` (`enum nft_immediate_attributes`): load data or a verdict into a register.
    pub enum ImmediateAttr {
        /// `NFTA_IMMEDIATE_DREG`: destination register to load data into.
        Dreg(u32) = NFTA_IMMEDIATE_DREG,
        /// `NFTA_IMMEDIATE_DATA`: data to load.
        Data(Vec<DataAttr>) = NFTA_IMMEDIATE_DATA,
    }
}

nft_attrs! {
    /// `nat` (`enum nft_nat_attributes`): SNAT/DNAT to the address and port in registers.
    pub enum NatAttr {
        /// `NFTA_NAT_TYPE`: NAT type.
        Type(NatType) = NFTA_NAT_TYPE,
        /// `NFTA_NAT_FAMILY`: NAT family (`NFPROTO_IPV4`/`NFPROTO_IPV6`).
        Family(u32) = NFTA_NAT_FAMILY,
        /// `NFTA_NAT_REG_ADDR_MIN`: source register of address range start.
        RegAddrMin(u32) = NFTA_NAT_REG_ADDR_MIN,
        /// `NFTA_NAT_REG_ADDR_MAX`: source register of address range end.
        RegAddrMax(u32) = NFTA_NAT_REG_ADDR_MAX,
        /// `NFTA_NAT_REG_PROTO_MIN`: source register of proto range start.
        RegProtoMin(u32) = NFTA_NAT_REG_PROTO_MIN,
        /// `NFTA_NAT_REG_PROTO_MAX`: source register of proto range end.
        RegProtoMax(u32) = NFTA_NAT_REG_PROTO_MAX,
        /// `NFTA_NAT_FLAGS`: NAT flags (see [`super::nat_flags`]).
        Flags(u32) = NFTA_NAT_FLAGS,
    }
}

nft_attrs! {
    /// `masq` (`enum nft_masq_attributes`): masquerade to the outgoing interface's address.
    pub enum MasqAttr {
        /// `NFTA_MASQ_FLAGS`: NAT flags (see [`super::nat_flags`]).
        Flags(u32) = NFTA_MASQ_FLAGS,
        /// `NFTA_MASQ_REG_PROTO_MIN`: source register of proto range start.
        RegProtoMin(u32) = NFTA_MASQ_REG_PROTO_MIN,
        /// `NFTA_MASQ_REG_PROTO_MAX`: source register of proto range end.
        RegProtoMax(u32) = NFTA_MASQ_REG_PROTO_MAX,
    }
}

nft_attrs! {
    /// `numgen` (`enum nft_ng_attributes`): a number in `offset..offset + modulus`.
    pub enum NumgenAttr {
        /// `NFTA_NG_DREG`: destination register.
        Dreg(u32) = NFTA_NG_DREG,
        /// `NFTA_NG_MODULUS`: maximum counter value.
        Modulus(u32) = NFTA_NG_MODULUS,
        /// `NFTA_NG_TYPE`: operation type (`NFT_NG_INCREMENTAL`, `NFT_NG_RANDOM`).
        Type(u32) = NFTA_NG_TYPE,
        /// `NFTA_NG_OFFSET`: offset to be added to the counter.
        Offset(u32) = NFTA_NG_OFFSET,
    }
}

nft_attrs! {
    /// `ct` (`enum nft_ct_attributes`): load or set conntrack data.
    pub enum CtAttr {
        /// `NFTA_CT_DREG`: destination register.
        Dreg(u32) = NFTA_CT_DREG,
        /// `NFTA_CT_KEY`: conntrack data item to load.
        Key(CtKey) = NFTA_CT_KEY,
        /// `NFTA_CT_DIRECTION`: direction in case of directional keys (one byte).
        Direction(u8) = NFTA_CT_DIRECTION,
        /// `NFTA_CT_SREG`: source register.
        Sreg(u32) = NFTA_CT_SREG,
    }
}

nft_attrs! {
    /// `counter` (`enum nft_counter_attributes`), also a chain's `NFTA_CHAIN_COUNTERS`.
    pub enum CounterAttr {
        /// `NFTA_COUNTER_BYTES`: number of bytes.
        Bytes(u64) = NFTA_COUNTER_BYTES,
        /// `NFTA_COUNTER_PACKETS`: number of packets.
        Packets(u64) = NFTA_COUNTER_PACKETS,
    }
}

nft_attrs! {
    /// `reject` (`enum nft_reject_attributes`).
    pub enum RejectAttr {
        /// `NFTA_REJECT_TYPE`: packet type to use (`enum nft_reject_types`).
        Type(u32) = NFTA_REJECT_TYPE,
        /// `NFTA_REJECT_ICMP_CODE`: ICMP code to use (one byte).
        IcmpCode(u8) = NFTA_REJECT_ICMP_CODE,
    }
}

nft_attrs! {
    /// `dynset` (`enum nft_dynset_attributes`): add or update an element of a set from the
    /// packet path (session affinity).
    pub enum DynsetAttr {
        /// `NFTA_DYNSET_SET_NAME`: name of set the to add data to.
        SetName(String) = NFTA_DYNSET_SET_NAME,
        /// `NFTA_DYNSET_SET_ID`: uniquely identifier of the set in the transaction.
        SetId(u32) = NFTA_DYNSET_SET_ID,
        /// `NFTA_DYNSET_OP`: operation (`NFT_DYNSET_OP_ADD`, `_UPDATE`, `_DELETE`).
        Op(u32) = NFTA_DYNSET_OP,
        /// `NFTA_DYNSET_SREG_KEY`: source register of the key.
        SregKey(u32) = NFTA_DYNSET_SREG_KEY,
        /// `NFTA_DYNSET_SREG_DATA`: source register of the data.
        SregData(u32) = NFTA_DYNSET_SREG_DATA,
        /// `NFTA_DYNSET_TIMEOUT`: timeout value for the new element, in milliseconds.
        Timeout(u64) = NFTA_DYNSET_TIMEOUT,
        /// `NFTA_DYNSET_FLAGS`: flags.
        Flags(u32) = NFTA_DYNSET_FLAGS,
    }
}

nft_attrs! {
    /// `fib` (`enum nft_fib_attributes`): a routing lookup.
    pub enum FibAttr {
        /// `NFTA_FIB_DREG`: destination register.
        Dreg(u32) = NFTA_FIB_DREG,
        /// `NFTA_FIB_RESULT`: what to load (`enum nft_fib_result`: `NFT_FIB_RESULT_ADDRTYPE`).
        Result(u32) = NFTA_FIB_RESULT,
        /// `NFTA_FIB_FLAGS`: `enum nft_fib_flags` (`NFTA_FIB_F_DADDR`...).
        Flags(u32) = NFTA_FIB_FLAGS,
    }
}

nft_attrs! {
    /// `range` (`enum nft_range_attributes`): `from <= sreg <= to` (or not).
    pub enum RangeAttr {
        /// `NFTA_RANGE_SREG`: source register of data to compare.
        Sreg(u32) = NFTA_RANGE_SREG,
        /// `NFTA_RANGE_OP`: `NFT_RANGE_EQ` or `NFT_RANGE_NEQ`.
        Op(u32) = NFTA_RANGE_OP,
        /// `NFTA_RANGE_FROM_DATA`: data range from.
        FromData(Vec<DataAttr>) = NFTA_RANGE_FROM_DATA,
        /// `NFTA_RANGE_TO_DATA`: data range to.
        ToData(Vec<DataAttr>) = NFTA_RANGE_TO_DATA,
    }
}
