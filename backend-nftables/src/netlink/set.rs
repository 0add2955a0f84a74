//! Attributes of a set or map (`NFT_MSG_NEWSET`, `GETSET`, `DELSET`), its description
//! (size, concatenated fields), its flags, and `nft`'s key and data type numbers.

use std::ops::BitOr;

use netlink_packet_core::DecodeError;

use super::attr::{nft_attrs, ListElem, NlaValue};
use super::constants::*;

nft_attrs! {
    /// One attribute of a set (`enum nft_set_attributes`). A map is a set with
    /// [`SetFlags::MAP`] and a data type; a verdict map has data type
    /// [`datatype::VERDICT_DATA`].
    pub enum SetAttr {
        /// `NFTA_SET_TABLE`: table name.
        Table(String) = NFTA_SET_TABLE,
        /// `NFTA_SET_NAME`: set name.
        Name(String) = NFTA_SET_NAME,
        /// `NFTA_SET_FLAGS`: bitmask of `enum nft_set_flags`.
        Flags(SetFlags) = NFTA_SET_FLAGS,
        /// `NFTA_SET_KEY_TYPE`: key data type, informational purpose only (`nft`'s type
        /// number, see [`datatype`]; concatenations via [`datatype::concat`]).
        KeyType(u32) = NFTA_SET_KEY_TYPE,
        /// `NFTA_SET_KEY_LEN`: key data length, in bytes (each concatenated field rounded up to
        /// 4).
        KeyLen(u32) = NFTA_SET_KEY_LEN,
        /// `NFTA_SET_DATA_TYPE`: mapping data type ([`datatype::VERDICT_DATA`] for vmaps).
        DataType(u32) = NFTA_SET_DATA_TYPE,
        /// `NFTA_SET_DATA_LEN`: mapping data length (16, `NFT_REG_SIZE`, for verdicts).
        DataLen(u32) = NFTA_SET_DATA_LEN,
        /// `NFTA_SET_POLICY`: selection policy (`NFT_SET_POL_PERFORMANCE`/`MEMORY`).
        Policy(u32) = NFTA_SET_POLICY,
        /// `NFTA_SET_DESC`: set description.
        Desc(Vec<SetDescAttr>) = NFTA_SET_DESC,
        /// `NFTA_SET_ID`: uniquely identifies a set in a transaction. `NFT_MSG_NEWSET`
        /// without it is refused with `EINVAL` (`nf_tables_newset`); not dumped.
        Id(u32) = NFTA_SET_ID,
        /// `NFTA_SET_TIMEOUT`: default timeout value, in milliseconds.
        Timeout(u64) = NFTA_SET_TIMEOUT,
        /// `NFTA_SET_GC_INTERVAL`: garbage collection interval, in milliseconds.
        GcInterval(u32) = NFTA_SET_GC_INTERVAL,
        /// `NFTA_SET_USERDATA`: user data (`nft` keeps key byte order, `typeof` expressions and
        /// comments there, as TLVs).
        Userdata(Vec<u8>) = NFTA_SET_USERDATA,
        /// `NFTA_SET_OBJ_TYPE`: stateful object type.
        ObjType(u32) = NFTA_SET_OBJ_TYPE,
        /// `NFTA_SET_HANDLE`: set handle.
        Handle(u64) = NFTA_SET_HANDLE,
    }
}

nft_attrs! {
    /// One attribute of a set description (`enum nft_set_desc_attributes`).
    pub enum SetDescAttr {
        /// `NFTA_SET_DESC_SIZE`: number of elements in set.
        Size(u32) = NFTA_SET_DESC_SIZE,
        /// `NFTA_SET_DESC_CONCAT`: description of field concatenation, one list element per
        /// field.
        Concat(Vec<ListElem<SetFieldAttr>>) = NFTA_SET_DESC_CONCAT,
    }
}

