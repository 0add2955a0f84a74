//! `struct nft_data` on the wire (`NFTA_DATA_*`): a value (key, mapped data, immediate
//! operand) or a verdict (accept, drop, jump/goto a chain...), and [`Verdict`], the typed verdict.

use super::attr::nft_attrs;
use super::constants::*;

nft_attrs! {
    /// One attribute of `nft_data` (`enum nft_data_attributes`): the content of
    /// `NFTA_SET_ELEM_KEY`, `NFTA_SET_ELEM_DATA`, `NFTA_IMMEDIATE_DATA`, `NFTA_CMP_DATA`,
    /// `NFTA_BITWISE_MASK`...
    pub enum DataAttr {
        /// `NFTA_DATA_VALUE`: generic data, in the byte order of the packet field (addresses
        /// and ports big-endian; marks and `meta` keys in host order). Concatenations put each
        /// field in its own 4-byte-aligned slot (`NFT_REG32_SIZE`).
        Value(Vec<u8>) = NFTA_DATA_VALUE,
        /// `NFTA_DATA_VERDICT`: nf_tables verdict.
        Verdict(Vec<VerdictAttr>) = NFTA_DATA_VERDICT,
    }
}

nft_attrs! {
    /// One attribute of a verdict (`enum nft_verdict_attributes`).
    pub enum VerdictAttr {
        /// `NFTA_VERDICT_CODE`: nf_tables verdict (`NF_ACCEPT`, `NF_DROP`, or a negative
        /// `enum nft_verdicts`), big-endian.
        Code(i32) = NFTA_VERDICT_CODE,
        /// `NFTA_VERDICT_CHAIN`: jump target chain name.
        Chain(String) = NFTA_VERDICT_CHAIN,
        /// `NFTA_VERDICT_CHAIN_ID`: jump target chain ID (a chain made in the same batch).
        ChainId(u32) = NFTA_VERDICT_CHAIN_ID,
    }
}

/// A verdict, typed: what `NFTA_DATA_VERDICT` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// `NF_ACCEPT`.
    Accept,
    /// `NF_DROP`.
    Drop,
    /// `NFT_CONTINUE`.
    Continue,
    /// `NFT_BREAK`.
    Break,
    /// `NFT_RETURN`.
    Return,
    /// `NFT_JUMP` to the chain.
    Jump(String),
    /// `NFT_GOTO` the chain.
    Goto(String),
}

impl Verdict {
    /// The verdict's attributes (`NFTA_VERDICT_CODE`, then `NFTA_VERDICT_CHAIN` for jumps,
    /// the order libnftnl writes them).
    pub fn to_attrs(&self) -> Vec<VerdictAttr> {
        let (code, chain) = match self {
            Verdict::Accept => (NF_ACCEPT, None),
            Verdict::Drop => (NF_DROP, None),
            Verdict::Continue => (NFT_CONTINUE, None),
            Verdict::Break => (NFT_BREAK, None),
            Verdict::Return => (NFT_RETURN, None),
            Verdict::Jump(chain) => (NFT_JUMP, Some(chain)),
            Verdict::Goto(chain) => (NFT_GOTO, Some(chain)),
        };
        let mut attrs = vec![VerdictAttr::Code(code)];
        attrs.extend(chain.map(|c| VerdictAttr::Chain(c.clone())));
        attrs
    }

    /// The verdict in `attrs`; `None` when the code is unknown or a jump names no chain.
    pub fn from_attrs(attrs: &[VerdictAttr]) -> Option<Self> {
        let mut code = None;
        let mut chain = None;
        for attr in attrs {
            match attr {
                VerdictAttr::Code(c) => code = Some(*c),
                VerdictAttr::Chain(c) => chain = Some(c.clone()),
                _ => {}
            }
        }
        Some(match code? {
            NF_ACCEPT => Verdict::Accept,
            NF_DROP => Verdict::Drop,
            NFT_CONTINUE => Verdict::Continue,
            NFT_BREAK => Verdict::Break,
            NFT_RETURN => Verdict::Return,
            NFT_JUMP => Verdict::Jump(chain?),
            NFT_GOTO => Verdict::Goto(chain?),
            _ => return None,
        })
    }

    /// As `nft_data`: `[NFTA_DATA_VERDICT [...]]`.
    pub fn to_data(&self) -> Vec<DataAttr> {
        vec![DataAttr::Verdict(self.to_attrs())]
    }
}

/// `nft_data` holding `bytes` as a value.
pub fn value(bytes: impl Into<Vec<u8>>) -> Vec<DataAttr> {
    vec![DataAttr::Value(bytes.into())]
}

/// The verdict in `nft_data`, if it holds one.
pub fn verdict_of(data: &[DataAttr]) -> Option<Verdict> {
    data.iter().find_map(|d| match d {
        DataAttr::Verdict(v) => Verdict::from_attrs(v),
        _ => None,
    })
}

/// The value in `nft_data`, if it holds one.
pub fn value_of(data: &[DataAttr]) -> Option<&[u8]> {
    data.iter().find_map(|d| match d {
        DataAttr::Value(v) => Some(v.as_slice()),
        _ => None,
    })
}
