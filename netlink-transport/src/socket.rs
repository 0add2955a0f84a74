//! [`Datagrams`]: the datagram I/O under a [`crate::Connection`], and [`SysSocket`], the
//! real one on `netlink-sys`. [`crate::fake::FakeKernel`] is the other.

use std::{io, os::fd::AsFd, time::Duration};

use netlink_sys::{protocols, Socket, SocketAddr};
use nix::libc;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::error::NetlinkError;

/// A netlink protocol (the third argument of `socket(AF_NETLINK, ...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// `NETLINK_ROUTE`: links, addresses, routes (rtnetlink).
    Route,
    /// `NETLINK_GENERIC`: generic netlink families such as IPVS.
    Generic,
    /// `NETLINK_NETFILTER`: nfnetlink (conntrack, ipset, nf_tables).
    Netfilter,
}

impl Protocol {
    fn number(self) -> isize {
        match self {
            Protocol::Route => protocols::NETLINK_ROUTE,
            Protocol::Generic => protocols::NETLINK_GENERIC,
            Protocol::Netfilter => protocols::NETLINK_NETFILTER,
        }
    }
}

/// How a socket is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// The longest a `recv` waits for the kernel (`SO_RCVTIMEO`); then the request fails with
    /// [`NetlinkError::Timeout`] instead of hanging.
    pub recv_timeout: Duration,
    /// The receive buffer asked for: the ACKs of a whole batch wait there until read. Asked
    /// with `SO_RCVBUFFORCE` (needs `CAP_NET_ADMIN`), else capped by `net.core.rmem_max`.
    pub rcvbuf_bytes: usize,
    /// The send buffer asked for, so that one datagram can carry a large batch.
    pub sndbuf_bytes: usize,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            recv_timeout: Duration::from_secs(10),
            rcvbuf_bytes: 4 << 20,
            sndbuf_bytes: 1 << 20,
        }
    }
}

/// Datagram I/O with the kernel's side of one netlink socket.
pub trait Datagrams: Send + std::fmt::Debug {
    /// Sends one datagram (one or more netlink messages).
    ///
    /// # Errors
    /// The OS error of `send`.
    fn send(&mut self, datagram: &[u8]) -> io::Result<()>;

    /// Receives one datagram into `buf` (cleared first, filled up to its capacity) and
    /// returns the datagram's whole length, which exceeds `buf.len()` when it was truncated.
    /// `wait`: block up to the receive timeout; else return `WouldBlock` at once when nothing
    /// is queued.
    ///
    /// # Errors
    /// The OS error of `recv`: `WouldBlock` when nothing came, `ENOBUFS` when the kernel
    /// dropped replies since the last call.
    fn recv(&mut self, buf: &mut Vec<u8>, wait: bool) -> io::Result<usize>;

    /// Our port id (`nl_pid`), which the kernel puts in its replies to us.
    fn port(&self) -> u32;

    /// The buffer sizes the kernel gave us (`SO_RCVBUF`, `SO_SNDBUF`), which bound batches.
    fn buffer_sizes(&self) -> (usize, usize);

    /// The receive timeout, for errors.
    fn recv_timeout(&self) -> Duration;

