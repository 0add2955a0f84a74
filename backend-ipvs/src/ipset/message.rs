//! The ipset nfnetlink message: `nfgenmsg` and the command-level attributes. The command itself
//! travels in the netlink header (`nlmsg_type = NFNL_SUBSYS_IPSET << 8 | cmd`).

use netlink_packet_core::{
    emit_u16_be, emit_u32_be, parse_string, parse_u16_be, parse_u32_be, parse_u8, DecodeError,
    DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized, NLA_F_NESTED, NLA_F_NET_BYTEORDER,
};

use super::attr::{parse_data, DataAttr, DataKind};
use super::constants::*;

/// An ipset command (`IPSET_CMD_*`, the low byte of `nlmsg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpsetCmd {
    /// `IPSET_CMD_PROTOCOL`: return protocol version.
    Protocol,
    /// `IPSET_CMD_CREATE`: create a new (empty) set.
    Create,
    /// `IPSET_CMD_DESTROY`: destroy a (empty) set.
    Destroy,
    /// `IPSET_CMD_FLUSH`: remove all elements from a set.
    Flush,
    /// `IPSET_CMD_RENAME`: rename a set.
    Rename,
    /// `IPSET_CMD_SWAP`: swap two sets.
    Swap,
    /// `IPSET_CMD_LIST`: list sets (a dump).
    List,
    /// `IPSET_CMD_SAVE`: save sets (a dump).
    Save,
    /// `IPSET_CMD_ADD`: add elements to a set.
    Add,
    /// `IPSET_CMD_DEL`: delete elements from a set.
    Del,
    /// `IPSET_CMD_TEST`: test an element in a set.
    Test,
    /// `IPSET_CMD_HEADER`: get set header data only.
    Header,
    /// `IPSET_CMD_TYPE`: get set type (its revisions).
    Type,
    /// Any other command number.
    Other(u8),
}

impl From<u8> for IpsetCmd {
    fn from(value: u8) -> Self {
        use IpsetCmd::*;
        match value {
            IPSET_CMD_PROTOCOL => Protocol,
            IPSET_CMD_CREATE => Create,
            IPSET_CMD_DESTROY => Destroy,
            IPSET_CMD_FLUSH => Flush,
            IPSET_CMD_RENAME => Rename,
            IPSET_CMD_SWAP => Swap,
            IPSET_CMD_LIST => List,
            IPSET_CMD_SAVE => Save,
            IPSET_CMD_ADD => Add,
            IPSET_CMD_DEL => Del,
            IPSET_CMD_TEST => Test,
            IPSET_CMD_HEADER => Header,
            IPSET_CMD_TYPE => Type,
            other => Other(other),
        }
    }
}

impl From<IpsetCmd> for u8 {
    fn from(value: IpsetCmd) -> Self {
        use IpsetCmd::*;
        match value {
            Protocol => IPSET_CMD_PROTOCOL,
            Create => IPSET_CMD_CREATE,
            Destroy => IPSET_CMD_DESTROY,
            Flush => IPSET_CMD_FLUSH,
            Rename => IPSET_CMD_RENAME,
            Swap => IPSET_CMD_SWAP,
            List => IPSET_CMD_LIST,
            Save => IPSET_CMD_SAVE,
            Add => IPSET_CMD_ADD,
            Del => IPSET_CMD_DEL,
            Test => IPSET_CMD_TEST,
            Header => IPSET_CMD_HEADER,
            Type => IPSET_CMD_TYPE,
            Other(other) => other,
        }
    }
}

impl IpsetCmd {
    /// Whether the command's `IPSET_ATTR_DATA` holds entry fields (not set parameters).
    fn data_kind(self) -> DataKind {
        match self {
            IpsetCmd::Add | IpsetCmd::Del | IpsetCmd::Test => DataKind::Entry,
            _ => DataKind::Create,
        }
    }
}

