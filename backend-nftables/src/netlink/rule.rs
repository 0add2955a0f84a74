//! Attributes of a rule (`NFT_MSG_NEWRULE`, `GETRULE`, `DELRULE`).

use super::attr::nft_attrs;
use super::constants::*;
use super::expr::Expr;

nft_attrs! {
    /// One attribute of a rule (`enum nft_rule_attributes`).
    pub enum RuleAttr {
        /// `NFTA_RULE_TABLE`: name of the table containing the rule.
        Table(String) = NFTA_RULE_TABLE,
        /// `NFTA_RULE_CHAIN`: name of the chain containing the rule.
        Chain(String) = NFTA_RULE_CHAIN,
        /// `NFTA_RULE_HANDLE`: numeric handle of the rule (dumps; names the rule to delete or
        /// replace).
        Handle(u64) = NFTA_RULE_HANDLE,
        /// `NFTA_RULE_EXPRESSIONS`: list of expressions, evaluated in order.
        Expressions(Vec<Expr>) = NFTA_RULE_EXPRESSIONS,
        /// `NFTA_RULE_POSITION`: numeric handle of the previous rule (insert after it with
        /// `NLM_F_APPEND`, before it without).
        Position(u64) = NFTA_RULE_POSITION,
        /// `NFTA_RULE_USERDATA`: user data (`nft` keeps the rule comment there, as TLVs).
        Userdata(Vec<u8>) = NFTA_RULE_USERDATA,
        /// `NFTA_RULE_ID`: uniquely identifies a rule in a transaction.
        Id(u32) = NFTA_RULE_ID,
        /// `NFTA_RULE_POSITION_ID`: transaction unique identifier of the previous rule.
        PositionId(u32) = NFTA_RULE_POSITION_ID,
        /// `NFTA_RULE_CHAIN_ID`: add the rule to chain by ID, alternative to `Chain`.
        ChainId(u32) = NFTA_RULE_CHAIN_ID,
    }
}

/// `nft`'s userdata TLV type of a comment (`NFTNL_UDATA_RULE_COMMENT`, also
/// `NFTNL_UDATA_TABLE_COMMENT` and `NFTNL_UDATA_SET_COMMENT`... in libnftnl's `udata.h`): the
/// same 0 for every object.
const UDATA_COMMENT: u8 = 0;

/// Userdata holding a comment the way `nft` writes it: one TLV `{type 0, length, text\0}`
/// (libnftnl `nftnl_udata_put_strz`). `None` when the comment does not fit (255 bytes with
/// its NUL).
pub fn comment_userdata(comment: &str) -> Option<Vec<u8>> {
    let len = u8::try_from(comment.len() + 1).ok()?;
    let mut out = Vec::with_capacity(comment.len() + 3);
    out.extend_from_slice(&[UDATA_COMMENT, len]);
    out.extend_from_slice(comment.as_bytes());
    out.push(0);
    Some(out)
}

/// The comment in userdata written by `nft` (or [`comment_userdata`]), if any.
pub fn comment_of_userdata(userdata: &[u8]) -> Option<String> {
    let mut rest = userdata;
    while let [kind, len, tail @ ..] = rest {
        let value = tail.get(..usize::from(*len))?;
        if *kind == UDATA_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return String::from_utf8(text.to_vec()).ok();
        }
        rest = &tail[usize::from(*len)..];
    }
    None
}
