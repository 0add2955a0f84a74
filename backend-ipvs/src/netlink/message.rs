//! The IPVS generic-netlink message: a command and its top-level attributes.

use netlink_packet_core::{
    emit_u32, parse_u32, DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer,
    NlasIterator, Parseable, ParseableParametrized, NLA_F_NESTED,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::{
    constants::*,
    dest::DestAttr,
    service::ServiceAttr,
    stats::{parse_nested, parse_nested_except},
};

/// An IPVS command (the generic-netlink header's `cmd`, `IPVS_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpvsCmd {
    /// `IPVS_CMD_NEW_SERVICE`: add service; also the command of service dump replies.
    NewService,
    /// `IPVS_CMD_SET_SERVICE`: modify service.
    SetService,
    /// `IPVS_CMD_DEL_SERVICE`: delete service.
    DelService,
    /// `IPVS_CMD_GET_SERVICE`: get service info (one, or all with `NLM_F_DUMP`).
    GetService,
    /// `IPVS_CMD_NEW_DEST`: add destination; also the command of destination dump replies.
    NewDest,
    /// `IPVS_CMD_SET_DEST`: modify destination.
    SetDest,
    /// `IPVS_CMD_DEL_DEST`: delete destination.
    DelDest,
    /// `IPVS_CMD_GET_DEST`: get destination info (dump only).
    GetDest,
    /// `IPVS_CMD_NEW_DAEMON`: start sync daemon.
    NewDaemon,
    /// `IPVS_CMD_DEL_DAEMON`: stop sync daemon.
    DelDaemon,
    /// `IPVS_CMD_GET_DAEMON`: get sync daemon status.
    GetDaemon,
    /// `IPVS_CMD_SET_CONFIG`: set config settings (timeouts); also the reply to `GetConfig`.
    SetConfig,
    /// `IPVS_CMD_GET_CONFIG`: get config settings.
    GetConfig,
    /// `IPVS_CMD_SET_INFO`: only used in the `GetInfo` reply.
    SetInfo,
    /// `IPVS_CMD_GET_INFO`: get general IPVS info.
    GetInfo,
    /// `IPVS_CMD_ZERO`: zero all counters and stats.
    Zero,
    /// `IPVS_CMD_FLUSH`: flush services and dests.
    Flush,
    /// Any other command number.
    Other(u8),
}

impl From<u8> for IpvsCmd {
    fn from(value: u8) -> Self {
        use IpvsCmd::*;
        match value {
            IPVS_CMD_NEW_SERVICE => NewService,
            IPVS_CMD_SET_SERVICE => SetService,
            IPVS_CMD_DEL_SERVICE => DelService,
            IPVS_CMD_GET_SERVICE => GetService,
            IPVS_CMD_NEW_DEST => NewDest,
            IPVS_CMD_SET_DEST => SetDest,
            IPVS_CMD_DEL_DEST => DelDest,
            IPVS_CMD_GET_DEST => GetDest,
            IPVS_CMD_NEW_DAEMON => NewDaemon,
            IPVS_CMD_DEL_DAEMON => DelDaemon,
            IPVS_CMD_GET_DAEMON => GetDaemon,
            IPVS_CMD_SET_CONFIG => SetConfig,
            IPVS_CMD_GET_CONFIG => GetConfig,
            IPVS_CMD_SET_INFO => SetInfo,
            IPVS_CMD_GET_INFO => GetInfo,
            IPVS_CMD_ZERO => Zero,
            IPVS_CMD_FLUSH => Flush,
            other => Other(other),
        }
    }
}

impl From<IpvsCmd> for u8 {
    fn from(value: IpvsCmd) -> Self {
        use IpvsCmd::*;
        match value {
            NewService => IPVS_CMD_NEW_SERVICE,
            SetService => IPVS_CMD_SET_SERVICE,
            DelService => IPVS_CMD_DEL_SERVICE,
            GetService => IPVS_CMD_GET_SERVICE,
            NewDest => IPVS_CMD_NEW_DEST,
            SetDest => IPVS_CMD_SET_DEST,
            DelDest => IPVS_CMD_DEL_DEST,
            GetDest => IPVS_CMD_GET_DEST,
            NewDaemon => IPVS_CMD_NEW_DAEMON,
            DelDaemon => IPVS_CMD_DEL_DAEMON,
            GetDaemon => IPVS_CMD_GET_DAEMON,
            SetConfig => IPVS_CMD_SET_CONFIG,
            GetConfig => IPVS_CMD_GET_CONFIG,
            SetInfo => IPVS_CMD_SET_INFO,
            GetInfo => IPVS_CMD_GET_INFO,
            Zero => IPVS_CMD_ZERO,
            Flush => IPVS_CMD_FLUSH,
            Other(other) => other,
        }
    }
}

