//! The numbers of `include/uapi/linux/netfilter/ipset/ip_set.h` and `nfnetlink.h` we use, under
//! the headers' names, each with the header's own comment.
#![allow(dead_code)] // The whole command and attribute tables, as in the header.

// === nfnetlink (`include/uapi/linux/netfilter/nfnetlink.h`) ===

/// `NFNL_SUBSYS_IPSET`: the high byte of `nlmsg_type`; the low byte is the command.
pub const NFNL_SUBSYS_IPSET: u16 = 6;
/// `NFNETLINK_V0`: `nfgenmsg.version`.
pub const NFNETLINK_V0: u8 = 0;

// === netlink flags (`include/uapi/linux/netlink.h`) ===

/// `NLM_F_EXCL`: "do not touch, if it exists". ipset's kernel side reads its absence as
/// `IPSET_FLAG_EXIST` (`flag_exist()` in `net/netfilter/ipset/ip_set_core.c`).
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`: "create, if it does not exist".
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_CAPPED`: an ACK or error that does not echo the request's payload.
pub const NLM_F_CAPPED: u16 = 0x100;

// === address families (`include/linux/socket.h`) ===

/// `AF_INET` / `NFPROTO_IPV4`.
pub const AF_INET: u8 = 2;
/// `AF_INET6` / `NFPROTO_IPV6`.
pub const AF_INET6: u8 = 10;

// === ip_set.h ===

/// `IPSET_PROTOCOL`: the protocol version we speak best.
pub const IPSET_PROTOCOL: u8 = 7;
/// `IPSET_PROTOCOL_MIN`: the oldest protocol version a kernel of protocol 7 accepts.
pub const IPSET_PROTOCOL_MIN: u8 = 6;
/// `IPSET_MAXNAMELEN`: the max length of strings including NUL: set and type identifiers.
pub const IPSET_MAXNAMELEN: usize = 32;

/// `IPSET_CMD_PROTOCOL`: 1: Return protocol version.
pub const IPSET_CMD_PROTOCOL: u8 = 1;
/// `IPSET_CMD_CREATE`: 2: Create a new (empty) set.
pub const IPSET_CMD_CREATE: u8 = 2;
/// `IPSET_CMD_DESTROY`: 3: Destroy a (empty) set.
pub const IPSET_CMD_DESTROY: u8 = 3;
/// `IPSET_CMD_FLUSH`: 4: Remove all elements from a set.
pub const IPSET_CMD_FLUSH: u8 = 4;
/// `IPSET_CMD_RENAME`: 5: Rename a set.
pub const IPSET_CMD_RENAME: u8 = 5;
/// `IPSET_CMD_SWAP`: 6: Swap two sets.
pub const IPSET_CMD_SWAP: u8 = 6;
/// `IPSET_CMD_LIST`: 7: List sets.
pub const IPSET_CMD_LIST: u8 = 7;
/// `IPSET_CMD_SAVE`: 8: Save sets.
pub const IPSET_CMD_SAVE: u8 = 8;
/// `IPSET_CMD_ADD`: 9: Add an element to a set.
pub const IPSET_CMD_ADD: u8 = 9;
/// `IPSET_CMD_DEL`: 10: Delete an element from a set.
pub const IPSET_CMD_DEL: u8 = 10;
/// `IPSET_CMD_TEST`: 11: Test an element in a set.
pub const IPSET_CMD_TEST: u8 = 11;
/// `IPSET_CMD_HEADER`: 12: Get set header data only.
pub const IPSET_CMD_HEADER: u8 = 12;
/// `IPSET_CMD_TYPE`: 13: Get set type.
pub const IPSET_CMD_TYPE: u8 = 13;

