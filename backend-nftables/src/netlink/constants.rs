//! Numbers of the nf_tables netlink interface, named as in the kernel headers
//! `include/uapi/linux/netfilter/nf_tables.h` and `nfnetlink.h` (read from the 6.18 headers on
//! the build host), each with the header's own comment.
//!
//! The enums we use are mirrored whole, including values we never send, so that a dump that
//! carries them is still understood; unused ones are allowed below.
#![allow(dead_code)]

// === include/uapi/linux/netfilter/nfnetlink.h ===
/// nfnetlink version of `struct nfgenmsg`.
pub(crate) const NFNETLINK_V0: u8 = 0;
/// The nf_tables subsystem: the high byte of `nlmsg_type`.
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// Batch begin: `NLMSG_MIN_TYPE`. Its `res_id` names the subsystem of the batch.
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// Batch end: `NLMSG_MIN_TYPE + 1`.
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNL_BATCH_GENID`: generation ID for this changeset (`enum nfnl_batch_attributes`).
pub(crate) const NFNL_BATCH_GENID: u16 = 1;

// === include/uapi/linux/netfilter.h: enum nf_inet_hooks and the NFPROTO_ families ===
pub(crate) const NF_INET_PRE_ROUTING: u32 = 0;
pub(crate) const NF_INET_LOCAL_IN: u32 = 1;
pub(crate) const NF_INET_FORWARD: u32 = 2;
pub(crate) const NF_INET_LOCAL_OUT: u32 = 3;
pub(crate) const NF_INET_POST_ROUTING: u32 = 4;
pub(crate) const NF_INET_INGRESS: u32 = 5;
pub(crate) const NFPROTO_UNSPEC: u8 = 0;
pub(crate) const NFPROTO_INET: u8 = 1;
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_ARP: u8 = 3;
pub(crate) const NFPROTO_NETDEV: u8 = 5;
pub(crate) const NFPROTO_BRIDGE: u8 = 7;
pub(crate) const NFPROTO_IPV6: u8 = 10;
/// Responses from hook functions (`NF_DROP`, `NF_ACCEPT`...), the non-negative verdict codes.
pub(crate) const NF_DROP: i32 = 0;
pub(crate) const NF_ACCEPT: i32 = 1;
pub(crate) const NF_STOLEN: i32 = 2;
pub(crate) const NF_QUEUE: i32 = 3;
pub(crate) const NF_REPEAT: i32 = 4;
pub(crate) const NF_STOP: i32 = 5;

// === include/uapi/linux/netfilter/nf_nat.h ===
pub(crate) const NF_NAT_RANGE_MAP_IPS: u32 = 1 << 0;
pub(crate) const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
pub(crate) const NF_NAT_RANGE_PROTO_RANDOM: u32 = 1 << 2;
pub(crate) const NF_NAT_RANGE_PERSISTENT: u32 = 1 << 3;
pub(crate) const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 1 << 4;
pub(crate) const NF_NAT_RANGE_PROTO_OFFSET: u32 = 1 << 5;
pub(crate) const NF_NAT_RANGE_NETMAP: u32 = 1 << 6;

// === include/uapi/linux/netfilter/nf_tables.h ===
pub(crate) const NFT_NAME_MAXLEN: usize = 256;
pub(crate) const NFT_USERDATA_MAXLEN: usize = 256;
pub(crate) const NFT_REG_SIZE: usize = 16;
pub(crate) const NFT_REG32_SIZE: usize = 4;
/// `NFT_DATA_VERDICT`: the data type of a verdict map's values (`enum nft_data_types`).
pub(crate) const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
pub(crate) const NFT_DATA_VALUE_MAXLEN: usize = 64;

// === enum nft_verdicts: nf_tables internal verdicts ===
/// continue evaluation of the current rule
pub(crate) const NFT_CONTINUE: i32 = -1;
/// terminate evaluation of the current rule
pub(crate) const NFT_BREAK: i32 = -2;
/// push the current chain on the jump stack and jump to a chain
pub(crate) const NFT_JUMP: i32 = -3;
/// jump to a chain without pushing the current chain on the jump stack
pub(crate) const NFT_GOTO: i32 = -4;
/// return to the topmost chain on the jump stack
pub(crate) const NFT_RETURN: i32 = -5;

// === enum nft_registers: nf_tables registers ===
pub(crate) const NFT_REG_VERDICT: u32 = 0;
pub(crate) const NFT_REG_1: u32 = 1;
pub(crate) const NFT_REG_2: u32 = 2;
pub(crate) const NFT_REG_3: u32 = 3;
pub(crate) const NFT_REG_4: u32 = 4;
pub(crate) const NFT_REG32_00: u32 = 8;
pub(crate) const NFT_REG32_01: u32 = 9;
pub(crate) const NFT_REG32_02: u32 = 10;
pub(crate) const NFT_REG32_03: u32 = 11;
pub(crate) const NFT_REG32_04: u32 = 12;
pub(crate) const NFT_REG32_05: u32 = 13;
pub(crate) const NFT_REG32_06: u32 = 14;
pub(crate) const NFT_REG32_07: u32 = 15;
pub(crate) const NFT_REG32_08: u32 = 16;
pub(crate) const NFT_REG32_09: u32 = 17;
pub(crate) const NFT_REG32_10: u32 = 18;
pub(crate) const NFT_REG32_11: u32 = 19;
pub(crate) const NFT_REG32_12: u32 = 20;
pub(crate) const NFT_REG32_13: u32 = 21;
pub(crate) const NFT_REG32_14: u32 = 22;
pub(crate) const NFT_REG32_15: u32 = 23;

// === enum nf_tables_msg_types: nf_tables netlink message types ===
/// create a new table (enum nft_table_attributes)
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
/// get a table (enum nft_table_attributes)
pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
/// delete a table (enum nft_table_attributes)
pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
/// create a new chain (enum nft_chain_attributes)
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
/// get a chain (enum nft_chain_attributes)
pub(crate) const NFT_MSG_GETCHAIN: u16 = 4;
/// delete a chain (enum nft_chain_attributes)
pub(crate) const NFT_MSG_DELCHAIN: u16 = 5;
/// create a new rule (enum nft_rule_attributes)
pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
/// get a rule (enum nft_rule_attributes)
pub(crate) const NFT_MSG_GETRULE: u16 = 7;
/// delete a rule (enum nft_rule_attributes)
pub(crate) const NFT_MSG_DELRULE: u16 = 8;
/// create a new set (enum nft_set_attributes)
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
/// get a set (enum nft_set_attributes)
pub(crate) const NFT_MSG_GETSET: u16 = 10;
/// delete a set (enum nft_set_attributes)
pub(crate) const NFT_MSG_DELSET: u16 = 11;
/// create a new set element (enum nft_set_elem_attributes)
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
/// get a set element (enum nft_set_elem_attributes)
pub(crate) const NFT_MSG_GETSETELEM: u16 = 13;
/// delete a set element (enum nft_set_elem_attributes)
pub(crate) const NFT_MSG_DELSETELEM: u16 = 14;
/// announce a new generation, only for events (enum nft_gen_attributes)
pub(crate) const NFT_MSG_NEWGEN: u16 = 15;
/// get the rule-set generation (enum nft_gen_attributes)
pub(crate) const NFT_MSG_GETGEN: u16 = 16;
/// trace event (enum nft_trace_attributes)
pub(crate) const NFT_MSG_TRACE: u16 = 17;
/// create a stateful object (enum nft_obj_attributes)
pub(crate) const NFT_MSG_NEWOBJ: u16 = 18;
/// get a stateful object (enum nft_obj_attributes)
pub(crate) const NFT_MSG_GETOBJ: u16 = 19;
/// delete a stateful object (enum nft_obj_attributes)
pub(crate) const NFT_MSG_DELOBJ: u16 = 20;
/// get and reset a stateful object (enum nft_obj_attributes)
pub(crate) const NFT_MSG_GETOBJ_RESET: u16 = 21;
/// add new flow table (enum nft_flowtable_attributes)
pub(crate) const NFT_MSG_NEWFLOWTABLE: u16 = 22;
/// get flow table (enum nft_flowtable_attributes)
pub(crate) const NFT_MSG_GETFLOWTABLE: u16 = 23;
/// delete flow table (enum nft_flowtable_attributes)
pub(crate) const NFT_MSG_DELFLOWTABLE: u16 = 24;
pub(crate) const NFT_MSG_MAX: u16 = 25;

// === enum nft_list_attributes: nf_tables generic list netlink attributes ===
pub(crate) const NFTA_LIST_UNSPEC: u16 = 0;
/// list element (NLA_NESTED)
pub(crate) const NFTA_LIST_ELEM: u16 = 1;

// === enum nft_hook_attributes: nf_tables netfilter hook netlink attributes ===
pub(crate) const NFTA_HOOK_UNSPEC: u16 = 0;
/// netfilter hook number (NLA_U32)
pub(crate) const NFTA_HOOK_HOOKNUM: u16 = 1;
/// netfilter hook priority (NLA_U32)
pub(crate) const NFTA_HOOK_PRIORITY: u16 = 2;
/// netdevice name (NLA_STRING)
pub(crate) const NFTA_HOOK_DEV: u16 = 3;
/// list of netdevices (NLA_NESTED)
pub(crate) const NFTA_HOOK_DEVS: u16 = 4;

// === enum nft_table_flags: nf_tables table flags ===
/// this table is not active
pub(crate) const NFT_TABLE_F_DORMANT: u32 = 1;
pub(crate) const NFT_TABLE_F_OWNER: u32 = 2;

// === enum nft_table_attributes: nf_tables table netlink attributes ===
pub(crate) const NFTA_TABLE_UNSPEC: u16 = 0;
/// name of the table (NLA_STRING)
pub(crate) const NFTA_TABLE_NAME: u16 = 1;
/// bitmask of enum nft_table_flags (NLA_U32)
pub(crate) const NFTA_TABLE_FLAGS: u16 = 2;
/// number of chains in this table (NLA_U32)
pub(crate) const NFTA_TABLE_USE: u16 = 3;
pub(crate) const NFTA_TABLE_HANDLE: u16 = 4;
pub(crate) const NFTA_TABLE_PAD: u16 = 5;
/// user data (NLA_BINARY)
pub(crate) const NFTA_TABLE_USERDATA: u16 = 6;
/// owner of this table through netlink portID (NLA_U32)
pub(crate) const NFTA_TABLE_OWNER: u16 = 7;

// === enum nft_chain_flags ===
pub(crate) const NFT_CHAIN_BASE: u32 = 1;
pub(crate) const NFT_CHAIN_HW_OFFLOAD: u32 = 2;
pub(crate) const NFT_CHAIN_BINDING: u32 = 4;

// === enum nft_chain_attributes: nf_tables chain netlink attributes ===
pub(crate) const NFTA_CHAIN_UNSPEC: u16 = 0;
/// name of the table containing the chain (NLA_STRING)
pub(crate) const NFTA_CHAIN_TABLE: u16 = 1;
/// numeric handle of the chain (NLA_U64)
pub(crate) const NFTA_CHAIN_HANDLE: u16 = 2;
/// name of the chain (NLA_STRING)
pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
/// hook specification for basechains (NLA_NESTED: nft_hook_attributes)
pub(crate) const NFTA_CHAIN_HOOK: u16 = 4;
/// numeric policy of the chain (NLA_U32)
pub(crate) const NFTA_CHAIN_POLICY: u16 = 5;
/// number of references to this chain (NLA_U32)
pub(crate) const NFTA_CHAIN_USE: u16 = 6;
/// type name of the string (NLA_NUL_STRING)
pub(crate) const NFTA_CHAIN_TYPE: u16 = 7;
/// counter specification of the chain (NLA_NESTED: nft_counter_attributes)
pub(crate) const NFTA_CHAIN_COUNTERS: u16 = 8;
pub(crate) const NFTA_CHAIN_PAD: u16 = 9;
/// chain flags
pub(crate) const NFTA_CHAIN_FLAGS: u16 = 10;
/// uniquely identifies a chain in a transaction (NLA_U32)
pub(crate) const NFTA_CHAIN_ID: u16 = 11;
/// user data (NLA_BINARY)
pub(crate) const NFTA_CHAIN_USERDATA: u16 = 12;

// === enum nft_rule_attributes: nf_tables rule netlink attributes ===
pub(crate) const NFTA_RULE_UNSPEC: u16 = 0;
/// name of the table containing the rule (NLA_STRING)
pub(crate) const NFTA_RULE_TABLE: u16 = 1;
/// name of the chain containing the rule (NLA_STRING)
pub(crate) const NFTA_RULE_CHAIN: u16 = 2;
/// numeric handle of the rule (NLA_U64)
pub(crate) const NFTA_RULE_HANDLE: u16 = 3;
/// list of expressions (NLA_NESTED: nft_expr_attributes)
pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
/// compatibility specifications of the rule (NLA_NESTED: nft_rule_compat_attributes)
pub(crate) const NFTA_RULE_COMPAT: u16 = 5;
/// numeric handle of the previous rule (NLA_U64)
pub(crate) const NFTA_RULE_POSITION: u16 = 6;
/// user data (NLA_BINARY, NFT_USERDATA_MAXLEN)
pub(crate) const NFTA_RULE_USERDATA: u16 = 7;
pub(crate) const NFTA_RULE_PAD: u16 = 8;
/// uniquely identifies a rule in a transaction (NLA_U32)
pub(crate) const NFTA_RULE_ID: u16 = 9;
/// transaction unique identifier of the previous rule (NLA_U32)
pub(crate) const NFTA_RULE_POSITION_ID: u16 = 10;
pub(crate) const NFTA_RULE_CHAIN_ID: u16 = 11;

// === enum nft_set_flags: nf_tables set flags ===
/// name allocation, automatic cleanup on unlink
pub(crate) const NFT_SET_ANONYMOUS: u32 = 1;
/// set contents may not change while bound
pub(crate) const NFT_SET_CONSTANT: u32 = 2;
/// set contains intervals
pub(crate) const NFT_SET_INTERVAL: u32 = 4;
/// set is used as a dictionary
pub(crate) const NFT_SET_MAP: u32 = 8;
/// set uses timeouts
pub(crate) const NFT_SET_TIMEOUT: u32 = 16;
/// set can be updated from the evaluation path
pub(crate) const NFT_SET_EVAL: u32 = 32;
/// set contains stateful objects
pub(crate) const NFT_SET_OBJECT: u32 = 64;
/// set contains a concatenation
pub(crate) const NFT_SET_CONCAT: u32 = 128;
/// set contains expressions
pub(crate) const NFT_SET_EXPR: u32 = 256;

// === enum nft_set_desc_attributes: set element description ===
pub(crate) const NFTA_SET_DESC_UNSPEC: u16 = 0;
/// number of elements in set (NLA_U32)
pub(crate) const NFTA_SET_DESC_SIZE: u16 = 1;
/// description of field concatenation (NLA_NESTED)
pub(crate) const NFTA_SET_DESC_CONCAT: u16 = 2;

// === enum nft_set_field_attributes: attributes of concatenated fields ===
pub(crate) const NFTA_SET_FIELD_UNSPEC: u16 = 0;
/// length of single field, in bits (NLA_U32)
pub(crate) const NFTA_SET_FIELD_LEN: u16 = 1;

// === enum nft_set_attributes: nf_tables set netlink attributes ===
pub(crate) const NFTA_SET_UNSPEC: u16 = 0;
/// table name (NLA_STRING)
pub(crate) const NFTA_SET_TABLE: u16 = 1;
/// set name (NLA_STRING)
pub(crate) const NFTA_SET_NAME: u16 = 2;
/// bitmask of enum nft_set_flags (NLA_U32)
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
/// key data type, informational purpose only (NLA_U32)
pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
/// key data length (NLA_U32)
pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
/// mapping data type (NLA_U32)
pub(crate) const NFTA_SET_DATA_TYPE: u16 = 6;
/// mapping data length (NLA_U32)
pub(crate) const NFTA_SET_DATA_LEN: u16 = 7;
/// selection policy (NLA_U32)
pub(crate) const NFTA_SET_POLICY: u16 = 8;
/// set description (NLA_NESTED)
pub(crate) const NFTA_SET_DESC: u16 = 9;
/// uniquely identifies a set in a transaction (NLA_U32)
pub(crate) const NFTA_SET_ID: u16 = 10;
/// default timeout value (NLA_U64)
pub(crate) const NFTA_SET_TIMEOUT: u16 = 11;
/// garbage collection interval (NLA_U32)
pub(crate) const NFTA_SET_GC_INTERVAL: u16 = 12;
/// user data (NLA_BINARY)
pub(crate) const NFTA_SET_USERDATA: u16 = 13;
pub(crate) const NFTA_SET_PAD: u16 = 14;
/// stateful object type (NLA_U32: NFT_OBJECT_*)
pub(crate) const NFTA_SET_OBJ_TYPE: u16 = 15;
/// set handle (NLA_U64)
pub(crate) const NFTA_SET_HANDLE: u16 = 16;
/// set expression (NLA_NESTED: nft_expr_attributes)
pub(crate) const NFTA_SET_EXPR: u16 = 17;
/// list of expressions (NLA_NESTED: nft_list_attributes)
pub(crate) const NFTA_SET_EXPRESSIONS: u16 = 18;

// === enum nft_set_elem_flags: nf_tables set element flags ===
/// element ends the previous interval
pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// special catch-all element
pub(crate) const NFT_SET_ELEM_CATCHALL: u32 = 2;

// === enum nft_set_elem_attributes: nf_tables set element netlink attributes ===
pub(crate) const NFTA_SET_ELEM_UNSPEC: u16 = 0;
/// key value (NLA_NESTED: nft_data)
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
/// data value of mapping (NLA_NESTED: nft_data_attributes)
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
/// bitmask of nft_set_elem_flags (NLA_U32)
pub(crate) const NFTA_SET_ELEM_FLAGS: u16 = 3;
/// timeout value (NLA_U64)
pub(crate) const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
/// expiration time (NLA_U64)
pub(crate) const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
/// user data (NLA_BINARY)
pub(crate) const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// expression (NLA_NESTED: nft_expr_attributes)
pub(crate) const NFTA_SET_ELEM_EXPR: u16 = 7;
pub(crate) const NFTA_SET_ELEM_PAD: u16 = 8;
/// stateful object reference (NLA_STRING)
pub(crate) const NFTA_SET_ELEM_OBJREF: u16 = 9;
/// closing key value (NLA_NESTED: nft_data)
pub(crate) const NFTA_SET_ELEM_KEY_END: u16 = 10;
/// list of expressions (NLA_NESTED: nft_list_attributes)
pub(crate) const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;

// === enum nft_set_elem_list_attributes: nf_tables set element list netlink attributes ===
pub(crate) const NFTA_SET_ELEM_LIST_UNSPEC: u16 = 0;
/// table of the set to be changed (NLA_STRING)
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
/// name of the set to be changed (NLA_STRING)
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
/// list of set elements (NLA_NESTED: nft_set_elem_attributes)
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
/// uniquely identifies a set in a transaction (NLA_U32)
pub(crate) const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;

// === enum nft_data_types: nf_tables data types ===
/// generic data
pub(crate) const NFT_DATA_VALUE: u32 = 0;

// === enum nft_data_attributes: nf_tables data netlink attributes ===
pub(crate) const NFTA_DATA_UNSPEC: u16 = 0;
/// generic data (NLA_BINARY)
pub(crate) const NFTA_DATA_VALUE: u16 = 1;
/// nf_tables verdict (NLA_NESTED: nft_verdict_attributes)
pub(crate) const NFTA_DATA_VERDICT: u16 = 2;

// === enum nft_verdict_attributes: nf_tables verdict netlink attributes ===
pub(crate) const NFTA_VERDICT_UNSPEC: u16 = 0;
/// nf_tables verdict (NLA_U32: enum nft_verdicts)
pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
/// jump target chain name (NLA_STRING)
pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;
/// jump target chain ID (NLA_U32)
pub(crate) const NFTA_VERDICT_CHAIN_ID: u16 = 3;

// === enum nft_expr_attributes: nf_tables expression netlink attributes ===
pub(crate) const NFTA_EXPR_UNSPEC: u16 = 0;
/// name of the expression type (NLA_STRING)
pub(crate) const NFTA_EXPR_NAME: u16 = 1;
/// type specific data (NLA_NESTED)
pub(crate) const NFTA_EXPR_DATA: u16 = 2;

// === enum nft_immediate_attributes: nf_tables immediate expression netlink attributes ===
pub(crate) const NFTA_IMMEDIATE_UNSPEC: u16 = 0;
/// destination register to load data into (NLA_U32)
pub(crate) const NFTA_IMMEDIATE_DREG: u16 = 1;
/// data to load (NLA_NESTED: nft_data_attributes)
pub(crate) const NFTA_IMMEDIATE_DATA: u16 = 2;

// === enum nft_bitwise_ops: nf_tables bitwise operations ===
/// mask-and-xor operation used to implement NOT, AND, OR
pub(crate) const NFT_BITWISE_MASK_XOR: u32 = 0;
/// left-shift operation
pub(crate) const NFT_BITWISE_LSHIFT: u32 = 1;
/// right-shift operation
pub(crate) const NFT_BITWISE_RSHIFT: u32 = 2;

// === enum nft_bitwise_attributes: nf_tables bitwise expression netlink attributes ===
pub(crate) const NFTA_BITWISE_UNSPEC: u16 = 0;
/// source register (NLA_U32: nft_registers)
pub(crate) const NFTA_BITWISE_SREG: u16 = 1;
/// destination register (NLA_U32: nft_registers)
pub(crate) const NFTA_BITWISE_DREG: u16 = 2;
/// length of operands (NLA_U32)
pub(crate) const NFTA_BITWISE_LEN: u16 = 3;
/// mask value (NLA_NESTED: nft_data_attributes)
pub(crate) const NFTA_BITWISE_MASK: u16 = 4;
/// xor value (NLA_NESTED: nft_data_attributes)
pub(crate) const NFTA_BITWISE_XOR: u16 = 5;
/// type of operation (NLA_U32: nft_bitwise_ops)
pub(crate) const NFTA_BITWISE_OP: u16 = 6;
/// argument for non-boolean operations
pub(crate) const NFTA_BITWISE_DATA: u16 = 7;

// === enum nft_cmp_ops: nf_tables relational operator ===
/// equal
pub(crate) const NFT_CMP_EQ: u32 = 0;
/// not equal
pub(crate) const NFT_CMP_NEQ: u32 = 1;
/// less than
pub(crate) const NFT_CMP_LT: u32 = 2;
/// less than or equal to
pub(crate) const NFT_CMP_LTE: u32 = 3;
/// greater than
pub(crate) const NFT_CMP_GT: u32 = 4;
/// greater than or equal to
pub(crate) const NFT_CMP_GTE: u32 = 5;

// === enum nft_cmp_attributes: nf_tables cmp expression netlink attributes ===
pub(crate) const NFTA_CMP_UNSPEC: u16 = 0;
/// source register of data to compare (NLA_U32: nft_registers)
pub(crate) const NFTA_CMP_SREG: u16 = 1;
/// cmp operation (NLA_U32: nft_cmp_ops)
pub(crate) const NFTA_CMP_OP: u16 = 2;
/// data to compare against (NLA_NESTED: nft_data_attributes)
pub(crate) const NFTA_CMP_DATA: u16 = 3;

// === enum nft_range_ops: nf_tables range operator ===
/// equal
pub(crate) const NFT_RANGE_EQ: u32 = 0;
/// not equal
pub(crate) const NFT_RANGE_NEQ: u32 = 1;

// === enum nft_range_attributes: nf_tables range expression netlink attributes ===
pub(crate) const NFTA_RANGE_UNSPEC: u16 = 0;
/// source register of data to compare (NLA_U32: nft_registers)
pub(crate) const NFTA_RANGE_SREG: u16 = 1;
/// cmp operation (NLA_U32: nft_cmp_ops)
pub(crate) const NFTA_RANGE_OP: u16 = 2;
/// data range from (NLA_NESTED: nft_data_attributes)
pub(crate) const NFTA_RANGE_FROM_DATA: u16 = 3;
/// data range to (NLA_NESTED: nft_data_attributes)
pub(crate) const NFTA_RANGE_TO_DATA: u16 = 4;

// === enum nft_lookup_flags ===
pub(crate) const NFT_LOOKUP_F_INV: u32 = 1;

// === enum nft_lookup_attributes: nf_tables set lookup expression netlink attributes ===
pub(crate) const NFTA_LOOKUP_UNSPEC: u16 = 0;
/// name of the set where to look for (NLA_STRING)
pub(crate) const NFTA_LOOKUP_SET: u16 = 1;
/// source register of the data to look for (NLA_U32: nft_registers)
pub(crate) const NFTA_LOOKUP_SREG: u16 = 2;
/// destination register (NLA_U32: nft_registers)
pub(crate) const NFTA_LOOKUP_DREG: u16 = 3;
/// uniquely identifies a set in a transaction (NLA_U32)
pub(crate) const NFTA_LOOKUP_SET_ID: u16 = 4;
/// flags (NLA_U32: enum nft_lookup_flags)
pub(crate) const NFTA_LOOKUP_FLAGS: u16 = 5;

// === enum nft_dynset_ops ===
pub(crate) const NFT_DYNSET_OP_ADD: u32 = 0;
pub(crate) const NFT_DYNSET_OP_UPDATE: u32 = 1;
pub(crate) const NFT_DYNSET_OP_DELETE: u32 = 2;

// === enum nft_dynset_flags ===
pub(crate) const NFT_DYNSET_F_INV: u32 = 1;
pub(crate) const NFT_DYNSET_F_EXPR: u32 = 2;

// === enum nft_dynset_attributes: dynset expression attributes ===
pub(crate) const NFTA_DYNSET_UNSPEC: u16 = 0;
/// name of set the to add data to (NLA_STRING)
pub(crate) const NFTA_DYNSET_SET_NAME: u16 = 1;
/// uniquely identifier of the set in the transaction (NLA_U32)
pub(crate) const NFTA_DYNSET_SET_ID: u16 = 2;
/// operation (NLA_U32)
pub(crate) const NFTA_DYNSET_OP: u16 = 3;
/// source register of the key (NLA_U32)
pub(crate) const NFTA_DYNSET_SREG_KEY: u16 = 4;
/// source register of the data (NLA_U32)
pub(crate) const NFTA_DYNSET_SREG_DATA: u16 = 5;
/// timeout value for the new element (NLA_U64)
pub(crate) const NFTA_DYNSET_TIMEOUT: u16 = 6;
/// expression (NLA_NESTED: nft_expr_attributes)
pub(crate) const NFTA_DYNSET_EXPR: u16 = 7;
pub(crate) const NFTA_DYNSET_PAD: u16 = 8;
/// flags (NLA_U32)
pub(crate) const NFTA_DYNSET_FLAGS: u16 = 9;
/// list of expressions (NLA_NESTED: nft_list_attributes)
pub(crate) const NFTA_DYNSET_EXPRESSIONS: u16 = 10;

// === enum nft_payload_bases: nf_tables payload expression offset bases ===
/// link layer header
pub(crate) const NFT_PAYLOAD_LL_HEADER: u32 = 0;
/// network header
pub(crate) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
/// transport header
pub(crate) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
/// inner header / payload
pub(crate) const NFT_PAYLOAD_INNER_HEADER: u32 = 3;

// === enum nft_payload_attributes: nf_tables payload expression netlink attributes ===
pub(crate) const NFTA_PAYLOAD_UNSPEC: u16 = 0;
/// destination register to load data into (NLA_U32: nft_registers)
pub(crate) const NFTA_PAYLOAD_DREG: u16 = 1;
/// payload base (NLA_U32: nft_payload_bases)
pub(crate) const NFTA_PAYLOAD_BASE: u16 = 2;
/// payload offset relative to base (NLA_U32)
pub(crate) const NFTA_PAYLOAD_OFFSET: u16 = 3;
/// payload length (NLA_U32)
pub(crate) const NFTA_PAYLOAD_LEN: u16 = 4;
/// source register to load data from (NLA_U32: nft_registers)
pub(crate) const NFTA_PAYLOAD_SREG: u16 = 5;
/// checksum type (NLA_U32)
pub(crate) const NFTA_PAYLOAD_CSUM_TYPE: u16 = 6;
/// checksum offset relative to base (NLA_U32)
pub(crate) const NFTA_PAYLOAD_CSUM_OFFSET: u16 = 7;
/// checksum flags (NLA_U32)
pub(crate) const NFTA_PAYLOAD_CSUM_FLAGS: u16 = 8;

// === enum nft_meta_keys: nf_tables meta expression keys ===
/// packet length (skb->len)
pub(crate) const NFT_META_LEN: u32 = 0;
/// packet ethertype protocol (skb->protocol), invalid in OUTPUT
pub(crate) const NFT_META_PROTOCOL: u32 = 1;
/// packet priority (skb->priority)
pub(crate) const NFT_META_PRIORITY: u32 = 2;
/// packet mark (skb->mark)
pub(crate) const NFT_META_MARK: u32 = 3;
/// packet input interface index (dev->ifindex)
pub(crate) const NFT_META_IIF: u32 = 4;
/// packet output interface index (dev->ifindex)
pub(crate) const NFT_META_OIF: u32 = 5;
/// packet input interface name (dev->name)
pub(crate) const NFT_META_IIFNAME: u32 = 6;
/// packet output interface name (dev->name)
pub(crate) const NFT_META_OIFNAME: u32 = 7;
pub(crate) const NFT_META_IFTYPE: u32 = 8;
/// `#define NFT_META_IIFTYPE NFT_META_IFTYPE`
pub(crate) const NFT_META_IIFTYPE: u32 = NFT_META_IFTYPE;
pub(crate) const NFT_META_OIFTYPE: u32 = 9;
/// originating socket UID (fsuid)
pub(crate) const NFT_META_SKUID: u32 = 10;
/// originating socket GID (fsgid)
pub(crate) const NFT_META_SKGID: u32 = 11;
/// packet nftrace bit
pub(crate) const NFT_META_NFTRACE: u32 = 12;
/// realm value of packet's route (skb->dst->tclassid)
pub(crate) const NFT_META_RTCLASSID: u32 = 13;
/// packet secmark (skb->secmark)
pub(crate) const NFT_META_SECMARK: u32 = 14;
/// netfilter protocol
pub(crate) const NFT_META_NFPROTO: u32 = 15;
/// layer 4 protocol number
pub(crate) const NFT_META_L4PROTO: u32 = 16;
/// packet input bridge interface name
pub(crate) const NFT_META_BRI_IIFNAME: u32 = 17;
/// packet output bridge interface name
pub(crate) const NFT_META_BRI_OIFNAME: u32 = 18;
/// packet type (skb->pkt_type), special handling for loopback
pub(crate) const NFT_META_PKTTYPE: u32 = 19;
/// cpu id through smp_processor_id()
pub(crate) const NFT_META_CPU: u32 = 20;
/// packet input interface group
pub(crate) const NFT_META_IIFGROUP: u32 = 21;
/// packet output interface group
pub(crate) const NFT_META_OIFGROUP: u32 = 22;
/// socket control group (skb->sk->sk_classid)
pub(crate) const NFT_META_CGROUP: u32 = 23;
/// a 32bit pseudo-random number
pub(crate) const NFT_META_PRANDOM: u32 = 24;
/// boolean, secpath_exists (!!skb->sp)
pub(crate) const NFT_META_SECPATH: u32 = 25;
/// packet input interface kind name (dev->rtnl_link_ops->kind)
pub(crate) const NFT_META_IIFKIND: u32 = 26;
/// packet output interface kind name (dev->rtnl_link_ops->kind)
pub(crate) const NFT_META_OIFKIND: u32 = 27;
/// packet input bridge port pvid
pub(crate) const NFT_META_BRI_IIFPVID: u32 = 28;
/// packet input bridge vlan proto
pub(crate) const NFT_META_BRI_IIFVPROTO: u32 = 29;
/// time since epoch (in nanoseconds)
pub(crate) const NFT_META_TIME_NS: u32 = 30;
/// day of week (from 0 = Sunday to 6 = Saturday)
pub(crate) const NFT_META_TIME_DAY: u32 = 31;
/// hour of day (in seconds)
pub(crate) const NFT_META_TIME_HOUR: u32 = 32;
/// slave device interface index
pub(crate) const NFT_META_SDIF: u32 = 33;
/// slave device interface name
pub(crate) const NFT_META_SDIFNAME: u32 = 34;