nft_attrs! {
    /// One attribute of a concatenated field (`enum nft_set_field_attributes`).
    pub enum SetFieldAttr {
        /// `NFTA_SET_FIELD_LEN`: length of single field, in bytes (the header says bits; the
        /// kernel and `nft` use bytes: `nft_set_desc_concat_parse`).
        Len(u32) = NFTA_SET_FIELD_LEN,
    }
}

/// `NFTA_SET_DESC_CONCAT` for fields of `lens` bytes each.
pub fn concat_fields(lens: &[u32]) -> SetDescAttr {
    SetDescAttr::Concat(
        lens.iter()
            .map(|&len| ListElem(vec![SetFieldAttr::Len(len)]))
            .collect(),
    )
}

/// Set flags (`enum nft_set_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SetFlags(pub u32);

impl SetFlags {
    /// `NFT_SET_ANONYMOUS`: name allocation, automatic cleanup on unlink.
    pub const ANONYMOUS: SetFlags = SetFlags(NFT_SET_ANONYMOUS);
    /// `NFT_SET_CONSTANT`: set contents may not change while bound.
    pub const CONSTANT: SetFlags = SetFlags(NFT_SET_CONSTANT);
    /// `NFT_SET_INTERVAL`: set contains intervals.
    pub const INTERVAL: SetFlags = SetFlags(NFT_SET_INTERVAL);
    /// `NFT_SET_MAP`: set is used as a dictionary.
    pub const MAP: SetFlags = SetFlags(NFT_SET_MAP);
    /// `NFT_SET_TIMEOUT`: set uses timeouts.
    pub const TIMEOUT: SetFlags = SetFlags(NFT_SET_TIMEOUT);
    /// `NFT_SET_EVAL`: set can be updated from the evaluation path (`nft`'s `dynamic`).
    pub const EVAL: SetFlags = SetFlags(NFT_SET_EVAL);
    /// `NFT_SET_CONCAT`: set contains a concatenation.
    pub const CONCAT: SetFlags = SetFlags(NFT_SET_CONCAT);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: SetFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for SetFlags {
    type Output = SetFlags;
    fn bitor(self, rhs: SetFlags) -> SetFlags {
        SetFlags(self.0 | rhs.0)
    }
}

impl NlaValue for SetFlags {
    fn value_len(&self) -> usize {
        4
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        self.0.emit_value(buffer);
    }
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
        u32::parse_value(payload).map(SetFlags)
    }
}

/// `nft`'s data type numbers (`enum datatypes` in nftables' `include/datatype.h`), which the
/// kernel keeps for `nft list` only (`NFTA_SET_KEY_TYPE`, `NFTA_SET_DATA_TYPE`).
pub mod datatype {
    /// `TYPE_VERDICT`.
    pub const VERDICT: u32 = 1;
    /// `TYPE_INTEGER`.
    pub const INTEGER: u32 = 4;
    /// `TYPE_IPADDR`: `ipv4_addr`.
    pub const IPV4_ADDR: u32 = 7;
    /// `TYPE_IP6ADDR`: `ipv6_addr`.
    pub const IPV6_ADDR: u32 = 8;
    /// `TYPE_INET_PROTOCOL`: `inet_proto`.
    pub const INET_PROTO: u32 = 12;
    /// `TYPE_INET_SERVICE`: `inet_service`.
    pub const INET_SERVICE: u32 = 13;
    /// `TYPE_MARK`: `mark`.
    pub const MARK: u32 = 19;
    /// `NFT_DATA_VERDICT`: the data type of a verdict map (a kernel value, not `nft`'s).
    pub const VERDICT_DATA: u32 = super::NFT_DATA_VERDICT;
    /// `TYPE_BITS`: each concatenated type takes 6 bits (`concat_subtype_add`).
    const TYPE_BITS: u32 = 6;

    /// The type number of the concatenation of `types`, first field in the highest bits
    /// (`ipv4_addr . inet_proto . inet_service` is `7 << 12 | 12 << 6 | 13`).
    pub fn concat(types: &[u32]) -> u32 {
        types.iter().fold(0, |acc, &t| {
            (acc << TYPE_BITS) | (t & ((1 << TYPE_BITS) - 1))
        })
    }
}
