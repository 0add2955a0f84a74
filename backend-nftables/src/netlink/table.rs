//! Attributes of a table (`NFT_MSG_NEWTABLE`, `GETTABLE`, `DELTABLE`).

use super::attr::nft_attrs;
use super::constants::*;

nft_attrs! {
    /// One attribute of a table (`enum nft_table_attributes`).
    pub enum TableAttr {
        /// `NFTA_TABLE_NAME`: name of the table.
        Name(String) = NFTA_TABLE_NAME,
        /// `NFTA_TABLE_FLAGS`: bitmask of `enum nft_table_flags` (`NFT_TABLE_F_DORMANT`,
        /// `NFT_TABLE_F_OWNER`, `NFT_TABLE_F_PERSIST`).
        Flags(u32) = NFTA_TABLE_FLAGS,
        /// `NFTA_TABLE_USE`: number of chains in this table (dumps only).
        Use(u32) = NFTA_TABLE_USE,
        /// `NFTA_TABLE_HANDLE`: numeric handle of the table.
        Handle(u64) = NFTA_TABLE_HANDLE,
        /// `NFTA_TABLE_USERDATA`: user data (`nft` keeps the table comment there, as TLVs).
        Userdata(Vec<u8>) = NFTA_TABLE_USERDATA,
        /// `NFTA_TABLE_OWNER`: owner of this table through netlink portID.
        Owner(u32) = NFTA_TABLE_OWNER,
    }
}
