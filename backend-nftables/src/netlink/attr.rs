//! The plumbing under every attribute enum: how one attribute value is written and read
//! ([`NlaValue`]), the `nft_attrs!` macro that builds an attribute enum from a list of
//! `Variant(Type) = NFTA_CONSTANT` lines, and [`ListElem`], one `NFTA_LIST_ELEM` of a list.
//!
//! Byte order: nf_tables reads every integer attribute in network byte order
//! (`ntohl(nla_get_be32(..))`, `be64_to_cpu(nla_get_be64(..))` throughout
//! `net/netfilter/nf_tables_api.c` and the `nft_*.c` expressions), so `u32`, `i32` and `u64`
//! values are big-endian here; one-byte values (`NFTA_CT_DIRECTION`,
//! `NFTA_REJECT_ICMP_CODE`) are `u8`. Strings are NUL-terminated (`nla_strscpy`); raw bytes
//! (`NFTA_DATA_VALUE`, userdata) are kept as they are.

use netlink_packet_core::{
    DecodeError, Emitable, ErrorContext, Nla, NlaBuffer, NlasIterator, NLA_F_NESTED,
};

use super::constants::NFTA_LIST_ELEM;

/// One attribute value: its length, how it is written and read.
pub trait NlaValue: Sized {
    /// Whether the attribute holds nested attributes (its type then carries `NLA_F_NESTED`,
    /// as libmnl's `mnl_attr_nest_start` sets it).
    const NESTED: bool = false;

    /// Bytes of the value, without padding.
    fn value_len(&self) -> usize;

    /// Writes the value into `buffer`, exactly [`NlaValue::value_len`] bytes.
    ///
    /// # Panics
    /// If `buffer` is shorter than [`NlaValue::value_len`] (`netlink-packet-core`'s contract).
    fn emit_value(&self, buffer: &mut [u8]);

    /// Reads a value.
    ///
    /// # Errors
    /// When the bytes do not hold one (wrong length, bad UTF-8, bad nested attribute).
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError>;
}

fn exact<const N: usize>(payload: &[u8]) -> Result<[u8; N], DecodeError> {
    payload
        .try_into()
        .map_err(|_| DecodeError::from(format!("want {N} bytes, got {}", payload.len())))
}

impl NlaValue for u8 {
    fn value_len(&self) -> usize {
        1
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer[0] = *self;
    }
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(exact::<1>(payload)?[0])
    }
}

impl NlaValue for u32 {
    fn value_len(&self) -> usize {
        4
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer[..4].copy_from_slice(&self.to_be_bytes());
    }
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(u32::from_be_bytes(exact(payload)?))
    }
}

impl NlaValue for i32 {
    fn value_len(&self) -> usize {
        4
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer[..4].copy_from_slice(&self.to_be_bytes());
    }
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(i32::from_be_bytes(exact(payload)?))
    }
}

impl NlaValue for u64 {
    fn value_len(&self) -> usize {
        8
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer[..8].copy_from_slice(&self.to_be_bytes());
    }
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(u64::from_be_bytes(exact(payload)?))
    }
}

/// NUL-terminated (the kernel's `NLA_STRING` with `nla_strscpy`); a missing NUL on input is
/// accepted.
impl NlaValue for String {
    fn value_len(&self) -> usize {
        self.len() + 1
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer[..self.len()].copy_from_slice(self.as_bytes());
        buffer[self.len()] = 0;
    }
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
        let text = payload.strip_suffix(&[0]).unwrap_or(payload);
        String::from_utf8(text.to_vec()).map_err(|e| DecodeError::from(e.to_string()))
    }
}

/// Raw bytes (`NLA_BINARY`).
impl NlaValue for Vec<u8> {
    fn value_len(&self) -> usize {
        self.len()
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer[..self.len()].copy_from_slice(self);
    }
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(payload.to_vec())
    }
}

/// An attribute that may sit inside a nested one: the attribute enums of this module.
/// (A local marker, so that `Vec<u8>` and `Vec<T: Nested>` do not overlap.)
pub trait Nested: Nla + Sized {
    /// Parses one attribute.
    ///
    /// # Errors
    /// When the attribute is malformed.
    fn parse_nla(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError>;
}

/// Nested attributes, in order.
impl<T: Nested> NlaValue for Vec<T> {
    const NESTED: bool = true;

    fn value_len(&self) -> usize {
        self.as_slice().buffer_len()
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        self.as_slice().emit(buffer);
    }
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
        parse_nlas(payload)
    }
}

/// A numbered list: item `i` is a nested attribute of type `i + 1`, as libnftnl writes the
/// elements of `NFTA_SET_ELEM_LIST_ELEMENTS` (`nftnl_set_elem_nlmsg_build`: one nest per
/// element, numbered from 1). The kernel ignores the type (`nla_for_each_nested`) and dumps
/// every element as `NFTA_LIST_ELEM`, so any type is read.
impl<T: Nested> NlaValue for Vec<Vec<T>> {
    const NESTED: bool = true;

    fn value_len(&self) -> usize {
        self.iter().map(|item| Numbered(0, item).buffer_len()).sum()
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        let mut start = 0;
        for (i, item) in self.iter().enumerate() {
            let nla = Numbered(u16::try_from(i + 1).unwrap_or(u16::MAX), item);
            let end = start + nla.buffer_len();
            nla.emit(&mut buffer[start..end]);
            start = end;
        }
    }
    fn parse_value(payload: &[u8]) -> Result<Self, DecodeError> {
        NlasIterator::new(payload)
            .map(|nla| parse_nlas(nla?.value()))
            .collect()
    }
}

