//! Numbers of the IPVS generic-netlink interface, named as in the kernel header
//! `include/uapi/linux/ip_vs.h`, each with the header's own comment.
//!
//! The whole interface is mirrored, including what we never send (sync daemon, tunnels), so a
//! dump that carries those attributes is still understood; unused ones are allowed below.
#![allow(dead_code)]

/// Generic Netlink family info
pub(crate) const IPVS_GENL_NAME: &str = "IPVS";
pub(crate) const IPVS_GENL_VERSION: u8 = 0x1;

// === Virtual Service Flags ===
pub(crate) const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001; /* persistent port */
pub(crate) const IP_VS_SVC_F_HASHED: u32 = 0x0002; /* hashed entry */
pub(crate) const IP_VS_SVC_F_ONEPACKET: u32 = 0x0004; /* one-packet scheduling */
pub(crate) const IP_VS_SVC_F_SCHED1: u32 = 0x0008; /* scheduler flag 1 */
pub(crate) const IP_VS_SVC_F_SCHED2: u32 = 0x0010; /* scheduler flag 2 */
pub(crate) const IP_VS_SVC_F_SCHED3: u32 = 0x0020; /* scheduler flag 3 */
pub(crate) const IP_VS_SVC_F_SCHED_SH_FALLBACK: u32 = IP_VS_SVC_F_SCHED1; /* SH fallback */
pub(crate) const IP_VS_SVC_F_SCHED_SH_PORT: u32 = IP_VS_SVC_F_SCHED2; /* SH use port */

// === IPVS Connection Flags (the forwarding methods a destination uses) ===
pub(crate) const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007; /* mask for the fwd methods */
pub(crate) const IP_VS_CONN_F_MASQ: u32 = 0x0000; /* masquerading/NAT */
pub(crate) const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001; /* local node */
pub(crate) const IP_VS_CONN_F_TUNNEL: u32 = 0x0002; /* tunneling */
pub(crate) const IP_VS_CONN_F_DROUTE: u32 = 0x0003; /* direct routing */
pub(crate) const IP_VS_CONN_F_BYPASS: u32 = 0x0004; /* cache bypass */

/// Scheduler names are at most this long, NUL included.
pub(crate) const IP_VS_SCHEDNAME_MAXLEN: usize = 16;
/// Persistence engine names are at most this long, NUL included.
pub(crate) const IP_VS_PENAME_MAXLEN: usize = 16;

// === Generic Netlink command attributes (the genlmsghdr `cmd`) ===
pub(crate) const IPVS_CMD_UNSPEC: u8 = 0;
pub(crate) const IPVS_CMD_NEW_SERVICE: u8 = 1; /* add service */
pub(crate) const IPVS_CMD_SET_SERVICE: u8 = 2; /* modify service */
pub(crate) const IPVS_CMD_DEL_SERVICE: u8 = 3; /* delete service */
pub(crate) const IPVS_CMD_GET_SERVICE: u8 = 4; /* get service info */
pub(crate) const IPVS_CMD_NEW_DEST: u8 = 5; /* add destination */
pub(crate) const IPVS_CMD_SET_DEST: u8 = 6; /* modify destination */
pub(crate) const IPVS_CMD_DEL_DEST: u8 = 7; /* delete destination */
pub(crate) const IPVS_CMD_GET_DEST: u8 = 8; /* get destination info */
pub(crate) const IPVS_CMD_NEW_DAEMON: u8 = 9; /* start sync daemon */
pub(crate) const IPVS_CMD_DEL_DAEMON: u8 = 10; /* stop sync daemon */
pub(crate) const IPVS_CMD_GET_DAEMON: u8 = 11; /* get sync daemon status */
pub(crate) const IPVS_CMD_SET_CONFIG: u8 = 12; /* set config settings */
pub(crate) const IPVS_CMD_GET_CONFIG: u8 = 13; /* get config settings */
pub(crate) const IPVS_CMD_SET_INFO: u8 = 14; /* only used in GET_INFO reply */
pub(crate) const IPVS_CMD_GET_INFO: u8 = 15; /* get general IPVS info */
pub(crate) const IPVS_CMD_ZERO: u8 = 16; /* zero all counters and stats */
pub(crate) const IPVS_CMD_FLUSH: u8 = 17; /* flush services and dests */

// === Attributes used in the first level of commands ===
pub(crate) const IPVS_CMD_ATTR_UNSPEC: u16 = 0;
pub(crate) const IPVS_CMD_ATTR_SERVICE: u16 = 1; /* nested service attribute */
pub(crate) const IPVS_CMD_ATTR_DEST: u16 = 2; /* nested destination attribute */
pub(crate) const IPVS_CMD_ATTR_DAEMON: u16 = 3; /* nested sync daemon attribute */
pub(crate) const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4; /* TCP connection timeout */
pub(crate) const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5; /* TCP FIN wait timeout */
pub(crate) const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6; /* UDP timeout */

