//! [`NftMessage`]: one nf_tables netlink message (`nlmsg_type` `NFNL_SUBSYS_NFTABLES << 8 |
//! NFT_MSG_*`, or a batch delimiter), its `struct nfgenmsg` header and its object's
//! attributes; sent as a [`netlink_transport::Request`], parsed from a
//! [`netlink_transport::Reply`].

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlasIterator, Parseable, NLA_F_NESTED,
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};

use super::attr::{nft_attrs, parse_nlas, Numbered};
use super::chain::ChainAttr;
use super::constants::*;
use super::rule::RuleAttr;
use super::set::SetAttr;
use super::set_elem::{SetElemAttr, SetElemListAttr};
use super::table::TableAttr;

/// An nf_tables message type (`enum nf_tables_msg_types`), or a batch delimiter
/// (`NFNL_MSG_BATCH_BEGIN`/`END`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MsgType {
    /// `NFT_MSG_NEWTABLE`: create a new table.
    NewTable,
    /// `NFT_MSG_GETTABLE`: get a table.
    GetTable,
    /// `NFT_MSG_DELTABLE`: delete a table.
    DelTable,
    /// `NFT_MSG_NEWCHAIN`: create a new chain.
    NewChain,
    /// `NFT_MSG_GETCHAIN`: get a chain.
    GetChain,
    /// `NFT_MSG_DELCHAIN`: delete a chain.
    DelChain,
    /// `NFT_MSG_NEWRULE`: create a new rule.
    NewRule,
    /// `NFT_MSG_GETRULE`: get a rule.
    GetRule,
    /// `NFT_MSG_DELRULE`: delete a rule (all rules of a chain without a handle: a flush).
    DelRule,
    /// `NFT_MSG_NEWSET`: create a new set.
    NewSet,
    /// `NFT_MSG_GETSET`: get a set.
    GetSet,
    /// `NFT_MSG_DELSET`: delete a set.
    DelSet,
    /// `NFT_MSG_NEWSETELEM`: create a new set element.
    NewSetElem,
    /// `NFT_MSG_GETSETELEM`: get a set element.
    GetSetElem,
    /// `NFT_MSG_DELSETELEM`: delete a set element.
    DelSetElem,
    /// `NFT_MSG_NEWGEN`: announce a new generation, only for events (and `GETGEN`'s reply).
    NewGen,
    /// `NFT_MSG_GETGEN`: get the rule-set generation.
    GetGen,
    /// `NFNL_MSG_BATCH_BEGIN`: a transaction starts.
    BatchBegin,
    /// `NFNL_MSG_BATCH_END`: the transaction ends; the kernel commits it.
    BatchEnd,
    /// Another `nlmsg_type`, whole.
    Other(u16),
}

const NFT_TYPES: [(MsgType, u16); 17] = [
    (MsgType::NewTable, NFT_MSG_NEWTABLE),
    (MsgType::GetTable, NFT_MSG_GETTABLE),
    (MsgType::DelTable, NFT_MSG_DELTABLE),
    (MsgType::NewChain, NFT_MSG_NEWCHAIN),
    (MsgType::GetChain, NFT_MSG_GETCHAIN),
    (MsgType::DelChain, NFT_MSG_DELCHAIN),
    (MsgType::NewRule, NFT_MSG_NEWRULE),
    (MsgType::GetRule, NFT_MSG_GETRULE),
    (MsgType::DelRule, NFT_MSG_DELRULE),
    (MsgType::NewSet, NFT_MSG_NEWSET),
    (MsgType::GetSet, NFT_MSG_GETSET),
    (MsgType::DelSet, NFT_MSG_DELSET),
    (MsgType::NewSetElem, NFT_MSG_NEWSETELEM),
    (MsgType::GetSetElem, NFT_MSG_GETSETELEM),
    (MsgType::DelSetElem, NFT_MSG_DELSETELEM),
    (MsgType::NewGen, NFT_MSG_NEWGEN),
    (MsgType::GetGen, NFT_MSG_GETGEN),
];