// === enum nft_meta_attributes: nf_tables meta expression netlink attributes ===
pub(crate) const NFTA_META_UNSPEC: u16 = 0;
/// destination register (NLA_U32)
pub(crate) const NFTA_META_DREG: u16 = 1;
/// meta data item to load (NLA_U32: nft_meta_keys)
pub(crate) const NFTA_META_KEY: u16 = 2;
/// source register (NLA_U32)
pub(crate) const NFTA_META_SREG: u16 = 3;

// === enum nft_ct_keys: nf_tables ct expression keys ===
/// conntrack state (bitmask of enum ip_conntrack_info)
pub(crate) const NFT_CT_STATE: u32 = 0;
/// conntrack direction (enum ip_conntrack_dir)
pub(crate) const NFT_CT_DIRECTION: u32 = 1;
/// conntrack status (bitmask of enum ip_conntrack_status)
pub(crate) const NFT_CT_STATUS: u32 = 2;
/// conntrack mark value
pub(crate) const NFT_CT_MARK: u32 = 3;
/// conntrack secmark value
pub(crate) const NFT_CT_SECMARK: u32 = 4;
/// relative conntrack expiration time in ms
pub(crate) const NFT_CT_EXPIRATION: u32 = 5;
/// connection tracking helper assigned to conntrack
pub(crate) const NFT_CT_HELPER: u32 = 6;
/// conntrack layer 3 protocol
pub(crate) const NFT_CT_L3PROTOCOL: u32 = 7;
/// conntrack layer 3 protocol source (IPv4/IPv6 address, deprecated)
pub(crate) const NFT_CT_SRC: u32 = 8;
/// conntrack layer 3 protocol destination (IPv4/IPv6 address, deprecated)
pub(crate) const NFT_CT_DST: u32 = 9;
/// conntrack layer 4 protocol
pub(crate) const NFT_CT_PROTOCOL: u32 = 10;
/// conntrack layer 4 protocol source
pub(crate) const NFT_CT_PROTO_SRC: u32 = 11;
/// conntrack layer 4 protocol destination
pub(crate) const NFT_CT_PROTO_DST: u32 = 12;
/// conntrack labels
pub(crate) const NFT_CT_LABELS: u32 = 13;
/// conntrack packets
pub(crate) const NFT_CT_PKTS: u32 = 14;
/// conntrack bytes
pub(crate) const NFT_CT_BYTES: u32 = 15;
/// conntrack average bytes per packet
pub(crate) const NFT_CT_AVGPKT: u32 = 16;
/// conntrack zone
pub(crate) const NFT_CT_ZONE: u32 = 17;
/// ctnetlink events to be generated for this conntrack
pub(crate) const NFT_CT_EVENTMASK: u32 = 18;
/// conntrack layer 3 protocol source (IPv4 address)
pub(crate) const NFT_CT_SRC_IP: u32 = 19;
/// conntrack layer 3 protocol destination (IPv4 address)
pub(crate) const NFT_CT_DST_IP: u32 = 20;
/// conntrack layer 3 protocol source (IPv6 address)
pub(crate) const NFT_CT_SRC_IP6: u32 = 21;
/// conntrack layer 3 protocol destination (IPv6 address)
pub(crate) const NFT_CT_DST_IP6: u32 = 22;
/// conntrack id
pub(crate) const NFT_CT_ID: u32 = 23;