// Attributes at command level.
/// `IPSET_ATTR_PROTOCOL`: 1: Protocol version.
pub const IPSET_ATTR_PROTOCOL: u16 = 1;
/// `IPSET_ATTR_SETNAME`: 2: Name of the set.
pub const IPSET_ATTR_SETNAME: u16 = 2;
/// `IPSET_ATTR_TYPENAME`: 3: Typename.
pub const IPSET_ATTR_TYPENAME: u16 = 3;
/// `IPSET_ATTR_SETNAME2`: Setname at rename/swap (the number of `IPSET_ATTR_TYPENAME`).
pub const IPSET_ATTR_SETNAME2: u16 = IPSET_ATTR_TYPENAME;
/// `IPSET_ATTR_REVISION`: 4: Settype revision.
pub const IPSET_ATTR_REVISION: u16 = 4;
/// `IPSET_ATTR_FAMILY`: 5: Settype family.
pub const IPSET_ATTR_FAMILY: u16 = 5;
/// `IPSET_ATTR_FLAGS`: 6: Flags at command level.
pub const IPSET_ATTR_FLAGS: u16 = 6;
/// `IPSET_ATTR_DATA`: 7: Nested attributes.
pub const IPSET_ATTR_DATA: u16 = 7;
/// `IPSET_ATTR_ADT`: 8: Multiple data containers.
pub const IPSET_ATTR_ADT: u16 = 8;
/// `IPSET_ATTR_LINENO`: 9: Restore lineno.
pub const IPSET_ATTR_LINENO: u16 = 9;
/// `IPSET_ATTR_PROTOCOL_MIN`: 10: Minimal supported version number.
pub const IPSET_ATTR_PROTOCOL_MIN: u16 = 10;
/// `IPSET_ATTR_REVISION_MIN`: type rev min (the number of `IPSET_ATTR_PROTOCOL_MIN`).
pub const IPSET_ATTR_REVISION_MIN: u16 = IPSET_ATTR_PROTOCOL_MIN;
/// `IPSET_ATTR_INDEX`: 11: Kernel index of set.
pub const IPSET_ATTR_INDEX: u16 = 11;

// CADT specific attributes.
/// `IPSET_ATTR_IP`: 1 (nested: `IPSET_ATTR_IPADDR_*`).
pub const IPSET_ATTR_IP: u16 = 1;
/// `IPSET_ATTR_IP_TO`: 2.
pub const IPSET_ATTR_IP_TO: u16 = 2;
/// `IPSET_ATTR_CIDR`: 3.
pub const IPSET_ATTR_CIDR: u16 = 3;
/// `IPSET_ATTR_PORT`: 4.
pub const IPSET_ATTR_PORT: u16 = 4;
/// `IPSET_ATTR_PORT_TO`: 5.
pub const IPSET_ATTR_PORT_TO: u16 = 5;
/// `IPSET_ATTR_TIMEOUT`: 6.
pub const IPSET_ATTR_TIMEOUT: u16 = 6;
/// `IPSET_ATTR_PROTO`: 7.
pub const IPSET_ATTR_PROTO: u16 = 7;
/// `IPSET_ATTR_CADT_FLAGS`: 8.
pub const IPSET_ATTR_CADT_FLAGS: u16 = 8;
/// `IPSET_ATTR_CADT_LINENO`: 9 (`IPSET_ATTR_LINENO`).
pub const IPSET_ATTR_CADT_LINENO: u16 = IPSET_ATTR_LINENO;
// Create-only specific attributes (after `IPSET_ATTR_CADT_MAX` = 16).
/// `IPSET_ATTR_INITVAL`: was unused `IPSET_ATTR_GC`.
pub const IPSET_ATTR_INITVAL: u16 = 17;
/// `IPSET_ATTR_HASHSIZE`.
pub const IPSET_ATTR_HASHSIZE: u16 = 18;
/// `IPSET_ATTR_MAXELEM`.
pub const IPSET_ATTR_MAXELEM: u16 = 19;
/// `IPSET_ATTR_NETMASK`.
pub const IPSET_ATTR_NETMASK: u16 = 20;
/// `IPSET_ATTR_BUCKETSIZE`: was unused `IPSET_ATTR_PROBES`.
pub const IPSET_ATTR_BUCKETSIZE: u16 = 21;
/// `IPSET_ATTR_RESIZE`.
pub const IPSET_ATTR_RESIZE: u16 = 22;
/// `IPSET_ATTR_SIZE`.
pub const IPSET_ATTR_SIZE: u16 = 23;
/// `IPSET_ATTR_ELEMENTS`: kernel-only.
pub const IPSET_ATTR_ELEMENTS: u16 = 24;
/// `IPSET_ATTR_REFERENCES`: kernel-only.
pub const IPSET_ATTR_REFERENCES: u16 = 25;
/// `IPSET_ATTR_MEMSIZE`: kernel-only.
pub const IPSET_ATTR_MEMSIZE: u16 = 26;
// ADT specific attributes (after `IPSET_ATTR_CADT_MAX` = 16; they share numbers with the
// create-only ones: which applies depends on the command).
/// `IPSET_ATTR_IP2`: 20 (nested, like `IPSET_ATTR_IP`).
pub const IPSET_ATTR_IP2: u16 = 20;
/// `IPSET_ATTR_CIDR2`: 21.
pub const IPSET_ATTR_CIDR2: u16 = 21;