impl From<MsgType> for u16 {
    /// The whole `nlmsg_type`.
    fn from(t: MsgType) -> u16 {
        match t {
            MsgType::BatchBegin => NFNL_MSG_BATCH_BEGIN,
            MsgType::BatchEnd => NFNL_MSG_BATCH_END,
            MsgType::Other(n) => n,
            t => NFT_TYPES
                .iter()
                .find(|(k, _)| *k == t)
                .map_or(0, |(_, msg)| (NFNL_SUBSYS_NFTABLES << 8) | msg),
        }
    }
}

impl From<u16> for MsgType {
    fn from(n: u16) -> MsgType {
        match n {
            NFNL_MSG_BATCH_BEGIN => MsgType::BatchBegin,
            NFNL_MSG_BATCH_END => MsgType::BatchEnd,
            n if n >> 8 == NFNL_SUBSYS_NFTABLES => NFT_TYPES
                .iter()
                .find(|(_, msg)| *msg == n & 0xff)
                .map_or(MsgType::Other(n), |(k, _)| *k),
            n => MsgType::Other(n),
        }
    }
}

impl MsgType {
    /// The header's name (`NFT_MSG_NEWSETELEM`), for errors.
    pub fn name(self) -> String {
        match self {
            MsgType::BatchBegin => "NFNL_MSG_BATCH_BEGIN".to_owned(),
            MsgType::BatchEnd => "NFNL_MSG_BATCH_END".to_owned(),
            MsgType::Other(n) => format!("nlmsg_type {n:#x}"),
            t => format!("NFT_MSG_{}", format!("{t:?}").to_uppercase()),
        }
    }
}

/// The protocol family of `struct nfgenmsg` (`NFPROTO_*`): the table's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtoFamily {
    /// `NFPROTO_UNSPEC`: batch delimiters, and dumps of every family.
    Unspec,
    /// `NFPROTO_INET`: IPv4 and IPv6 (`table inet`).
    Inet,
    /// `NFPROTO_IPV4` (`table ip`).
    Ipv4,
    /// `NFPROTO_IPV6` (`table ip6`).
    Ipv6,
    /// `NFPROTO_ARP`.
    Arp,
    /// `NFPROTO_NETDEV`.
    Netdev,
    /// `NFPROTO_BRIDGE`.
    Bridge,
    /// Another value.
    Other(u8),
}

impl From<ProtoFamily> for u8 {
    fn from(f: ProtoFamily) -> u8 {
        match f {
            ProtoFamily::Unspec => NFPROTO_UNSPEC,
            ProtoFamily::Inet => NFPROTO_INET,
            ProtoFamily::Ipv4 => NFPROTO_IPV4,
            ProtoFamily::Ipv6 => NFPROTO_IPV6,
            ProtoFamily::Arp => NFPROTO_ARP,
            ProtoFamily::Netdev => NFPROTO_NETDEV,
            ProtoFamily::Bridge => NFPROTO_BRIDGE,
            ProtoFamily::Other(n) => n,
        }
    }
}

impl From<u8> for ProtoFamily {
    fn from(n: u8) -> ProtoFamily {
        match n {
            NFPROTO_UNSPEC => ProtoFamily::Unspec,
            NFPROTO_INET => ProtoFamily::Inet,
            NFPROTO_IPV4 => ProtoFamily::Ipv4,
            NFPROTO_IPV6 => ProtoFamily::Ipv6,
            NFPROTO_ARP => ProtoFamily::Arp,
            NFPROTO_NETDEV => ProtoFamily::Netdev,
            NFPROTO_BRIDGE => ProtoFamily::Bridge,
            n => ProtoFamily::Other(n),
        }
    }
}

