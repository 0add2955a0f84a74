//! Rule expressions: [`Expr`], one `NFTA_LIST_ELEM` of `NFTA_RULE_EXPRESSIONS` holding
//! `NFTA_EXPR_NAME` and `NFTA_EXPR_DATA`, whose attributes depend on the name; one attribute
//! enum per expression we use, and constructors that write the attributes in libnftnl's
//! order (so our bytes equal `nft`'s).
//!
//! Registers: `NFT_REG_VERDICT` (0) holds the verdict; data lives in 32-bit registers
//! `NFT_REG32_00..15` (8..23). The legacy 16-byte `NFT_REG_1..4` (1..4) alias them
//! (`NFT_REG_1` is `NFT_REG32_00..03`), and `nft` names the first data register `NFT_REG_1`.
//! A concatenation loads consecutive 32-bit registers, each field rounded up to 4 bytes (a
//! 2-byte port takes a whole register), and the lookup reads them from the first one.

//!
//! The module is split by concern: [`kinds`] (kernel enums and flag values), [`attrs`] (one
//! attribute enum per expression), `build` (the constructors on [`Expr`]).

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, NlasIterator, Parseable,
    NLA_F_NESTED,
};

use super::attr::{parse_nlas, Nested, NlaValue};
use super::constants::*;

pub mod attrs;
mod build;
pub mod kinds;

pub use attrs::*;
pub use kinds::*;

/// Registers (`enum nft_registers`).
pub mod reg {
    /// `NFT_REG_VERDICT`: where a vmap lookup or an immediate verdict goes.
    pub const VERDICT: u32 = super::NFT_REG_VERDICT;
    /// `NFT_REG_1`: the first data register as `nft` names it (16 bytes, `NFT_REG32_00..03`).
    pub const REG_1: u32 = super::NFT_REG_1;
    /// `NFT_REG_2`.
    pub const REG_2: u32 = super::NFT_REG_2;

    /// `NFT_REG32_00 + n`: the 32-bit register `n` (0..=15).
    pub const fn reg32(n: u32) -> u32 {
        super::NFT_REG32_00 + n
    }
}

