//! Kernel enums and flag values of the expressions: payload bases, meta and ct keys,
//! comparison and NAT types, `NF_NAT_RANGE_*`, `ct state` and `ct status` bits.

use netlink_packet_core::DecodeError;

use crate::netlink::attr::NlaValue;
use crate::netlink::constants::*;

/// Defines a kernel enum carried as a big-endian `u32`, with `From` both ways and `Other`.
macro_rules! kernel_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $value:ident, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// Another value.
            Other(u32),
        }

        impl From<$name> for u32 {
            fn from(v: $name) -> u32 {
                match v {
                    $( $name::$variant => $value, )*
                    $name::Other(n) => n,
                }
            }
        }

        impl From<u32> for $name {
            fn from(n: u32) -> $name {
                match n {
                    $( $value => $name::$variant, )*
                    n => $name::Other(n),
                }
            }
        }

        impl NlaValue for $name {
            fn value_len(&self) -> usize {
                4
            }
            fn emit_value(&self, buffer: &mut [u8]) {
                u32::from(*self).emit_value(buffer);
            }
            fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
                u32::parse_value(payload).map($name::from)
            }
        }
    };
}

kernel_enum! {
    /// Payload bases (`enum nft_payload_bases`).
    pub enum PayloadBase {
        /// `NFT_PAYLOAD_LL_HEADER`: link layer header.
        LinkLayer = NFT_PAYLOAD_LL_HEADER,
        /// `NFT_PAYLOAD_NETWORK_HEADER`: network header.
        Network = NFT_PAYLOAD_NETWORK_HEADER,
        /// `NFT_PAYLOAD_TRANSPORT_HEADER`: transport header.
        Transport = NFT_PAYLOAD_TRANSPORT_HEADER,
    }
}

kernel_enum! {
    /// Meta keys we use (`enum nft_meta_keys`).
    pub enum MetaKey {
        /// `NFT_META_LEN`: packet length.
        Len = NFT_META_LEN,
        /// `NFT_META_PROTOCOL`: packet ethertype protocol.
        Protocol = NFT_META_PROTOCOL,
        /// `NFT_META_MARK`: packet mark (skb->mark), host byte order.
        Mark = NFT_META_MARK,
        /// `NFT_META_IIF`: packet input interface index.
        Iif = NFT_META_IIF,
        /// `NFT_META_OIF`: packet output interface index.
        Oif = NFT_META_OIF,
        /// `NFT_META_IIFNAME`: packet input interface name.
        Iifname = NFT_META_IIFNAME,
        /// `NFT_META_OIFNAME`: packet output interface name.
        Oifname = NFT_META_OIFNAME,
        /// `NFT_META_NFPROTO`: netfilter protocol (`NFPROTO_IPV4`...), one byte.
        Nfproto = NFT_META_NFPROTO,
        /// `NFT_META_L4PROTO`: layer 4 protocol number, one byte.
        L4proto = NFT_META_L4PROTO,
    }
}

kernel_enum! {
    /// Comparison operators (`enum nft_cmp_ops`).
    pub enum CmpOp {
        /// `NFT_CMP_EQ`: equal.
        Eq = NFT_CMP_EQ,
        /// `NFT_CMP_NEQ`: not equal.
        Neq = NFT_CMP_NEQ,
        /// `NFT_CMP_LT`: less than.
        Lt = NFT_CMP_LT,
        /// `NFT_CMP_LTE`: less than or equal to.
        Lte = NFT_CMP_LTE,
        /// `NFT_CMP_GT`: greater than.
        Gt = NFT_CMP_GT,
        /// `NFT_CMP_GTE`: greater than or equal to.
        Gte = NFT_CMP_GTE,
    }
}

kernel_enum! {
    /// Conntrack keys we use (`enum nft_ct_keys`).
    pub enum CtKey {
        /// `NFT_CT_STATE`: conntrack state (bitmask of `enum ip_conntrack_info`).
        State = NFT_CT_STATE,
        /// `NFT_CT_DIRECTION`: conntrack direction.
        Direction = NFT_CT_DIRECTION,
        /// `NFT_CT_STATUS`: conntrack status (bitmask of `enum ip_conntrack_status`).
        Status = NFT_CT_STATUS,
        /// `NFT_CT_MARK`: conntrack mark value.
        Mark = NFT_CT_MARK,
    }
}

kernel_enum! {
    /// NAT types (`enum nft_nat_types`).
    pub enum NatType {
        /// `NFT_NAT_SNAT`: source NAT.
        Snat = NFT_NAT_SNAT,
        /// `NFT_NAT_DNAT`: destination NAT.
        Dnat = NFT_NAT_DNAT,
    }
}

/// `NF_NAT_RANGE_*` flags (`include/uapi/linux/netfilter/nf_nat.h`) of `nat` and `masq`.
pub mod nat_flags {
    /// `NF_NAT_RANGE_MAP_IPS`: an address is given.
    pub const MAP_IPS: u32 = super::NF_NAT_RANGE_MAP_IPS;
    /// `NF_NAT_RANGE_PROTO_SPECIFIED`: a port is given.
    pub const PROTO_SPECIFIED: u32 = super::NF_NAT_RANGE_PROTO_SPECIFIED;
    /// `NF_NAT_RANGE_PROTO_RANDOM`.
    pub const PROTO_RANDOM: u32 = super::NF_NAT_RANGE_PROTO_RANDOM;
    /// `NF_NAT_RANGE_PERSISTENT`.
    pub const PERSISTENT: u32 = super::NF_NAT_RANGE_PERSISTENT;
    /// `NF_NAT_RANGE_PROTO_RANDOM_FULLY`: `nft`'s `fully-random`.
    pub const PROTO_RANDOM_FULLY: u32 = super::NF_NAT_RANGE_PROTO_RANDOM_FULLY;
}

/// `ct state` bits (`NF_CT_STATE_BIT(IP_CT_NEW)` and friends, `nf_conntrack_common.h`).
pub mod ct_state {
    /// `invalid`: `NF_CT_STATE_INVALID_BIT`.
    pub const INVALID: u32 = 1;
    /// `established`: `NF_CT_STATE_BIT(IP_CT_ESTABLISHED)`.
    pub const ESTABLISHED: u32 = 1 << 1;
    /// `related`: `NF_CT_STATE_BIT(IP_CT_RELATED)`.
    pub const RELATED: u32 = 1 << 2;
    /// `new`: `NF_CT_STATE_BIT(IP_CT_NEW)`.
    pub const NEW: u32 = 1 << 3;
    /// `untracked`: `NF_CT_STATE_UNTRACKED_BIT`.
    pub const UNTRACKED: u32 = 1 << 6;
}

/// `ct status` bits (`enum ip_conntrack_status`).
pub mod ct_status {
    /// `IPS_SRC_NAT`.
    pub const SNAT: u32 = 1 << 4;
    /// `IPS_DST_NAT`.
    pub const DNAT: u32 = 1 << 5;
}