// === enum nft_ct_attributes: nf_tables ct expression netlink attributes ===
pub(crate) const NFTA_CT_UNSPEC: u16 = 0;
/// destination register (NLA_U32)
pub(crate) const NFTA_CT_DREG: u16 = 1;
/// conntrack data item to load (NLA_U32: nft_ct_keys)
pub(crate) const NFTA_CT_KEY: u16 = 2;
/// direction in case of directional keys (NLA_U8)
pub(crate) const NFTA_CT_DIRECTION: u16 = 3;
/// source register (NLA_U32)
pub(crate) const NFTA_CT_SREG: u16 = 4;

// === enum nft_counter_attributes: nf_tables counter expression netlink attributes ===
pub(crate) const NFTA_COUNTER_UNSPEC: u16 = 0;
/// number of bytes (NLA_U64)
pub(crate) const NFTA_COUNTER_BYTES: u16 = 1;
/// number of packets (NLA_U64)
pub(crate) const NFTA_COUNTER_PACKETS: u16 = 2;
pub(crate) const NFTA_COUNTER_PAD: u16 = 3;

// === enum nft_reject_types: nf_tables reject expression reject types ===
/// reject using ICMP unreachable
pub(crate) const NFT_REJECT_ICMP_UNREACH: u32 = 0;
/// reject using TCP RST
pub(crate) const NFT_REJECT_TCP_RST: u32 = 1;
/// abstracted ICMP unreachable for bridge and inet
pub(crate) const NFT_REJECT_ICMPX_UNREACH: u32 = 2;