/// Declares [`Expr`] and its name table in one place.
macro_rules! exprs {
    ( $( $(#[$vmeta:meta])* $variant:ident($attr:ty) = $name:literal, )* ) => {
        /// One expression of a rule: its kind (`NFTA_EXPR_NAME`) and data (`NFTA_EXPR_DATA`).
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Expr {
            $( $(#[$vmeta])* $variant(Vec<$attr>), )*
            /// An expression of another kind, its data kept as it came.
            Other {
                /// `NFTA_EXPR_NAME`.
                name: String,
                /// The attributes of `NFTA_EXPR_DATA`.
                data: Vec<DefaultNla>,
            },
        }

        impl Expr {
            /// The expression's name (`NFTA_EXPR_NAME`).
            pub fn name(&self) -> &str {
                match self {
                    $( Expr::$variant(_) => $name, )*
                    Expr::Other { name, .. } => name,
                }
            }

            fn data_len(&self) -> usize {
                match self {
                    $( Expr::$variant(attrs) => attrs.as_slice().buffer_len(), )*
                    Expr::Other { data, .. } => data.as_slice().buffer_len(),
                }
            }

            fn emit_data(&self, buffer: &mut [u8]) {
                match self {
                    $( Expr::$variant(attrs) => attrs.as_slice().emit(buffer), )*
                    Expr::Other { data, .. } => data.as_slice().emit(buffer),
                }
            }

            fn parse_data(name: String, data: &[u8]) -> Result<Expr, DecodeError> {
                Ok(match name.as_str() {
                    $( $name => Expr::$variant(
                        parse_nlas(data).context(concat!("invalid data of expression ", $name))?,
                    ), )*
                    _ => Expr::Other {
                        data: NlasIterator::new(data)
                            .map(|nla| DefaultNla::parse(&nla?))
                            .collect::<Result<_, _>>()
                            .context(format!("invalid data of expression {name}"))?,
                        name,
                    },
                })
            }
        }
    };
}

exprs! {
    /// `payload`.
    Payload(PayloadAttr) = "payload",
    /// `meta`.
    Meta(MetaAttr) = "meta",
    /// `cmp`.
    Cmp(CmpAttr) = "cmp",
    /// `bitwise`.
    Bitwise(BitwiseAttr) = "bitwise",
    /// `lookup`.
    Lookup(LookupAttr) = "lookup",
    /// `immediate`.
    Immediate(ImmediateAttr) = "immediate",
    /// `nat`.
    Nat(NatAttr) = "nat",
    /// `masq`.
    Masq(MasqAttr) = "masq",
    /// `numgen`.
    Numgen(NumgenAttr) = "numgen",
    /// `ct`.
    Ct(CtAttr) = "ct",
    /// `counter`.
    Counter(CounterAttr) = "counter",
    /// `reject`.
    Reject(RejectAttr) = "reject",
    /// `dynset`.
    Dynset(DynsetAttr) = "dynset",
    /// `fib`.
    Fib(FibAttr) = "fib",
    /// `range`.
    Range(RangeAttr) = "range",
}

/// `NLA_HDRLEN`.
const NLA_HEADER: usize = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// `NFTA_LIST_ELEM { NFTA_EXPR_NAME "name", NFTA_EXPR_DATA { attributes } }`.
impl Nla for Expr {
    fn value_len(&self) -> usize {
        NLA_HEADER + align4(self.name().len() + 1) + NLA_HEADER + self.data_len()
    }

    fn kind(&self) -> u16 {
        NFTA_LIST_ELEM | NLA_F_NESTED
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        let name = self.name().to_owned();
        let name_len = NLA_HEADER + align4(name.len() + 1);
        ExprField(NFTA_EXPR_NAME, &|b| name.emit_value(b), name.value_len())
            .emit(&mut buffer[..name_len]);
        ExprField(
            NFTA_EXPR_DATA | NLA_F_NESTED,
            &|b| self.emit_data(b),
            self.data_len(),
        )
        .emit(&mut buffer[name_len..]);
    }
}

/// One attribute of an expression's list element, emitted through `Nla`'s blanket
/// `Emitable` (header, length, padding).
struct ExprField<'a>(u16, &'a dyn Fn(&mut [u8]), usize);

impl Nla for ExprField<'_> {
    fn value_len(&self) -> usize {
        self.2
    }
    fn kind(&self) -> u16 {
        self.0
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        (self.1)(buffer);
    }
}

impl Nested for Expr {
    fn parse_nla(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        if buf.kind() != NFTA_LIST_ELEM {
            return Err(format!("want NFTA_LIST_ELEM, got attribute {}", buf.kind()).into());
        }
        let mut name = None;
        let mut data = Vec::new();
        for nla in NlasIterator::new(buf.value()) {
            let nla = nla.context("invalid expression")?;
            match nla.kind() {
                NFTA_EXPR_NAME => {
                    name = Some(String::parse_value(nla.value()).context("invalid NFTA_EXPR_NAME")?)
                }
                NFTA_EXPR_DATA => data = nla.value().to_vec(),
                // Nothing else is defined; an unknown attribute is skipped.
                _ => {}
            }
        }
        let name = name.ok_or_else(|| DecodeError::from("expression without NFTA_EXPR_NAME"))?;
        Expr::parse_data(name, &data)
    }
}

/// `NFPROTO_IPV4`, for [`Expr::nat`]'s family and `meta nfproto` matches.
pub const NFPROTO_IPV4_FAMILY: u32 = NFPROTO_IPV4 as u32;
/// `NFPROTO_IPV6`.
pub const NFPROTO_IPV6_FAMILY: u32 = NFPROTO_IPV6 as u32;