nft_attrs! {
    /// One attribute of the ruleset generation (`enum nft_gen_attributes`).
    pub enum GenAttr {
        /// `NFTA_GEN_ID`: Ruleset generation ID.
        Id(u32) = NFTA_GEN_ID,
        /// `NFTA_GEN_PROC_PID`: PID of the process that made the last change.
        ProcPid(u32) = NFTA_GEN_PROC_PID,
        /// `NFTA_GEN_PROC_NAME`: its name.
        ProcName(String) = NFTA_GEN_PROC_NAME,
    }
}

/// What a message is about: its attributes, typed by the message type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NftObject {
    /// `NFT_MSG_*TABLE`.
    Table(Vec<TableAttr>),
    /// `NFT_MSG_*CHAIN`.
    Chain(Vec<ChainAttr>),
    /// `NFT_MSG_*RULE`.
    Rule(Vec<RuleAttr>),
    /// `NFT_MSG_*SET`.
    Set(Vec<SetAttr>),
    /// `NFT_MSG_*SETELEM`.
    SetElems(Vec<SetElemListAttr>),
    /// `NFT_MSG_*GEN`.
    Gen(Vec<GenAttr>),
    /// Batch delimiters and other message types.
    Other(Vec<DefaultNla>),
}

/// `sizeof(struct nfgenmsg)`: family (u8), version (u8), res_id (be16).
const NFGENMSG_LEN: usize = 4;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;

/// The largest attribute, header included: `nla_len` is a `u16`.
pub const MAX_ATTRIBUTE_BYTES: usize = u16::MAX as usize;

/// One nf_tables message: type, the flags it needs beyond `NLM_F_REQUEST`, the
/// `struct nfgenmsg` fields and the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftMessage {
    /// The message type.
    pub msg_type: MsgType,
    /// `nlmsg_flags` besides `NLM_F_REQUEST` and `NLM_F_ACK` (which the sender adds):
    /// `NLM_F_CREATE`, `NLM_F_EXCL`, `NLM_F_APPEND`, `NLM_F_REPLACE`; `NLM_F_MULTI` in dumps.
    pub flags: u16,
    /// `nfgen_family`.
    pub family: ProtoFamily,
    /// `res_id`, host order: `NFNL_SUBSYS_NFTABLES` in batch delimiters, 0 in requests, the
    /// low 16 bits of the generation in the kernel's replies.
    pub res_id: u16,
    /// The attributes.
    pub object: NftObject,
}

impl NftMessage {
    /// A message of `msg_type` about `object`, with the flags `nft` sends for it: `NEWCHAIN`,
    /// `NEWSET` and `NEWSETELEM` with `NLM_F_CREATE`, `NEWRULE` with `NLM_F_CREATE |
    /// NLM_F_APPEND` (append, or insert after `NFTA_RULE_POSITION`), the rest none
    /// (`NEWTABLE` without `NLM_F_EXCL`: adding an existing table is not an error).
    pub fn new(msg_type: MsgType, family: ProtoFamily, object: NftObject) -> Self {
        let flags = match msg_type {
            MsgType::NewChain | MsgType::NewSet | MsgType::NewSetElem => NLM_F_CREATE,
            MsgType::NewRule => NLM_F_CREATE | NLM_F_APPEND,
            _ => 0,
        };
        NftMessage {
            msg_type,
            flags,
            family,
            res_id: 0,
            object,
        }
    }

    /// `NFNL_MSG_BATCH_BEGIN` of an nf_tables transaction (`res_id` names the subsystem).
    pub fn batch_begin() -> Self {
        Self::batch(MsgType::BatchBegin)
    }

    /// `NFNL_MSG_BATCH_END`.
    pub fn batch_end() -> Self {
        Self::batch(MsgType::BatchEnd)
    }

    fn batch(msg_type: MsgType) -> Self {
        NftMessage {
            msg_type,
            flags: 0,
            family: ProtoFamily::Unspec,
            res_id: NFNL_SUBSYS_NFTABLES,
            object: NftObject::Other(Vec::new()),
        }
    }

