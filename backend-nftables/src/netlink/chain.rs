//! Attributes of a chain (`NFT_MSG_NEWCHAIN`, `GETCHAIN`, `DELCHAIN`) and of a base chain's
//! hook.

use super::attr::nft_attrs;
use super::constants::*;
use super::expr::CounterAttr;

nft_attrs! {
    /// One attribute of a chain (`enum nft_chain_attributes`).
    ///
    /// A base chain has `Hook`, `Type` and `Policy`; a regular chain has neither.
    pub enum ChainAttr {
        /// `NFTA_CHAIN_TABLE`: name of the table containing the chain.
        Table(String) = NFTA_CHAIN_TABLE,
        /// `NFTA_CHAIN_HANDLE`: numeric handle of the chain.
        Handle(u64) = NFTA_CHAIN_HANDLE,
        /// `NFTA_CHAIN_NAME`: name of the chain.
        Name(String) = NFTA_CHAIN_NAME,
        /// `NFTA_CHAIN_HOOK`: hook specification for basechains.
        Hook(Vec<HookAttr>) = NFTA_CHAIN_HOOK,
        /// `NFTA_CHAIN_POLICY`: numeric policy of the chain (`NF_ACCEPT` or `NF_DROP`).
        Policy(u32) = NFTA_CHAIN_POLICY,
        /// `NFTA_CHAIN_USE`: number of references to this chain (dumps only).
        Use(u32) = NFTA_CHAIN_USE,
        /// `NFTA_CHAIN_TYPE`: type name of the chain (`filter`, `nat`, `route`).
        Type(String) = NFTA_CHAIN_TYPE,
        /// `NFTA_CHAIN_COUNTERS`: counter specification of the chain.
        Counters(Vec<CounterAttr>) = NFTA_CHAIN_COUNTERS,
        /// `NFTA_CHAIN_FLAGS`: chain flags (`enum nft_chain_flags`).
        Flags(u32) = NFTA_CHAIN_FLAGS,
        /// `NFTA_CHAIN_ID`: uniquely identifies a chain in a transaction.
        Id(u32) = NFTA_CHAIN_ID,
        /// `NFTA_CHAIN_USERDATA`: user data.
        Userdata(Vec<u8>) = NFTA_CHAIN_USERDATA,
    }
}

nft_attrs! {
    /// One attribute of a base chain's hook (`enum nft_hook_attributes`).
    pub enum HookAttr {
        /// `NFTA_HOOK_HOOKNUM`: netfilter hook number (`NF_INET_PRE_ROUTING`...).
        Hooknum(u32) = NFTA_HOOK_HOOKNUM,
        /// `NFTA_HOOK_PRIORITY`: netfilter hook priority, a signed big-endian 32-bit
        /// (`dstnat` is -100, `srcnat` 100).
        Priority(i32) = NFTA_HOOK_PRIORITY,
        /// `NFTA_HOOK_DEV`: netdevice name (netdev family).
        Dev(String) = NFTA_HOOK_DEV,
    }
}

/// Netfilter hooks (`enum nf_inet_hooks`), for `NFTA_HOOK_HOOKNUM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Hook {
    /// `NF_INET_PRE_ROUTING`.
    Prerouting,
    /// `NF_INET_LOCAL_IN`.
    Input,
    /// `NF_INET_FORWARD`.
    Forward,
    /// `NF_INET_LOCAL_OUT`.
    Output,
    /// `NF_INET_POST_ROUTING`.
    Postrouting,
    /// Another hook number.
    Other(u32),
}

impl From<Hook> for u32 {
    fn from(hook: Hook) -> u32 {
        match hook {
            Hook::Prerouting => NF_INET_PRE_ROUTING,
            Hook::Input => NF_INET_LOCAL_IN,
            Hook::Forward => NF_INET_FORWARD,
            Hook::Output => NF_INET_LOCAL_OUT,
            Hook::Postrouting => NF_INET_POST_ROUTING,
            Hook::Other(n) => n,
        }
    }
}

impl From<u32> for Hook {
    fn from(n: u32) -> Hook {
        match n {
            NF_INET_PRE_ROUTING => Hook::Prerouting,
            NF_INET_LOCAL_IN => Hook::Input,
            NF_INET_FORWARD => Hook::Forward,
            NF_INET_LOCAL_OUT => Hook::Output,
            NF_INET_POST_ROUTING => Hook::Postrouting,
            n => Hook::Other(n),
        }
    }
}

/// The hook of a base chain: `[NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY]`, in libnftnl's order.
pub fn hook(hook: Hook, priority: i32) -> Vec<HookAttr> {
    vec![HookAttr::Hooknum(hook.into()), HookAttr::Priority(priority)]
}

/// A base chain's policy: `NF_ACCEPT`.
pub const POLICY_ACCEPT: u32 = NF_ACCEPT as u32;
/// A base chain's policy: `NF_DROP`.
pub const POLICY_DROP: u32 = NF_DROP as u32;