/// Item `.1` of a numbered list, as attribute type `.0`.
pub(crate) struct Numbered<'a, T>(pub(crate) u16, pub(crate) &'a [T]);

impl<T: Nla> Nla for Numbered<'_, T> {
    fn value_len(&self) -> usize {
        self.1.buffer_len()
    }
    fn kind(&self) -> u16 {
        self.0 | NLA_F_NESTED
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        self.1.emit(buffer);
    }
}

/// Parses a run of attributes of one kind; stops at the first malformed one.
///
/// # Errors
/// The first malformed attribute's error.
pub fn parse_nlas<T: Nested>(payload: &[u8]) -> Result<Vec<T>, DecodeError> {
    NlasIterator::new(payload)
        .map(|nla| T::parse_nla(&nla?))
        .collect()
}

/// One `NFTA_LIST_ELEM` of a list (set elements, concatenation fields): nested attributes of
/// one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListElem<T>(pub Vec<T>);

impl<T: Nested> Nla for ListElem<T> {
    fn value_len(&self) -> usize {
        self.0.value_len()
    }
    fn kind(&self) -> u16 {
        NFTA_LIST_ELEM | NLA_F_NESTED
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        self.0.as_slice().emit(buffer);
    }
}

impl<T: Nested> Nested for ListElem<T> {
    fn parse_nla(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        if buf.kind() != NFTA_LIST_ELEM {
            return Err(format!("want NFTA_LIST_ELEM, got attribute {}", buf.kind()).into());
        }
        Ok(ListElem(
            parse_nlas(buf.value()).context("invalid NFTA_LIST_ELEM")?,
        ))
    }
}

/// Defines an attribute enum: one variant per `Variant(Type) = NFTA_CONSTANT` line, plus
/// `Other(DefaultNla)` for the rest, with `Nla`, `Parseable<NlaBuffer<&T>>` and [`Nested`].
/// Each variant's value type implements [`NlaValue`]; nested ones get `NLA_F_NESTED`.
macro_rules! nft_attrs {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident($ty:ty) = $kind:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant($ty), )*
            /// Any other attribute, kept as it came.
            Other(netlink_packet_core::DefaultNla),
        }

        impl netlink_packet_core::Nla for $name {
            fn value_len(&self) -> usize {
                match self {
                    $( Self::$variant(v) => $crate::netlink::attr::NlaValue::value_len(v), )*
                    Self::Other(nla) => nla.value_len(),
                }
            }

            fn kind(&self) -> u16 {
                match self {
                    $( Self::$variant(_) => {
                        if <$ty as $crate::netlink::attr::NlaValue>::NESTED {
                            $kind | netlink_packet_core::NLA_F_NESTED
                        } else {
                            $kind
                        }
                    } )*
                    Self::Other(nla) => nla.kind(),
                }
            }

            fn emit_value(&self, buffer: &mut [u8]) {
                match self {
                    $( Self::$variant(v) => {
                        $crate::netlink::attr::NlaValue::emit_value(v, buffer)
                    } )*
                    Self::Other(nla) => nla.emit_value(buffer),
                }
            }
        }

        impl<'a, T: AsRef<[u8]> + ?Sized>
            netlink_packet_core::Parseable<netlink_packet_core::NlaBuffer<&'a T>> for $name
        {
            fn parse(
                buf: &netlink_packet_core::NlaBuffer<&'a T>,
            ) -> Result<Self, netlink_packet_core::DecodeError> {
                use netlink_packet_core::{ErrorContext, NlaBuffer, Parseable};
                let payload = buf.value();
                Ok(match buf.kind() {
                    $( $kind => Self::$variant(
                        <$ty as $crate::netlink::attr::NlaValue>::parse_value(payload)
                            .context(concat!("invalid ", stringify!($kind)))?,
                    ), )*
                    _ => Self::Other(
                        <netlink_packet_core::DefaultNla as Parseable<NlaBuffer<&'a T>>>::parse(buf)
                            .context(concat!("invalid ", stringify!($name)))?,
                    ),
                })
            }
        }

        impl $crate::netlink::attr::Nested for $name {
            fn parse_nla(
                buf: &netlink_packet_core::NlaBuffer<&[u8]>,
            ) -> Result<Self, netlink_packet_core::DecodeError> {
                use netlink_packet_core::{NlaBuffer, Parseable};
                <Self as Parseable<NlaBuffer<&[u8]>>>::parse(buf)
            }
        }
    };
}

pub(crate) use nft_attrs;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian_and_checked_for_length() {
        let mut buf = [0u8; 4];
        0x0102_0304u32.emit_value(&mut buf);
        assert_eq!(buf, [1, 2, 3, 4]);
        assert_eq!(u32::parse_value(&[0, 0, 0, 10]).expect("u32"), 10);
        assert!(u32::parse_value(&[0, 0, 10]).is_err());
        assert_eq!(
            i32::parse_value(&[0xff, 0xff, 0xff, 0xfd]).expect("i32"),
            -3
        );
        assert!(u64::parse_value(&[0; 7]).is_err());
    }

    #[test]
    fn strings_are_nul_terminated_and_a_missing_nul_is_accepted() {
        let s = "svcptest".to_owned();
        let mut buf = vec![0xaa; s.value_len()];
        s.emit_value(&mut buf);
        assert_eq!(buf, b"svcptest\0");
        assert_eq!(String::parse_value(b"abc").expect("no NUL"), "abc");
        assert!(String::parse_value(&[0xff, 0]).is_err());
    }
}
