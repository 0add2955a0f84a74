//! The crate's error type.

use std::io;

use crate::listener::ListenerKey;

/// Why the userspace backend could not be built or could not open a listener.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserspaceError {
    /// A [`crate::UserspaceConfig`] field is out of range.
    #[error("invalid userspace config: {field}: {message}")]
    Config {
        /// The field's name (`maglev_table_size`).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Opening the listener would pass [`crate::UserspaceConfig::listener_limit`].
    #[error(
        "cannot listen on {listener}: {open} listeners are open, the most allowed \
         (max_listeners, or the open-file limit less what connections need)"
    )]
    ListenerLimit {
        /// The listener not opened.
        listener: ListenerKey,
        /// How many are open.
        open: usize,
    },
    /// A listening socket could not be created or bound.
    #[error("cannot listen on {listener}: {error}")]
    Bind {
        /// The protocol and address that could not be bound.
        listener: ListenerKey,
        /// The OS error, in the message (a sync reports this error as a problem's text): not a
        /// `source`, so that a chain of causes prints it once.
        error: io::Error,
    },
    /// A service address is not an address of this host, so it cannot be bound
    /// (`EADDRNOTAVAIL`). The message says what to do: add the address, capture its traffic
    /// instead of binding it ([`crate::ListenMode::Capture`]), or bind it anyway
    /// ([`crate::UserspaceConfig::freebind`]); with svcproxy's flags for the last two.
    #[error(
        "cannot listen on {listener}: {ip} is not an address of this host ({error}): add it \
         (ip addr add {ip}/{prefix_len} dev lo), or capture its traffic instead of binding it \
         (mode: capture; svcproxy --userspace-capture, root), or bind it before it is local \
         (freebind; svcproxy --freebind)",
        ip = listener.addr.ip(),
        prefix_len = if listener.addr.is_ipv4() { 32 } else { 128 }
    )]
    AddressNotLocal {
        /// The protocol and address that could not be bound.
        listener: ListenerKey,
        /// The OS error (`EADDRNOTAVAIL`), in the message: not a `source`, so that a chain of
        /// causes prints it once.
        error: io::Error,
    },
    /// A command could not be started (capture mode).
    #[error("cannot run {command}: {error}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error, in the message: not a `source`, so that it prints once.
        error: io::Error,
    },
    /// An iptables command failed (capture mode).
    #[error("{command} failed ({status}): {stderr}")]
    Iptables {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error (and, for a restore, our input).
        stderr: String,
    },
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proxy_core::table::Protocol;

    use super::*;

    #[test]
    fn a_bind_error_prints_the_os_error_once_whoever_prints_it() {
        let error = UserspaceError::Bind {
            listener: ListenerKey {
                protocol: Protocol::Tcp,
                addr: SocketAddr::from(([198, 18, 0, 1], 80)),
            },
            error: io::Error::from(io::ErrorKind::AddrInUse),
        };
        // A sync reports it as a problem's text (`to_string`), the loop logs chains: both whole,
        // the OS error once.
        let text = error.to_string();
        assert!(
            text.starts_with("cannot listen on tcp 198.18.0.1:80: "),
            "{text}"
        );
        assert!(std::error::Error::source(&error).is_none(), "{error:?}");
        let chain = proxy_core::error::error_chain(&error);
        assert_eq!(chain, text);
    }
}