/// A command-level attribute.
///
/// Trap: number 3 is `IPSET_ATTR_TYPENAME` in most commands and `IPSET_ATTR_SETNAME2` (the
/// second set) in rename and swap, so parsing takes the command as a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpsetAttr {
    /// `IPSET_ATTR_PROTOCOL`: the protocol version; every request carries it.
    Protocol(u8),
    /// `IPSET_ATTR_SETNAME`: the set's name (at most 31 bytes; sent NUL-terminated).
    SetName(String),
    /// `IPSET_ATTR_TYPENAME`: the set type (`hash:ip,port`).
    TypeName(String),
    /// `IPSET_ATTR_SETNAME2`: the other set of a rename or swap.
    SetName2(String),
    /// `IPSET_ATTR_REVISION`: the set type's revision (the highest, in type replies).
    Revision(u8),
    /// `IPSET_ATTR_FAMILY`: `NFPROTO_IPV4` (2) or `NFPROTO_IPV6` (10).
    Family(u8),
    /// `IPSET_ATTR_FLAGS`: command-level flags (`IPSET_FLAG_LIST_SETNAME`...).
    Flags(u32),
    /// `IPSET_ATTR_DATA`: one entry (add, del) or the set's parameters (create, list).
    Data(Vec<DataAttr>),
    /// `IPSET_ATTR_ADT`: many entries, each an `IPSET_ATTR_DATA` nest.
    Adt(Vec<Vec<DataAttr>>),
    /// `IPSET_ATTR_LINENO`: present, it asks the kernel to name a failing entry by the
    /// `IPSET_ATTR_CADT_LINENO` of its `IPSET_ATTR_DATA`; the kernel writes that number here
    /// in the copy of the request it sends back with the error.
    Lineno(u32),
    /// `IPSET_ATTR_PROTOCOL_MIN` (`IPSET_ATTR_REVISION_MIN` in type replies).
    ProtocolMin(u8),
    /// `IPSET_ATTR_INDEX`: the kernel's index of the set (list replies).
    Index(u16),
    /// Any other attribute, kept as it came.
    Other(DefaultNla),
}

fn str_len(s: &str) -> usize {
    s.len() + 1
}

fn emit_str(buffer: &mut [u8], s: &str) {
    buffer[..s.len()].copy_from_slice(s.as_bytes());
    buffer[s.len()] = 0;
}