    /// Parses the payload (after `nlmsghdr`) of a message of `message_type` with `flags`
    /// (`NLM_F_REQUEST` and `NLM_F_ACK` are dropped from them).
    ///
    /// # Errors
    /// A payload shorter than `struct nfgenmsg`, or a malformed attribute.
    pub fn parse(message_type: u16, flags: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        let msg_type = MsgType::from(message_type);
        let header: &[u8; NFGENMSG_LEN] = payload
            .get(..NFGENMSG_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| DecodeError::from("nf_tables message shorter than nfgenmsg"))?;
        let attrs = &payload[NFGENMSG_LEN..];
        let context = msg_type.name();
        let object = match msg_type {
            MsgType::NewTable | MsgType::GetTable | MsgType::DelTable => {
                NftObject::Table(parse_nlas(attrs).context(context)?)
            }
            MsgType::NewChain | MsgType::GetChain | MsgType::DelChain => {
                NftObject::Chain(parse_nlas(attrs).context(context)?)
            }
            MsgType::NewRule | MsgType::GetRule | MsgType::DelRule => {
                NftObject::Rule(parse_nlas(attrs).context(context)?)
            }
            MsgType::NewSet | MsgType::GetSet | MsgType::DelSet => {
                NftObject::Set(parse_nlas(attrs).context(context)?)
            }
            MsgType::NewSetElem | MsgType::GetSetElem | MsgType::DelSetElem => {
                NftObject::SetElems(parse_nlas(attrs).context(context)?)
            }
            MsgType::NewGen | MsgType::GetGen => {
                NftObject::Gen(parse_nlas(attrs).context(context)?)
            }
            _ => NftObject::Other(
                NlasIterator::new(attrs)
                    .map(|nla| DefaultNla::parse(&nla?))
                    .collect::<Result<_, _>>()
                    .context(context)?,
            ),
        };
        Ok(NftMessage {
            msg_type,
            flags: flags & !(NLM_F_REQUEST | NLM_F_ACK),
            family: header[0].into(),
            // header[1] is the version, NFNETLINK_V0.
            res_id: u16::from_be_bytes([header[2], header[3]]),
            object,
        })
    }

    /// The name of the object, for errors: `"svcptest/service-ips"`, `"svcptest/services
    /// handle 15"`.
    pub fn describe_object(&self) -> String {
        fn join(parts: &[Option<&str>]) -> String {
            parts
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
                .join("/")
        }
        match &self.object {
            NftObject::Table(attrs) => join(&[attrs.iter().find_map(|a| match a {
                TableAttr::Name(n) => Some(n.as_str()),
                _ => None,
            })]),
            NftObject::Chain(attrs) => {
                let mut parts = [None, None];
                for a in attrs {
                    match a {
                        ChainAttr::Table(t) => parts[0] = Some(t.as_str()),
                        ChainAttr::Name(n) => parts[1] = Some(n.as_str()),
                        _ => {}
                    }
                }
                join(&parts)
            }
            NftObject::Rule(attrs) => {
                let mut parts = [None, None];
                let mut handle = None;
                for a in attrs {
                    match a {
                        RuleAttr::Table(t) => parts[0] = Some(t.as_str()),
                        RuleAttr::Chain(c) => parts[1] = Some(c.as_str()),
                        RuleAttr::Handle(h) => handle = Some(*h),
                        _ => {}
                    }
                }
                let name = join(&parts);
                match handle {
                    Some(h) => format!("{name} handle {h}"),
                    None => name,
                }
            }
            NftObject::Set(attrs) => {
                let mut parts = [None, None];
                for a in attrs {
                    match a {
                        SetAttr::Table(t) => parts[0] = Some(t.as_str()),
                        SetAttr::Name(n) => parts[1] = Some(n.as_str()),
                        _ => {}
                    }
                }
                join(&parts)
            }
            NftObject::SetElems(attrs) => {
                let mut parts = [None, None];
                let mut count = 0;
                for a in attrs {
                    match a {
                        SetElemListAttr::Table(t) => parts[0] = Some(t.as_str()),
                        SetElemListAttr::Set(s) => parts[1] = Some(s.as_str()),
                        SetElemListAttr::Elements(e) => count += e.len(),
                        SetElemListAttr::Other(nla) if is_encoded_elements(nla) => {
                            let mut list = vec![0; nla.value_len()];
                            nla.emit_value(&mut list);
                            count += NlasIterator::new(&list[..]).count();
                        }
                        _ => {}
                    }
                }
                format!("{} ({count} elements)", join(&parts))
            }
            NftObject::Gen(_) | NftObject::Other(_) => String::new(),
        }
    }

