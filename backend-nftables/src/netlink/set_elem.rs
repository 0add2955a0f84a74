//! Attributes of set elements (`NFT_MSG_NEWSETELEM`, `GETSETELEM`, `DELSETELEM`): the list
//! message names the table and set, and carries the elements.

use super::attr::nft_attrs;
use super::constants::*;
use super::data::DataAttr;

nft_attrs! {
    /// One attribute of a set-element message (`enum nft_set_elem_list_attributes`).
    pub enum SetElemListAttr {
        /// `NFTA_SET_ELEM_LIST_TABLE`: table of the set to be changed.
        Table(String) = NFTA_SET_ELEM_LIST_TABLE,
        /// `NFTA_SET_ELEM_LIST_SET`: name of the set to be changed.
        Set(String) = NFTA_SET_ELEM_LIST_SET,
        /// `NFTA_SET_ELEM_LIST_ELEMENTS`: list of set elements, each the attributes of one
        /// element (numbered from 1 on the wire, as `nft` does).
        Elements(Vec<Vec<SetElemAttr>>) = NFTA_SET_ELEM_LIST_ELEMENTS,
        /// `NFTA_SET_ELEM_LIST_SET_ID`: uniquely identifies a set in a transaction.
        SetId(u32) = NFTA_SET_ELEM_LIST_SET_ID,
    }
}

nft_attrs! {
    /// One attribute of a set element (`enum nft_set_elem_attributes`).
    pub enum SetElemAttr {
        /// `NFTA_SET_ELEM_KEY`: key value (`nft_data`, a value).
        Key(Vec<DataAttr>) = NFTA_SET_ELEM_KEY,
        /// `NFTA_SET_ELEM_DATA`: data value of mapping (a value, or a verdict in a vmap).
        Data(Vec<DataAttr>) = NFTA_SET_ELEM_DATA,
        /// `NFTA_SET_ELEM_FLAGS`: bitmask of `nft_set_elem_flags`
        /// (`NFT_SET_ELEM_INTERVAL_END`: this element closes an interval).
        Flags(u32) = NFTA_SET_ELEM_FLAGS,
        /// `NFTA_SET_ELEM_TIMEOUT`: timeout value, in milliseconds.
        Timeout(u64) = NFTA_SET_ELEM_TIMEOUT,
        /// `NFTA_SET_ELEM_EXPIRATION`: expiration time, in milliseconds left (dumps).
        Expiration(u64) = NFTA_SET_ELEM_EXPIRATION,
        /// `NFTA_SET_ELEM_USERDATA`: user data.
        Userdata(Vec<u8>) = NFTA_SET_ELEM_USERDATA,
        /// `NFTA_SET_ELEM_OBJREF`: stateful object reference.
        Objref(String) = NFTA_SET_ELEM_OBJREF,
        /// `NFTA_SET_ELEM_KEY_END`: closing key value (concatenated ranges).
        KeyEnd(Vec<DataAttr>) = NFTA_SET_ELEM_KEY_END,
    }
}

/// `NFT_SET_ELEM_INTERVAL_END` in [`SetElemAttr::Flags`]: the element closes an interval.
pub const ELEM_INTERVAL_END: u32 = NFT_SET_ELEM_INTERVAL_END;
