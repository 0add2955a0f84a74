//! [`FakeKernel`]: an in-memory kernel behind [`Datagrams`], so that a [`crate::Connection`]
//! (and a message family above it) can be tested without a socket: a handler answers each
//! request message, and tests can inject stale or malformed datagrams and overflow the
//! receive queue (`ENOBUFS`) to lose ACKs.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use netlink_packet_core::{NLMSG_DONE, NLMSG_ERROR};

use crate::errno::ENOBUFS;
use crate::message::messages;
use crate::socket::Datagrams;

/// The port id the fake kernel gives its socket, and puts in its replies.
pub const FAKE_PORT: u32 = 570_425_464;

/// One netlink message: `nlmsghdr` (len, type, flags, seq, [`FAKE_PORT`]) and `payload`,
/// padded to 4 bytes.
pub fn nlmsg(message_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(16 + payload.len()).unwrap_or(u32::MAX);
    let mut m = Vec::with_capacity(16 + payload.len() + 3);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&message_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&FAKE_PORT.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize((m.len() + 3) & !3, 0);
    m
}

/// The port id a notification carries in the fake: another process's (the one that made the
/// change), never ours.
pub const NOTIFIER_PORT: u32 = 4242;

/// A notification message: `nlmsghdr` (len, type, no flags, seq 0, [`NOTIFIER_PORT`]) and
/// `payload`, padded to 4 bytes.
pub fn notification(message_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = nlmsg(message_type, 0, 0, payload);
    m[12..16].copy_from_slice(&NOTIFIER_PORT.to_ne_bytes());
    m
}

/// `NLMSG_ERROR` for request `seq`: an ACK when `errno` is 0, else the refusal; the echoed
/// request header is capped, as with `NETLINK_CAP_ACK`.
pub fn ack(seq: u32, errno: i32) -> Vec<u8> {
    let mut payload = (-errno).to_ne_bytes().to_vec();
    payload.extend_from_slice(&nlmsg(0, 0x5, seq, &[])[..16]);
    // NLM_F_CAPPED: the echo is only the header.
    nlmsg(NLMSG_ERROR, 0x100, seq, &payload)
}

/// `NLMSG_DONE` ending dump `seq`, with `-errno` (0: a complete dump).
pub fn done(seq: u32, errno: i32) -> Vec<u8> {
    // NLM_F_MULTI.
    nlmsg(NLMSG_DONE, 0x2, seq, &(-errno).to_ne_bytes())
}

/// One message of a datagram the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `nlmsg_type`.
    pub message_type: u16,
    /// `nlmsg_flags`, as the transport stamped them.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// The payload after the header.
    pub payload: Vec<u8>,
}

type Handler = Box<dyn FnMut(&Received) -> Vec<Vec<u8>> + Send>;

struct State {
    handler: Handler,
    queue: VecDeque<Vec<u8>>,
    queue_limit: usize,
    overflowed: bool,
    received: Vec<Received>,
    sends: usize,
    groups: Vec<u32>,
}

/// An in-memory kernel: each message sent is handed to a handler, whose datagrams are queued
/// for `recv`. Clones share the state, so a test keeps one to look at what was sent.
///
/// A `recv` on an empty queue returns `WouldBlock` at once, which a waiting `recv` reports
/// as its timeout passing.
#[derive(Clone)]
pub struct FakeKernel {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FakeKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FakeKernel")
            .field("queued", &state.queue.len())
            .field("received", &state.received.len())
            .finish_non_exhaustive()
    }
}

impl FakeKernel {
    /// A kernel answering each request message with the datagrams `handler` returns.
    pub fn new(handler: impl FnMut(&Received) -> Vec<Vec<u8>> + Send + 'static) -> Self {
        FakeKernel {
            state: Arc::new(Mutex::new(State {
                handler: Box::new(handler),
                queue: VecDeque::new(),
                queue_limit: usize::MAX,
                overflowed: false,
                received: Vec::new(),
                sends: 0,
                groups: Vec::new(),
            })),
        }
    }

    /// A kernel that ACKs every request.
    pub fn acking() -> Self {
        FakeKernel::new(|m| vec![ack(m.seq, 0)])
    }

    /// Holds at most `datagrams` queued datagrams; more are dropped and the next `recv`
    /// fails with `ENOBUFS`, as a full receive buffer does.
    pub fn with_queue_limit(self, datagrams: usize) -> Self {
        self.lock().queue_limit = datagrams;
        self
    }

    /// Queues `datagram` as if the kernel had sent it (a stale or malformed reply).
    pub fn push_datagram(&self, datagram: Vec<u8>) {
        self.lock().queue.push_back(datagram);
    }

    /// Queues a notification datagram (messages from another port, see [`notification`]), as
    /// the kernel does for a multicast group the socket joined: subject to the queue limit,
    /// so that a burst past it fails the next `recv` with `ENOBUFS`.
    pub fn notify(&self, datagram: Vec<u8>) {
        let mut state = self.lock();
        if state.queue.len() >= state.queue_limit {
            state.overflowed = true;
        } else {
            state.queue.push_back(datagram);
        }
    }

    /// The multicast groups joined, in order.
    pub fn groups(&self) -> Vec<u32> {
        self.lock().groups.clone()
    }

    /// Every request message received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// How many datagrams were sent to it.
    pub fn sends(&self) -> usize {
        self.lock().sends
    }

    /// Datagrams still queued.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test handler poisons it; the state is still what it was.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Datagrams for FakeKernel {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        state.sends += 1;
        for nl in messages(datagram) {
            let nl = nl.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let message = Received {
                message_type: nl.message_type(),
                flags: nl.flags(),
                seq: nl.sequence_number(),
                payload: nl.payload().to_vec(),
            };
            let answers = (state.handler)(&message);
            state.received.push(message);
            for answer in answers {
                if state.queue.len() >= state.queue_limit {
                    state.overflowed = true;
                } else {
                    state.queue.push_back(answer);
                }
            }
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>, _wait: bool) -> io::Result<usize> {
        let mut state = self.lock();
        buf.clear();
        if std::mem::take(&mut state.overflowed) {
            return Err(ENOBUFS.to_io());
        }
        let datagram = state
            .queue
            .pop_front()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        let kept = datagram.len().min(buf.capacity());
        buf.extend_from_slice(&datagram[..kept]);
        Ok(datagram.len())
    }

    fn port(&self) -> u32 {
        FAKE_PORT
    }

    fn buffer_sizes(&self) -> (usize, usize) {
        (4 << 20, 1 << 20)
    }

    fn recv_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn join_group(&mut self, group: u32) -> io::Result<()> {
        self.lock().groups.push(group);
        Ok(())
    }
}
