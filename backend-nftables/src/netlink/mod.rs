//! nf_tables netlink messages (NFNL_SUBSYS_NFTABLES), hand-written.