// === enum nft_reject_inet_code: Generic reject codes for IPv4/IPv6 ===
/// no route to host / network unreachable
pub(crate) const NFT_REJECT_ICMPX_NO_ROUTE: u32 = 0;
/// port unreachable
pub(crate) const NFT_REJECT_ICMPX_PORT_UNREACH: u32 = 1;
/// host unreachable
pub(crate) const NFT_REJECT_ICMPX_HOST_UNREACH: u32 = 2;
/// administratively prohibited
pub(crate) const NFT_REJECT_ICMPX_ADMIN_PROHIBITED: u32 = 3;

// === enum nft_reject_attributes: nf_tables reject expression netlink attributes ===
pub(crate) const NFTA_REJECT_UNSPEC: u16 = 0;
/// packet type to use (NLA_U32: nft_reject_types)
pub(crate) const NFTA_REJECT_TYPE: u16 = 1;
/// ICMP code to use (NLA_U8)
pub(crate) const NFTA_REJECT_ICMP_CODE: u16 = 2;

// === enum nft_nat_types: nf_tables nat expression NAT types ===
/// source NAT
pub(crate) const NFT_NAT_SNAT: u32 = 0;
/// destination NAT
pub(crate) const NFT_NAT_DNAT: u32 = 1;

// === enum nft_nat_attributes: nf_tables nat expression netlink attributes ===
pub(crate) const NFTA_NAT_UNSPEC: u16 = 0;
/// NAT type (NLA_U32: nft_nat_types)
pub(crate) const NFTA_NAT_TYPE: u16 = 1;
/// NAT family (NLA_U32)
pub(crate) const NFTA_NAT_FAMILY: u16 = 2;
/// source register of address range start (NLA_U32: nft_registers)
pub(crate) const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
/// source register of address range end (NLA_U32: nft_registers)
pub(crate) const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
/// source register of proto range start (NLA_U32: nft_registers)
pub(crate) const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
/// source register of proto range end (NLA_U32: nft_registers)
pub(crate) const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
/// NAT flags (see NF_NAT_RANGE_* in linux/netfilter/nf_nat.h) (NLA_U32)
pub(crate) const NFTA_NAT_FLAGS: u16 = 7;