// IP specific attributes.
/// `IPSET_ATTR_IPADDR_IPV4`.
pub const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
/// `IPSET_ATTR_IPADDR_IPV6`.
pub const IPSET_ATTR_IPADDR_IPV6: u16 = 2;

// Flags at command level.
/// `IPSET_FLAG_LIST_SETNAME`: list set names only.
pub const IPSET_FLAG_LIST_SETNAME: u32 = 1 << 1;
/// `IPSET_FLAG_LIST_HEADER`: list set headers only.
pub const IPSET_FLAG_LIST_HEADER: u32 = 1 << 2;

// Error codes (`enum ipset_errno`; the kernel answers their negative).
/// `IPSET_ERR_PRIVATE`.
pub const IPSET_ERR_PRIVATE: i32 = 4096;
/// `IPSET_ERR_PROTOCOL`.
pub const IPSET_ERR_PROTOCOL: i32 = 4097;
/// `IPSET_ERR_FIND_TYPE`.
pub const IPSET_ERR_FIND_TYPE: i32 = 4098;
/// `IPSET_ERR_MAX_SETS`.
pub const IPSET_ERR_MAX_SETS: i32 = 4099;
/// `IPSET_ERR_BUSY`.
pub const IPSET_ERR_BUSY: i32 = 4100;
/// `IPSET_ERR_EXIST_SETNAME2`.
pub const IPSET_ERR_EXIST_SETNAME2: i32 = 4101;
/// `IPSET_ERR_TYPE_MISMATCH`.
pub const IPSET_ERR_TYPE_MISMATCH: i32 = 4102;
/// `IPSET_ERR_EXIST`.
pub const IPSET_ERR_EXIST: i32 = 4103;
/// `IPSET_ERR_INVALID_CIDR`.
pub const IPSET_ERR_INVALID_CIDR: i32 = 4104;
/// `IPSET_ERR_INVALID_NETMASK`.
pub const IPSET_ERR_INVALID_NETMASK: i32 = 4105;
/// `IPSET_ERR_INVALID_FAMILY`.
pub const IPSET_ERR_INVALID_FAMILY: i32 = 4106;
/// `IPSET_ERR_TIMEOUT`.
pub const IPSET_ERR_TIMEOUT: i32 = 4107;
/// `IPSET_ERR_REFERENCED`.
pub const IPSET_ERR_REFERENCED: i32 = 4108;
/// `IPSET_ERR_IPADDR_IPV4`.
pub const IPSET_ERR_IPADDR_IPV4: i32 = 4109;
/// `IPSET_ERR_IPADDR_IPV6`.
pub const IPSET_ERR_IPADDR_IPV6: i32 = 4110;
/// `IPSET_ERR_COUNTER`.
pub const IPSET_ERR_COUNTER: i32 = 4111;
/// `IPSET_ERR_COMMENT`.
pub const IPSET_ERR_COMMENT: i32 = 4112;
/// `IPSET_ERR_INVALID_MARKMASK`.
pub const IPSET_ERR_INVALID_MARKMASK: i32 = 4113;
/// `IPSET_ERR_SKBINFO`.
pub const IPSET_ERR_SKBINFO: i32 = 4114;
/// `IPSET_ERR_TYPE_SPECIFIC`: type specific error codes start here.
pub const IPSET_ERR_TYPE_SPECIFIC: i32 = 4352;
// Hash type specific (`include/uapi/linux/netfilter/ipset/ip_set_hash.h`).
/// `IPSET_ERR_HASH_FULL`: hash is full.
pub const IPSET_ERR_HASH_FULL: i32 = IPSET_ERR_TYPE_SPECIFIC;
/// `IPSET_ERR_HASH_ELEM`: null-valued element.
pub const IPSET_ERR_HASH_ELEM: i32 = IPSET_ERR_TYPE_SPECIFIC + 1;
/// `IPSET_ERR_INVALID_PROTO`: invalid protocol.
pub const IPSET_ERR_INVALID_PROTO: i32 = IPSET_ERR_TYPE_SPECIFIC + 2;
/// `IPSET_ERR_MISSING_PROTO`: protocol missing but must be specified.
pub const IPSET_ERR_MISSING_PROTO: i32 = IPSET_ERR_TYPE_SPECIFIC + 3;
/// `IPSET_ERR_HASH_RANGE_UNSUPPORTED`: range not supported.
pub const IPSET_ERR_HASH_RANGE_UNSUPPORTED: i32 = IPSET_ERR_TYPE_SPECIFIC + 4;
/// `IPSET_ERR_HASH_RANGE`: invalid range.
pub const IPSET_ERR_HASH_RANGE: i32 = IPSET_ERR_TYPE_SPECIFIC + 5;