impl Nla for IpsetAttr {
    fn value_len(&self) -> usize {
        use IpsetAttr::*;
        match self {
            Protocol(_) | Revision(_) | Family(_) | ProtocolMin(_) => 1,
            SetName(s) | TypeName(s) | SetName2(s) => str_len(s),
            Index(_) => 2,
            Flags(_) | Lineno(_) => 4,
            Data(attrs) => attrs.as_slice().buffer_len(),
            Adt(entries) => entries.iter().map(|e| 4 + e.as_slice().buffer_len()).sum(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use IpsetAttr::*;
        match self {
            Protocol(_) => IPSET_ATTR_PROTOCOL,
            SetName(_) => IPSET_ATTR_SETNAME,
            TypeName(_) => IPSET_ATTR_TYPENAME,
            SetName2(_) => IPSET_ATTR_SETNAME2,
            Revision(_) => IPSET_ATTR_REVISION,
            Family(_) => IPSET_ATTR_FAMILY,
            Flags(_) => IPSET_ATTR_FLAGS | NLA_F_NET_BYTEORDER,
            Data(_) => IPSET_ATTR_DATA | NLA_F_NESTED,
            Adt(_) => IPSET_ATTR_ADT | NLA_F_NESTED,
            Lineno(_) => IPSET_ATTR_LINENO | NLA_F_NET_BYTEORDER,
            ProtocolMin(_) => IPSET_ATTR_PROTOCOL_MIN,
            Index(_) => IPSET_ATTR_INDEX | NLA_F_NET_BYTEORDER,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use IpsetAttr::*;
        match self {
            Protocol(v) | Revision(v) | Family(v) | ProtocolMin(v) => buffer[0] = *v,
            SetName(s) | TypeName(s) | SetName2(s) => emit_str(buffer, s),
            Index(v) => emit_u16_be(buffer, *v).expect("sized by value_len"),
            Flags(v) | Lineno(v) => emit_u32_be(buffer, *v).expect("sized by value_len"),
            Data(attrs) => attrs.as_slice().emit(buffer),
            Adt(entries) => {
                // Each entry is an IPSET_ATTR_DATA nest: header (4 bytes) + attributes, whose
                // lengths are multiples of 4 already (every Nla pads itself).
                let mut offset = 0;
                for entry in entries {
                    let len = 4 + entry.as_slice().buffer_len();
                    let len16 = u16::try_from(len).expect("an entry is far below 64 KiB");
                    buffer[offset..offset + 2].copy_from_slice(&len16.to_ne_bytes());
                    buffer[offset + 2..offset + 4]
                        .copy_from_slice(&(IPSET_ATTR_DATA | NLA_F_NESTED).to_ne_bytes());
                    entry.as_slice().emit(&mut buffer[offset + 4..offset + len]);
                    offset += len;
                }
            }
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> ParseableParametrized<NlaBuffer<&'a T>, IpsetCmd> for IpsetAttr {
    fn parse_with_param(buf: &NlaBuffer<&'a T>, cmd: IpsetCmd) -> Result<Self, DecodeError> {
        use IpsetAttr::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPSET_ATTR_PROTOCOL => Protocol(parse_u8(v).context("invalid IPSET_ATTR_PROTOCOL")?),
            IPSET_ATTR_SETNAME => SetName(parse_string(v).context("invalid IPSET_ATTR_SETNAME")?),
            IPSET_ATTR_TYPENAME if matches!(cmd, IpsetCmd::Rename | IpsetCmd::Swap) => {
                SetName2(parse_string(v).context("invalid IPSET_ATTR_SETNAME2")?)
            }
            IPSET_ATTR_TYPENAME => {
                TypeName(parse_string(v).context("invalid IPSET_ATTR_TYPENAME")?)
            }
            IPSET_ATTR_REVISION => Revision(parse_u8(v).context("invalid IPSET_ATTR_REVISION")?),
            IPSET_ATTR_FAMILY => Family(parse_u8(v).context("invalid IPSET_ATTR_FAMILY")?),
            IPSET_ATTR_FLAGS => Flags(parse_u32_be(v).context("invalid IPSET_ATTR_FLAGS")?),
            IPSET_ATTR_DATA => Data(parse_data(v, cmd.data_kind())?),
            IPSET_ATTR_ADT => Adt(parse_adt(v)?),
            IPSET_ATTR_LINENO => Lineno(parse_u32_be(v).context("invalid IPSET_ATTR_LINENO")?),
            IPSET_ATTR_PROTOCOL_MIN => {
                ProtocolMin(parse_u8(v).context("invalid IPSET_ATTR_PROTOCOL_MIN")?)
            }
            IPSET_ATTR_INDEX => Index(parse_u16_be(v).context("invalid IPSET_ATTR_INDEX")?),
            _ => Other(DefaultNla::parse(buf).context("invalid ipset attribute")?),
        })
    }
}

/// The entries of an `IPSET_ATTR_ADT` nest (in list replies and add/del requests alike).
fn parse_adt(payload: &[u8]) -> Result<Vec<Vec<DataAttr>>, DecodeError> {
    NlasIterator::new(payload)
        .map(|nla| {
            let nla = nla.context("invalid IPSET_ATTR_ADT")?;
            if nla.kind() != IPSET_ATTR_DATA {
                return Err(DecodeError::from(format!(
                    "IPSET_ATTR_ADT holds attribute {}, not IPSET_ATTR_DATA",
                    nla.kind()
                )));
            }
            parse_data(nla.value(), DataKind::Entry)
        })
        .collect()
}

/// An ipset message: the `nfgenmsg` header and the command-level attributes.
///
/// The `ipset` tool sends `nfgen_family` `AF_INET` whatever the set's family (the kernel reads
/// the family from `IPSET_ATTR_FAMILY`), and so do we.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsetMessage {
    /// The command (travels in `nlmsg_type`).
    pub cmd: IpsetCmd,
    /// `nfgenmsg.nfgen_family`.
    pub family: u8,
    /// The command-level attributes.
    pub attrs: Vec<IpsetAttr>,
}

/// `sizeof(struct nfgenmsg)`: family (u8), version (u8), resource id (be16).
pub const NFGENMSG_LEN: usize = 4;

impl IpsetMessage {
    /// A request of `cmd` with `attrs` (the protocol attribute is the caller's to add first).
    pub fn new(cmd: IpsetCmd, attrs: Vec<IpsetAttr>) -> Self {
        IpsetMessage {
            cmd,
            family: AF_INET,
            attrs,
        }
    }

    /// The `nlmsg_type` of this message.
    pub fn message_type(&self) -> u16 {
        (NFNL_SUBSYS_IPSET << 8) | u16::from(u8::from(self.cmd))
    }
}

impl Emitable for IpsetMessage {
    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = NFNETLINK_V0;
        buffer[2..4].copy_from_slice(&[0, 0]);
        self.attrs.as_slice().emit(&mut buffer[NFGENMSG_LEN..]);
    }
}

impl ParseableParametrized<[u8], IpsetCmd> for IpsetMessage {
    /// Parses the payload of a netlink message (after `nlmsghdr`) of command `cmd`.
    fn parse_with_param(buf: &[u8], cmd: IpsetCmd) -> Result<Self, DecodeError> {
        let header = buf
            .get(..NFGENMSG_LEN)
            .ok_or_else(|| DecodeError::from("ipset message shorter than nfgenmsg"))?;
        let attrs = NlasIterator::new(&buf[NFGENMSG_LEN..])
            .map(|nla| nla.and_then(|nla| IpsetAttr::parse_with_param(&nla, cmd)))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("invalid ipset message (command {cmd:?})"))?;
        Ok(IpsetMessage {
            cmd,
            family: header[0],
            attrs,
        })
    }
}