// === enum nft_masq_attributes: nf_tables masquerade expression attributes ===
pub(crate) const NFTA_MASQ_UNSPEC: u16 = 0;
/// NAT flags (see NF_NAT_RANGE_* in linux/netfilter/nf_nat.h) (NLA_U32)
pub(crate) const NFTA_MASQ_FLAGS: u16 = 1;
/// source register of proto range start (NLA_U32: nft_registers)
pub(crate) const NFTA_MASQ_REG_PROTO_MIN: u16 = 2;
/// source register of proto range end (NLA_U32: nft_registers)
pub(crate) const NFTA_MASQ_REG_PROTO_MAX: u16 = 3;

// === enum nft_gen_attributes: nf_tables ruleset generation attributes ===
pub(crate) const NFTA_GEN_UNSPEC: u16 = 0;
/// Ruleset generation ID (NLA_U32)
pub(crate) const NFTA_GEN_ID: u16 = 1;
pub(crate) const NFTA_GEN_PROC_PID: u16 = 2;
pub(crate) const NFTA_GEN_PROC_NAME: u16 = 3;

// === enum nft_fib_attributes ===
pub(crate) const NFTA_FIB_UNSPEC: u16 = 0;
pub(crate) const NFTA_FIB_DREG: u16 = 1;
pub(crate) const NFTA_FIB_RESULT: u16 = 2;
pub(crate) const NFTA_FIB_FLAGS: u16 = 3;

