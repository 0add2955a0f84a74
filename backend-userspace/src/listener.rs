//! [`ListenerKey`]: which socket a listener is (protocol and local address). Public as
//! [`crate::plan::ListenerKey`]; a module of its own, below the plan and the errors, so that the
//! errors can name a listener without importing the plan (which imports the config, which
//! imports the errors).

use std::fmt;
use std::net::SocketAddr;

use proxy_core::table::Protocol;

/// A listening socket: protocol and local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The address and port bound.
    pub addr: SocketAddr,
}

impl fmt::Display for ListenerKey {
    /// `tcp 127.0.0.1:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.addr)
    }
}