/// A top-level attribute of an IPVS message.
///
/// Trap: the reply to `IPVS_CMD_GET_INFO` (command `IPVS_CMD_SET_INFO`) reuses numbers 1 and 2
/// for `IPVS_INFO_ATTR_*` at the top level, where every other command has
/// `IPVS_CMD_ATTR_SERVICE`/`_DEST`. Parsing therefore takes the command as a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsAttr {
    /// `IPVS_CMD_ATTR_SERVICE`: nested service attribute.
    Service(Vec<ServiceAttr>),
    /// `IPVS_CMD_ATTR_DEST`: nested destination attribute.
    Dest(Vec<DestAttr>),
    /// `IPVS_CMD_ATTR_DAEMON`: nested sync daemon attribute (we never manage sync daemons,
    /// so its `IPVS_DAEMON_ATTR_*` are kept raw).
    Daemon(Vec<DefaultNla>),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP`: TCP connection timeout, in seconds.
    TimeoutTcp(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP_FIN`: TCP FIN wait timeout, in seconds.
    TimeoutTcpFin(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_UDP`: UDP timeout, in seconds.
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION`: IPVS version number (`0x010201` is 1.2.1), `SetInfo` only.
    InfoVersion(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE`: size of connection hash table, `SetInfo` only.
    InfoConnTabSize(u32),
    /// Any other attribute, kept as it came.
    Other(DefaultNla),
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        use IpvsAttr::*;
        match self {
            Service(attrs) => attrs.as_slice().buffer_len(),
            Dest(attrs) => attrs.as_slice().buffer_len(),
            Daemon(attrs) => attrs.as_slice().buffer_len(),
            TimeoutTcp(_) | TimeoutTcpFin(_) | TimeoutUdp(_) | InfoVersion(_)
            | InfoConnTabSize(_) => 4,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use IpvsAttr::*;
        match self {
            Service(_) => IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
            Dest(_) => IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
            Daemon(_) => IPVS_CMD_ATTR_DAEMON | NLA_F_NESTED,
            TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            InfoVersion(_) => IPVS_INFO_ATTR_VERSION,
            InfoConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use IpvsAttr::*;
        match self {
            Service(attrs) => attrs.as_slice().emit(buffer),
            Dest(attrs) => attrs.as_slice().emit(buffer),
            Daemon(attrs) => attrs.as_slice().emit(buffer),
            TimeoutTcp(v) | TimeoutTcpFin(v) | TimeoutUdp(v) | InfoVersion(v)
            | InfoConnTabSize(v) => emit_u32(buffer, *v).expect("sized by value_len"),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> ParseableParametrized<NlaBuffer<&'a T>, IpvsCmd> for IpvsAttr {
    fn parse_with_param(buf: &NlaBuffer<&'a T>, cmd: IpvsCmd) -> Result<Self, DecodeError> {
        IpvsAttr::parse_in(buf, cmd, Statistics::Decode)
    }
}

/// Whether a parse decodes the traffic statistics of services and destinations
/// (`IPVS_SVC_ATTR_STATS[64]`, `IPVS_DEST_ATTR_STATS[64]`) or steps over them unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Statistics {
    /// Decoded into `ServiceAttr::Stats[64]` and `DestAttr::Stats[64]`.
    Decode,
    /// Left out of the result: what dumps are read with ([`IpvsMessage::parse_without_stats`]).
    Skip,
}

impl Statistics {
    /// The attribute kinds to step over among `stats_kinds`, a nest's statistics.
    fn skipped(self, stats_kinds: &'static [u16]) -> &'static [u16] {
        match self {
            Statistics::Decode => &[],
            Statistics::Skip => stats_kinds,
        }
    }
}

impl IpvsAttr {
    /// One top-level attribute of a message of `cmd`, its statistics as `statistics` says.
    fn parse_in<T: AsRef<[u8]> + ?Sized>(
        buf: &NlaBuffer<&T>,
        cmd: IpvsCmd,
        statistics: Statistics,
    ) -> Result<Self, DecodeError> {
        use IpvsAttr::*;
        const SERVICE_STATS: [u16; 2] = [IPVS_SVC_ATTR_STATS, IPVS_SVC_ATTR_STATS64];
        const DEST_STATS: [u16; 2] = [IPVS_DEST_ATTR_STATS, IPVS_DEST_ATTR_STATS64];
        let payload = buf.value();
        if cmd == IpvsCmd::SetInfo {
            return Ok(match buf.kind() {
                IPVS_INFO_ATTR_VERSION => {
                    InfoVersion(parse_u32(payload).context("invalid IPVS_INFO_ATTR_VERSION")?)
                }
                IPVS_INFO_ATTR_CONN_TAB_SIZE => InfoConnTabSize(
                    parse_u32(payload).context("invalid IPVS_INFO_ATTR_CONN_TAB_SIZE")?,
                ),
                _ => Other(DefaultNla::parse(buf).context("invalid IPVS info attribute")?),
            });
        }
        Ok(match buf.kind() {
            IPVS_CMD_ATTR_SERVICE => Service(parse_nested_except(
                payload,
                statistics.skipped(&SERVICE_STATS),
                "invalid IPVS_CMD_ATTR_SERVICE",
            )?),
            IPVS_CMD_ATTR_DEST => Dest(parse_nested_except(
                payload,
                statistics.skipped(&DEST_STATS),
                "invalid IPVS_CMD_ATTR_DEST",
            )?),
            IPVS_CMD_ATTR_DAEMON => Daemon(parse_nested(payload, "invalid IPVS_CMD_ATTR_DAEMON")?),
            IPVS_CMD_ATTR_TIMEOUT_TCP => {
                TimeoutTcp(parse_u32(payload).context("invalid IPVS_CMD_ATTR_TIMEOUT_TCP")?)
            }
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => {
                TimeoutTcpFin(parse_u32(payload).context("invalid IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")?)
            }
            IPVS_CMD_ATTR_TIMEOUT_UDP => {
                TimeoutUdp(parse_u32(payload).context("invalid IPVS_CMD_ATTR_TIMEOUT_UDP")?)
            }
            _ => Other(DefaultNla::parse(buf).context("invalid IPVS attribute")?),
        })
    }
}

/// An IPVS generic-netlink message: the payload after the `genlmsghdr`.
///
/// Wrap it in `GenlMessage` and `NetlinkMessage` to send it; the family id is resolved at run
/// time ([`super::socket::IpvsSocket`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub cmd: IpvsCmd,
    /// The top-level attributes.
    pub attrs: Vec<IpvsAttr>,
}

impl IpvsMessage {
    /// A message of `cmd` with `attrs`.
    pub fn new(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> Self {
        IpvsMessage { cmd, attrs }
    }

    /// Parses a reply as [`ParseableParametrized::parse_with_param`] does, but steps over the
    /// traffic statistics of services and destinations (`IPVS_SVC_ATTR_STATS[64]`,
    /// `IPVS_DEST_ATTR_STATS[64]`), which are left out of the result.
    ///
    /// Why: dumps are read for what the kernel holds, and the dataplane never reads the
    /// counters, yet they are most of a dumped destination: two nests of ten counters each.
    /// Decoding them was a third of a warm resync's user-space instructions at 1,000 x 10
    /// (`scripts/bench-ipvs-instructions`).
    pub fn parse_without_stats(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        IpvsMessage::parse_in(buf, header, Statistics::Skip)
    }

    /// The message after the `genlmsghdr` `header`, its statistics as `statistics` says.
    pub(crate) fn parse_in(
        buf: &[u8],
        header: GenlHeader,
        statistics: Statistics,
    ) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from(header.cmd);
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| IpvsAttr::parse_in(&nla, cmd, statistics)))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("invalid IPVS message (command {cmd:?})"))?;
        Ok(IpvsMessage { cmd, attrs })
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        IpvsMessage::parse_in(buf, header, Statistics::Decode)
    }
}