// === enum nft_fib_result ===
pub(crate) const NFT_FIB_RESULT_UNSPEC: u32 = 0;
pub(crate) const NFT_FIB_RESULT_OIF: u32 = 1;
pub(crate) const NFT_FIB_RESULT_OIFNAME: u32 = 2;
pub(crate) const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;

// === enum nft_fib_flags ===
/// look up src
pub(crate) const NFTA_FIB_F_SADDR: u32 = 1;
/// look up dst
pub(crate) const NFTA_FIB_F_DADDR: u32 = 2;
/// use skb->mark
pub(crate) const NFTA_FIB_F_MARK: u32 = 4;
/// restrict to iif
pub(crate) const NFTA_FIB_F_IIF: u32 = 8;
/// restrict to oif
pub(crate) const NFTA_FIB_F_OIF: u32 = 16;
/// check existence only
pub(crate) const NFTA_FIB_F_PRESENT: u32 = 32;

// === enum nft_ng_attributes: nf_tables number generator expression netlink attributes ===
pub(crate) const NFTA_NG_UNSPEC: u16 = 0;
/// destination register (NLA_U32)
pub(crate) const NFTA_NG_DREG: u16 = 1;
/// maximum counter value (NLA_U32)
pub(crate) const NFTA_NG_MODULUS: u16 = 2;
/// operation type (NLA_U32)
pub(crate) const NFTA_NG_TYPE: u16 = 3;
/// offset to be added to the counter (NLA_U32)
pub(crate) const NFTA_NG_OFFSET: u16 = 4;
/// name of the map to lookup (NLA_STRING)
pub(crate) const NFTA_NG_SET_NAME: u16 = 5;
/// id of the map (NLA_U32)
pub(crate) const NFTA_NG_SET_ID: u16 = 6;

// === enum nft_ng_types ===
pub(crate) const NFT_NG_INCREMENTAL: u32 = 0;
pub(crate) const NFT_NG_RANDOM: u32 = 1;