    /// Joins multicast group `group` (a group number, `NETLINK_ADD_MEMBERSHIP`), whose
    /// notifications `recv` then returns too.
    ///
    /// # Errors
    /// The OS error of `setsockopt`; `Unsupported` where there are no groups.
    fn join_group(&mut self, group: u32) -> io::Result<()> {
        let _ = group;
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Grows the send buffer so that one datagram of `datagram_bytes` fits (an nfnetlink
    /// transaction cannot be cut), and returns the new `SO_SNDBUF`.
    ///
    /// # Errors
    /// The OS error of `setsockopt`; `Unsupported` where the buffer is fixed.
    fn grow_sndbuf(&mut self, datagram_bytes: usize) -> io::Result<usize> {
        let _ = datagram_bytes;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A real netlink socket, connected to the kernel, with `NETLINK_CAP_ACK` (error ACKs do not
/// echo the whole request, so more fit in the buffer), large buffers and a receive timeout.
#[derive(Debug)]
pub struct SysSocket {
    socket: Socket,
    port: u32,
    buffers: (usize, usize),
    timeout: Duration,
}

fn setup(op: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Socket { op, source }
}

impl SysSocket {
    /// Opens a socket of `protocol` in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`NetlinkError::Socket`] naming the call that failed.
    pub fn open(protocol: Protocol, options: SocketOptions) -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(protocol.number()).map_err(setup("socket"))?;
        let addr = socket.bind_auto().map_err(setup("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(setup("connect"))?;
        socket
            .set_cap_ack(true)
            .map_err(setup("setsockopt(NETLINK_CAP_ACK)"))?;
        let fd = socket.as_fd();
        let timeout = TimeVal::new(
            i64::try_from(options.recv_timeout.as_secs()).unwrap_or(i64::MAX),
            i64::from(options.recv_timeout.subsec_micros()),
        );
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| setup("setsockopt(SO_RCVTIMEO)")(e.into()))?;
        // Failures below only shrink the batches. The kernel doubles the value (socket(7)).
        if setsockopt(&fd, sockopt::RcvBufForce, &(options.rcvbuf_bytes / 2)).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &(options.rcvbuf_bytes / 2));
        }
        if setsockopt(&fd, sockopt::SndBufForce, &(options.sndbuf_bytes / 2)).is_err() {
            let _ = setsockopt(&fd, sockopt::SndBuf, &(options.sndbuf_bytes / 2));
        }
        // The kernel's defaults (`net.core.{r,w}mem_default`) if the sizes cannot be read.
        let rcvbuf = getsockopt(&fd, sockopt::RcvBuf).unwrap_or(212_992);
        let sndbuf = getsockopt(&fd, sockopt::SndBuf).unwrap_or(212_992);
        Ok(SysSocket {
            port: addr.port_number(),
            socket,
            buffers: (rcvbuf, sndbuf),
            timeout: options.recv_timeout,
        })
    }

    /// Sets the receive buffer to `bytes` (`SO_RCVBUFFORCE`, root only), whatever the batch
    /// limits assume: for tests of lost ACKs.
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn force_rcvbuf(&mut self, bytes: usize) -> io::Result<()> {
        setsockopt(&self.socket.as_fd(), sockopt::RcvBufForce, &bytes).map_err(io::Error::from)
    }
}

impl Datagrams for SysSocket {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        self.socket.send(datagram, 0).map(drop)
    }

    fn recv(&mut self, buf: &mut Vec<u8>, wait: bool) -> io::Result<usize> {
        buf.clear();
        let flags = libc::MSG_TRUNC | if wait { 0 } else { libc::MSG_DONTWAIT };
        self.socket.recv(buf, flags)
    }

    fn port(&self) -> u32 {
        self.port
    }

    fn buffer_sizes(&self) -> (usize, usize) {
        self.buffers
    }

    fn recv_timeout(&self) -> Duration {
        self.timeout
    }

    fn join_group(&mut self, group: u32) -> io::Result<()> {
        self.socket.add_membership(group)
    }

    fn grow_sndbuf(&mut self, datagram_bytes: usize) -> io::Result<usize> {
        // `netlink_sendmsg` refuses a datagram above `sk_sndbuf - 32`, and the kernel doubles
        // the value given (socket(7)); `SO_SNDBUFFORCE` (CAP_NET_ADMIN) passes `wmem_max`, as
        // `nft` does for its batches (`mnl_set_sndbuffer`).
        let wanted = (datagram_bytes + 64).div_ceil(2);
        let fd = self.socket.as_fd();
        setsockopt(&fd, sockopt::SndBufForce, &wanted).map_err(io::Error::from)?;
        let sndbuf = getsockopt(&fd, sockopt::SndBuf).map_err(io::Error::from)?;
        self.buffers.1 = sndbuf;
        Ok(sndbuf)
    }
}