// === Attributes used to describe a service (inside IPVS_CMD_ATTR_SERVICE) ===
pub(crate) const IPVS_SVC_ATTR_UNSPEC: u16 = 0;
pub(crate) const IPVS_SVC_ATTR_AF: u16 = 1; /* address family */
pub(crate) const IPVS_SVC_ATTR_PROTOCOL: u16 = 2; /* virtual service protocol */
pub(crate) const IPVS_SVC_ATTR_ADDR: u16 = 3; /* virtual service address */
pub(crate) const IPVS_SVC_ATTR_PORT: u16 = 4; /* virtual service port */
pub(crate) const IPVS_SVC_ATTR_FWMARK: u16 = 5; /* firewall mark of service */
pub(crate) const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6; /* name of scheduler */
pub(crate) const IPVS_SVC_ATTR_FLAGS: u16 = 7; /* virtual service flags */
pub(crate) const IPVS_SVC_ATTR_TIMEOUT: u16 = 8; /* persistent timeout */
pub(crate) const IPVS_SVC_ATTR_NETMASK: u16 = 9; /* persistent netmask */
pub(crate) const IPVS_SVC_ATTR_STATS: u16 = 10; /* nested attribute for service stats */
pub(crate) const IPVS_SVC_ATTR_PE_NAME: u16 = 11; /* name of ct retriever */
pub(crate) const IPVS_SVC_ATTR_STATS64: u16 = 12; /* nested attribute for service stats */

// === Attributes used to describe a destination (inside IPVS_CMD_ATTR_DEST) ===
pub(crate) const IPVS_DEST_ATTR_UNSPEC: u16 = 0;
pub(crate) const IPVS_DEST_ATTR_ADDR: u16 = 1; /* real server address */
pub(crate) const IPVS_DEST_ATTR_PORT: u16 = 2; /* real server port */
pub(crate) const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3; /* forwarding method */
pub(crate) const IPVS_DEST_ATTR_WEIGHT: u16 = 4; /* destination weight */
pub(crate) const IPVS_DEST_ATTR_U_THRESH: u16 = 5; /* upper threshold */
pub(crate) const IPVS_DEST_ATTR_L_THRESH: u16 = 6; /* lower threshold */
pub(crate) const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7; /* active connections */
pub(crate) const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8; /* inactive connections */
pub(crate) const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9; /* persistent connections */
pub(crate) const IPVS_DEST_ATTR_STATS: u16 = 10; /* nested attribute for dest stats */
pub(crate) const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11; /* Address family of address */
pub(crate) const IPVS_DEST_ATTR_STATS64: u16 = 12; /* nested attribute for dest stats */
pub(crate) const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13; /* tunnel type */
pub(crate) const IPVS_DEST_ATTR_TUN_PORT: u16 = 14; /* tunnel port */
pub(crate) const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15; /* tunnel flags */

// === Attributes describing a sync daemon (inside IPVS_CMD_ATTR_DAEMON) ===
pub(crate) const IPVS_DAEMON_ATTR_UNSPEC: u16 = 0;
pub(crate) const IPVS_DAEMON_ATTR_STATE: u16 = 1; /* sync daemon state (master/backup) */
pub(crate) const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2; /* multicast interface name */
pub(crate) const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3; /* SyncID we belong to */
pub(crate) const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4; /* UDP Payload Size */
pub(crate) const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5; /* IPv4 Multicast Address */
pub(crate) const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6; /* IPv6 Multicast Address */
pub(crate) const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7; /* Multicast Port (base) */
pub(crate) const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8; /* Multicast TTL */

// === Attributes of service or destination statistics (inside *_ATTR_STATS and *_ATTR_STATS64) ===
pub(crate) const IPVS_STATS_ATTR_UNSPEC: u16 = 0;
pub(crate) const IPVS_STATS_ATTR_CONNS: u16 = 1; /* connections scheduled */
pub(crate) const IPVS_STATS_ATTR_INPKTS: u16 = 2; /* incoming packets */
pub(crate) const IPVS_STATS_ATTR_OUTPKTS: u16 = 3; /* outgoing packets */
pub(crate) const IPVS_STATS_ATTR_INBYTES: u16 = 4; /* incoming bytes */
pub(crate) const IPVS_STATS_ATTR_OUTBYTES: u16 = 5; /* outgoing bytes */
pub(crate) const IPVS_STATS_ATTR_CPS: u16 = 6; /* current connection rate */
pub(crate) const IPVS_STATS_ATTR_INPPS: u16 = 7; /* current in packet rate */
pub(crate) const IPVS_STATS_ATTR_OUTPPS: u16 = 8; /* current out packet rate */
pub(crate) const IPVS_STATS_ATTR_INBPS: u16 = 9; /* current in byte rate */
pub(crate) const IPVS_STATS_ATTR_OUTBPS: u16 = 10; /* current out byte rate */
pub(crate) const IPVS_STATS_ATTR_PAD: u16 = 11;

// === Attributes used in response to IPVS_CMD_GET_INFO command ===
pub(crate) const IPVS_INFO_ATTR_UNSPEC: u16 = 0;
pub(crate) const IPVS_INFO_ATTR_VERSION: u16 = 1; /* IPVS version number */
pub(crate) const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2; /* size of connection hash table */

// === Address families and protocols (include/linux/socket.h, include/uapi/linux/in.h) ===
pub(crate) const AF_INET: u16 = 2;
pub(crate) const AF_INET6: u16 = 10;
pub(crate) const IPPROTO_TCP: u16 = 6;
pub(crate) const IPPROTO_UDP: u16 = 17;
pub(crate) const IPPROTO_SCTP: u16 = 132;