    /// Messages of `msg_type` (`NewSetElem`, `DelSetElem`) carrying `elements` of `set`,
    /// as many as needed for each element list to stay within [`MAX_ATTRIBUTE_BYTES`]
    /// (`nla_len` is 16 bits; `nft` splits the same way). Order is kept.
    pub fn set_elements(
        msg_type: MsgType,
        family: ProtoFamily,
        table: &str,
        set: &str,
        elements: Vec<Vec<SetElemAttr>>,
    ) -> Vec<NftMessage> {
        /// Room left for the list's own header and slack.
        const BUDGET: usize = MAX_ATTRIBUTE_BYTES - 1024;
        let message = |chunk: Vec<Vec<SetElemAttr>>| {
            NftMessage::new(
                msg_type,
                family,
                NftObject::SetElems(vec![
                    SetElemListAttr::Table(table.to_owned()),
                    SetElemListAttr::Set(set.to_owned()),
                    SetElemListAttr::Elements(chunk),
                ]),
            )
        };
        let mut out = Vec::new();
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for element in elements {
            // The element's own nest header, then its attributes.
            let len = 4 + element.as_slice().buffer_len();
            if bytes + len > BUDGET && !chunk.is_empty() {
                out.push(message(std::mem::take(&mut chunk)));
                bytes = 0;
            }
            bytes += len;
            chunk.push(element);
        }
        if !chunk.is_empty() || out.is_empty() {
            out.push(message(chunk));
        }
        out
    }

    /// [`NftMessage::set_elements`], with each element list written out into its bytes as
    /// it fills (a [`SetElemListAttr::Other`] of type `NFTA_SET_ELEM_LIST_ELEMENTS`,
    /// nested): the same bytes on the wire, but an element costs its encoded size (about 60
    /// bytes) instead of its attribute vectors (several allocations each), and `elements`
    /// is consumed one at a time. For transactions of hundreds of thousands of elements,
    /// where the attribute form would hold gigabytes at once.
    pub fn set_elements_encoded(
        msg_type: MsgType,
        family: ProtoFamily,
        table: &str,
        set: &str,
        elements: impl IntoIterator<Item = Vec<SetElemAttr>>,
    ) -> Vec<NftMessage> {
        /// Room left for the list's own header and slack.
        const BUDGET: usize = MAX_ATTRIBUTE_BYTES - 1024;
        let message = |list: Vec<u8>| {
            NftMessage::new(
                msg_type,
                family,
                NftObject::SetElems(vec![
                    SetElemListAttr::Table(table.to_owned()),
                    SetElemListAttr::Set(set.to_owned()),
                    SetElemListAttr::Other(DefaultNla::new(
                        NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED,
                        list,
                    )),
                ]),
            )
        };
        let mut out = Vec::new();
        let mut list: Vec<u8> = Vec::new();
        // Elements are numbered from 1 in each list, as in the attribute form.
        let mut number: u16 = 0;
        for element in elements {
            let len = Numbered(number + 1, element.as_slice()).buffer_len();
            if list.len() + len > BUDGET && number > 0 {
                out.push(message(std::mem::take(&mut list)));
                number = 0;
            }
            number += 1;
            let start = list.len();
            list.resize(start + len, 0);
            Numbered(number, element.as_slice()).emit(&mut list[start..]);
        }
        if number > 0 || out.is_empty() {
            out.push(message(list));
        }
        out
    }

