//! `IP_PKTINFO` for capture mode. A captured datagram arrives at our socket with its
//! destination rewritten by `REDIRECT` (to 127.0.0.1, or the incoming interface's address); the
//! reply must leave from exactly that address, or conntrack does not recognise it as the reply
//! of the redirected flow and does not restore the VIP as its source. A wildcard socket would
//! let routing choose the source, so we read each datagram's destination with `recvmsg` and
//! send the replies from it with `sendmsg`. nix's wrappers are safe; no `unsafe` here.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::libc::{in_addr, in_pktinfo};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Asks the kernel for each datagram's destination address.
pub(super) fn enable(socket: &UdpSocket) -> io::Result<()> {
    setsockopt(socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)
}

/// Receives one datagram: its length, its sender, and the address it was sent to.
pub(super) async fn recv(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Ipv4Addr>)> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let mut space = nix::cmsg_space!(in_pktinfo);
            let msg = recvmsg::<SockaddrIn>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
            let from = msg
                .address
                .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
                .ok_or_else(|| io::Error::other("datagram without a source address"))?;
            let dst = msg.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|cmsg| match cmsg {
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)))
                    }
                    _ => None,
                })
            });
            Ok((msg.bytes, from, dst))
        })
        .await
}

/// Sends `data` to `to` from the local address `source`.
pub(super) async fn send_from(
    socket: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    source: Ipv4Addr,
) -> io::Result<usize> {
    let SocketAddr::V4(to) = to else {
        return socket.send_to(data, to).await;
    };
    let dest = SockaddrIn::from(to);
    let info = in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: in_addr {
            s_addr: u32::from(source).to_be(),
        },
        ipi_addr: in_addr { s_addr: 0 },
    };
    socket
        .async_io(Interest::WRITABLE, || {
            sendmsg(
                socket.as_raw_fd(),
                &[IoSlice::new(data)],
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&dest),
            )
            .map_err(io::Error::from)
        })
        .await
}