    /// The first top-level attribute too large for `nla_len` (16 bits), as (type, bytes);
    /// nested attributes are smaller than their parent, so this covers them too. Such a
    /// message cannot be encoded.
    pub fn oversized_attribute(&self) -> Option<(u16, usize)> {
        fn first<T: Nla>(attrs: &[T]) -> Option<(u16, usize)> {
            attrs
                .iter()
                .map(|a| (a.kind() & !NLA_F_NESTED, a.buffer_len()))
                .find(|(_, len)| *len > MAX_ATTRIBUTE_BYTES)
        }
        match &self.object {
            NftObject::Table(a) => first(a),
            NftObject::Chain(a) => first(a),
            NftObject::Rule(a) => first(a),
            NftObject::Set(a) => first(a),
            NftObject::SetElems(a) => first(a),
            NftObject::Gen(a) => first(a),
            NftObject::Other(a) => first(a),
        }
    }

    fn attrs_len(&self) -> usize {
        match &self.object {
            NftObject::Table(a) => a.as_slice().buffer_len(),
            NftObject::Chain(a) => a.as_slice().buffer_len(),
            NftObject::Rule(a) => a.as_slice().buffer_len(),
            NftObject::Set(a) => a.as_slice().buffer_len(),
            NftObject::SetElems(a) => a.as_slice().buffer_len(),
            NftObject::Gen(a) => a.as_slice().buffer_len(),
            NftObject::Other(a) => a.as_slice().buffer_len(),
        }
    }
}

/// The payload after `nlmsghdr`: `struct nfgenmsg`, then the attributes.
impl Emitable for NftMessage {
    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.attrs_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        buffer[0] = self.family.into();
        buffer[1] = NFNETLINK_V0;
        buffer[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        let attrs = &mut buffer[NFGENMSG_LEN..];
        match &self.object {
            NftObject::Table(a) => a.as_slice().emit(attrs),
            NftObject::Chain(a) => a.as_slice().emit(attrs),
            NftObject::Rule(a) => a.as_slice().emit(attrs),
            NftObject::Set(a) => a.as_slice().emit(attrs),
            NftObject::SetElems(a) => a.as_slice().emit(attrs),
            NftObject::Gen(a) => a.as_slice().emit(attrs),
            NftObject::Other(a) => a.as_slice().emit(attrs),
        }
    }
}

/// A whole netlink message: `nlmsghdr` (length, type, `NLM_F_REQUEST | flags`, sequence
/// number and port 0, which the sender overwrites) and the payload.
///
/// # Panics
/// On a message with an attribute over [`MAX_ATTRIBUTE_BYTES`]
/// ([`NftMessage::oversized_attribute`]; [`super::NftSocket::transaction`] refuses those
/// before encoding).
impl netlink_transport::Request for NftMessage {
    fn emit_message(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let len = NLMSG_HDRLEN + self.buffer_len();
        out.resize(start + len, 0);
        let header = &mut out[start..start + NLMSG_HDRLEN];
        header[0..4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        header[4..6].copy_from_slice(&u16::from(self.msg_type).to_ne_bytes());
        header[6..8].copy_from_slice(&(NLM_F_REQUEST | self.flags).to_ne_bytes());
        // seq (8..12) and pid (12..16) stay 0.
        self.emit(&mut out[start + NLMSG_HDRLEN..start + len]);
    }

    fn describe(&self) -> String {
        let object = self.describe_object();
        if object.is_empty() {
            self.msg_type.name()
        } else {
            format!("{} {object}", self.msg_type.name())
        }
    }
}

/// Whether `nla` is an element list kept as bytes ([`NftMessage::set_elements_encoded`]).
fn is_encoded_elements(nla: &DefaultNla) -> bool {
    nla.kind() & !NLA_F_NESTED == NFTA_SET_ELEM_LIST_ELEMENTS
}
