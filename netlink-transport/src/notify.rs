//! Notifications: a [`Connection`] that joined multicast groups
//! ([`Connection::join_group`]) receives the kernel's change messages
//! ([`Connection::recv_notifications`]) besides the replies to its own requests.
//!
//! A notification is told from a reply by its port id: the kernel sends our replies to our
//! port, and a notification carries the port of whoever made the change (0 for the kernel's
//! own changes: `rtnl_notify`, `nlmsg_notify` in `net/netlink/af_netlink.c`). So a change
//! made *on the subscribed connection itself* is notified with our port and not told from a
//! stale reply: skipped. Subscribe a connection that only reads (dumps), as a watcher does.
//! Notifications that arrive while a request or dump runs are kept, in order, for the next
//! [`Connection::recv_notifications`]: applied after the dump they are idempotent for what the
//! dump already saw, and correct for what it did not.
//!
//! When the socket's queue overflows, the kernel drops messages and flags the socket with
//! `ENOBUFS` (`netlink_overrun`). Notifications are then lost, and what the caller follows is
//! stale: [`Notifications::Lost`] says so once, after discarding what was queued, and the caller
//! dumps again (the rtnetlink pattern: `ip monitor` and every rtnetlink cache do the same).

use std::collections::VecDeque;
use std::io;

use netlink_packet_core::DecodeError;
use tracing::debug;

use crate::connection::{recv, Connection, RecvFault};
use crate::errno::{Errno, ENOBUFS};
use crate::error::{NetlinkError, RequestId};
use crate::message::{messages, Reply};
use crate::socket::Datagrams;

/// The most notifications kept while requests run; past it they count as lost (dump again).
const KEPT_LIMIT: usize = 65_536;
/// The most datagrams read and dropped when notifications were lost.
const DISCARD_LIMIT: usize = 4096;

/// What one call of [`Connection::recv_notifications`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Notifications {
    /// This many notification messages were fed to the callback.
    Received(usize),
    /// None came: none were queued (not waiting), or none within the receive timeout.
    Idle,
    /// The kernel dropped notifications (`ENOBUFS`, or more than we could keep): what the
    /// caller built from them is stale. What was queued is discarded; dump again, then go on
    /// receiving (notifications during the dump are kept for after it).
    Lost,
}

/// One notification kept aside while a request or dump ran.
#[derive(Debug)]
struct Kept {
    message_type: u16,
    flags: u16,
    payload: Vec<u8>,
}

/// The multicast side of a connection: the groups joined, the notifications kept while
/// requests ran, and whether some were lost.
#[derive(Debug, Default)]
pub(crate) struct Subscription {
    groups: Vec<u32>,
    kept: VecDeque<Kept>,
    lost: bool,
}

impl Subscription {
    /// Whether any group was joined.
    pub(crate) fn is_active(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Records that the kernel dropped messages if `error` is `ENOBUFS` (seen by a request or
    /// dump).
    pub(crate) fn note_error(&mut self, error: &io::Error) {
        if Errno::of(error) == Some(ENOBUFS) {
            self.note_loss();
        }
    }

    /// Records that notifications may be lost (`ENOBUFS`, a truncated datagram): what was
    /// kept before is superseded by the dump the caller must make.
    pub(crate) fn note_loss(&mut self) {
        if self.is_active() {
            self.lost = true;
            self.kept.clear();
        }
    }

    /// Whether notifications were lost since the last successful dump.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost
    }

    /// Keeps the notifications of `datagram` (messages not for `port`), read by a request or
    /// dump, for the next [`Connection::recv_notifications`].
    pub(crate) fn keep(&mut self, datagram: &[u8], port: u32) {
        if !self.is_active() {
            return;
        }
        for nl in messages(datagram) {
            // The request's own reading reports a malformed datagram.
            let Ok(nl) = nl else { return };
            if nl.port_number() == port {
                continue;
            }
            if self.kept.len() >= KEPT_LIMIT {
                self.note_loss();
                return;
            }
            self.kept.push_back(Kept {
                message_type: nl.message_type(),
                flags: nl.flags(),
                payload: nl.payload().to_vec(),
            });
        }
    }

    /// A dump succeeded: losses before it are covered by it.
    pub(crate) fn dumped(&mut self) {
        self.lost = false;
    }

    fn describe(&self) -> RequestId {
        RequestId {
            index: 0,
            seq: 0,
            description: format!("notifications of groups {:?}", self.groups),
        }
    }
}

impl<D: Datagrams> Connection<D> {
    /// Joins multicast group `group` (`NETLINK_ADD_MEMBERSHIP`; a group number such as
    /// `RTNLGRP_IPV4_IFADDR`, not a bit mask): its notifications then come to
    /// [`Connection::recv_notifications`]. Join before dumping, so that no change falls
    /// between the dump and the first notification. Changes this connection makes itself are
    /// not seen as notifications (see the module docs): watch on a connection of its own.
    ///
    /// # Errors
    /// [`NetlinkError::Socket`] with the OS error.
    pub fn join_group(&mut self, group: u32) -> Result<(), NetlinkError> {
        self.io
            .join_group(group)
            .map_err(|source| NetlinkError::Socket {
                op: "setsockopt(NETLINK_ADD_MEMBERSHIP)",
                source,
            })?;
        if !self.subscription.groups.contains(&group) {
            self.subscription.groups.push(group);
        }
        Ok(())
    }

    /// Feeds the next notifications to `each`: first those kept while requests ran, else those
    /// of one datagram (waiting up to the receive timeout when `wait`). Replies left over from
    /// an abandoned request are skipped. To read a burst, call again with `wait` false until
    /// [`Notifications::Idle`].
    ///
    /// A lost notification ([`Notifications::Lost`]) is reported once, and everything queued is
    /// discarded with it: dump again. A truncated or malformed datagram counts as lost too
    /// (what it said is unknown).
    ///
    /// # Errors
    /// The `DecodeError` of `each` as [`NetlinkError::Malformed`] (the other notifications of
    /// its datagram are dropped); [`NetlinkError::Recv`] when the socket fails.
    pub fn recv_notifications(
        &mut self,
        wait: bool,
        mut each: impl FnMut(Reply<'_>) -> Result<(), DecodeError>,
    ) -> Result<Notifications, NetlinkError> {
        if std::mem::take(&mut self.subscription.lost) {
            self.discard_notifications();
            return Ok(Notifications::Lost);
        }
        if !self.subscription.kept.is_empty() {
            let kept = std::mem::take(&mut self.subscription.kept);
            let count = kept.len();
            for k in &kept {
                let reply = Reply {
                    message_type: k.message_type,
                    flags: k.flags,
                    payload: &k.payload,
                };
                each(reply).map_err(|source| NetlinkError::Malformed {
                    request: self.subscription.describe(),
                    source,
                })?;
            }
            return Ok(Notifications::Received(count));
        }
        let port = self.io.port();
        loop {
            let datagram = match recv(&mut self.io, &mut self.buf, wait) {
                Ok(datagram) => datagram,
                Err(RecvFault::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(RecvFault::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Notifications::Idle)
                }
                Err(RecvFault::Io(e)) if Errno::of(&e) == Some(ENOBUFS) => {
                    self.discard_notifications();
                    return Ok(Notifications::Lost);
                }
                Err(RecvFault::Io(source)) => {
                    return Err(NetlinkError::Recv {
                        request: self.subscription.describe(),
                        source,
                    })
                }
                Err(RecvFault::Truncated { len, kept }) => {
                    debug!(len, kept, "netlink: a notification datagram was truncated");
                    self.discard_notifications();
                    return Ok(Notifications::Lost);
                }
            };
            let mut count = 0;
            let mut malformed = false;
            for nl in messages(datagram) {
                let Ok(nl) = nl else {
                    malformed = true;
                    break;
                };
                if nl.port_number() == port {
                    // A reply to an abandoned request of ours.
                    continue;
                }
                count += 1;
                let reply = Reply {
                    message_type: nl.message_type(),
                    flags: nl.flags(),
                    payload: nl.payload(),
                };
                each(reply).map_err(|source| NetlinkError::Malformed {
                    request: self.subscription.describe(),
                    source,
                })?;
            }
            if malformed {
                // What the rest of it said is unknown.
                debug!(count, "netlink: a malformed notification datagram");
                self.discard_notifications();
                return Ok(Notifications::Lost);
            }
            if count > 0 {
                return Ok(Notifications::Received(count));
            }
        }
    }

    /// Drops every notification kept or queued (without waiting), and the loss flag: for a
    /// caller about to dump again.
    pub fn discard_notifications(&mut self) {
        self.drop_queued();
        self.subscription.lost = false;
    }

    /// Drops every notification kept or queued, without waiting; a dump after a loss does so
    /// first, so that nothing read before the loss is applied after it.
    pub(crate) fn drop_queued(&mut self) {
        self.subscription.kept.clear();
        for _ in 0..DISCARD_LIMIT {
            match recv(&mut self.io, &mut self.buf, false) {
                Ok(_) | Err(RecvFault::Truncated { .. }) => {}
                Err(RecvFault::Io(e))
                    if e.kind() == io::ErrorKind::Interrupted || Errno::of(&e) == Some(ENOBUFS) => {
                }
                Err(RecvFault::Io(_)) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Notifications against [`crate::fake::FakeKernel`]: delivery in order, notifications
    //! kept while a dump runs, losses (`ENOBUFS`) reported once and healed by a dump.

    use netlink_packet_core::DecodeError;

    use super::Notifications;
    use crate::fake::{ack, done, nlmsg, notification, FakeKernel, FAKE_PORT};
    use crate::{Connection, NetlinkError, RawRequest, Reply};

    const NLM_F_MULTI: u16 = 0x2;
    /// A family's message types, as rtnetlink's `RTM_NEWADDR` and `RTM_DELADDR`.
    const NEW: u16 = 20;
    const DEL: u16 = 21;
    /// `RTNLGRP_IPV4_IFADDR`.
    const GROUP: u32 = 5;

    fn get() -> RawRequest {
        RawRequest {
            bytes: nlmsg(22, 0, 0, &[]),
            description: "get".to_owned(),
        }
    }

    /// The (type, payload) of each notification fed.
    type Seen = Vec<(u16, Vec<u8>)>;

    /// Receives once and returns the outcome and what was fed.
    fn receive(
        conn: &mut Connection<FakeKernel>,
        wait: bool,
    ) -> (Result<Notifications, NetlinkError>, Seen) {
        let mut seen = Vec::new();
        let outcome = conn.recv_notifications(wait, |r: Reply<'_>| {
            seen.push((r.message_type, r.payload.to_vec()));
            Ok(())
        });
        (outcome, seen)
    }

    fn subscribed(kernel: &FakeKernel) -> Connection<FakeKernel> {
        let mut conn = Connection::new(kernel.clone());
        conn.join_group(GROUP).expect("join");
        conn
    }

    #[test]
    fn joined_groups_deliver_their_notifications_in_order_then_idle() {
        let kernel = FakeKernel::acking();
        let mut conn = subscribed(&kernel);
        assert_eq!(kernel.groups(), vec![GROUP]);
        kernel.notify([notification(NEW, &[1]), notification(DEL, &[2])].concat());
        kernel.notify(notification(NEW, &[3]));
        let (outcome, seen) = receive(&mut conn, true);
        assert_eq!(outcome.expect("received"), Notifications::Received(2));
        assert_eq!(seen, vec![(NEW, vec![1]), (DEL, vec![2])], "one datagram");
        let (outcome, seen) = receive(&mut conn, false);
        assert_eq!(outcome.expect("received"), Notifications::Received(1));
        assert_eq!(seen, vec![(NEW, vec![3])]);
        let (outcome, seen) = receive(&mut conn, true);
        assert_eq!(outcome.expect("idle"), Notifications::Idle, "{seen:?}");
    }

    #[test]
    fn notifications_during_a_dump_are_kept_for_after_it_in_order() {
        let kernel = FakeKernel::new(|m| {
            vec![
                nlmsg(NEW, NLM_F_MULTI, m.seq, &[1]),
                notification(DEL, &[1]),
                [
                    nlmsg(NEW, NLM_F_MULTI, m.seq, &[2]),
                    notification(NEW, &[3]),
                ]
                .concat(),
                done(m.seq, 0),
            ]
        });
        let mut conn = subscribed(&kernel);
        let mut dumped = Vec::new();
        conn.dump(&get(), |r| {
            dumped.push(r.payload.to_vec());
            Ok(())
        })
        .expect("dump");
        assert_eq!(
            dumped,
            vec![vec![1], vec![2]],
            "only the dump's own replies"
        );
        let (outcome, seen) = receive(&mut conn, true);
        assert_eq!(outcome.expect("kept"), Notifications::Received(2));
        assert_eq!(seen, vec![(DEL, vec![1]), (NEW, vec![3])]);
        assert_eq!(
            receive(&mut conn, true).0.expect("idle"),
            Notifications::Idle
        );
    }

    #[test]
    fn an_unsubscribed_connection_skips_foreign_messages_as_before() {
        let kernel = FakeKernel::new(|m| vec![notification(NEW, &[9]), done(m.seq, 0)]);
        let mut conn = Connection::new(kernel.clone());
        conn.dump(&get(), |_| Ok(())).expect("dump");
        assert_eq!(
            receive(&mut conn, true).0.expect("idle"),
            Notifications::Idle
        );
    }

    #[test]
    fn an_overflow_is_lost_once_discards_the_queue_and_a_dump_follows_cleanly() {
        let kernel =
            FakeKernel::new(|m| vec![nlmsg(NEW, NLM_F_MULTI, m.seq, &[7]), done(m.seq, 0)])
                .with_queue_limit(2);
        let mut conn = subscribed(&kernel);
        for i in 0..5 {
            kernel.notify(notification(NEW, &[i]));
        }
        let (outcome, seen) = receive(&mut conn, true);
        assert_eq!(outcome.expect("lost"), Notifications::Lost);
        assert!(seen.is_empty(), "nothing stale is fed: {seen:?}");
        assert_eq!(
            kernel.queued(),
            0,
            "what was queued before the loss is discarded"
        );
        assert_eq!(
            receive(&mut conn, true).0.expect("idle"),
            Notifications::Idle
        );
        // The caller dumps again; new changes come after it.
        conn.dump(&get(), |_| Ok(())).expect("dump");
        kernel.notify(notification(DEL, &[7]));
        let (outcome, seen) = receive(&mut conn, true);
        assert_eq!(outcome.expect("received"), Notifications::Received(1));
        assert_eq!(seen, vec![(DEL, vec![7])]);
    }

    #[test]
    fn an_overflow_seen_by_a_request_is_reported_as_lost_afterwards() {
        let kernel = FakeKernel::new(|m| vec![ack(m.seq, 0)]).with_queue_limit(1);
        let mut conn = subscribed(&kernel);
        kernel.notify(notification(NEW, &[1]));
        // The queue is full: the ACK is dropped, the request sees ENOBUFS.
        let error = conn.request(&get(), |_| Ok(())).expect_err("ack lost");
        assert!(error.outcome_unknown(), "{error}");
        let (outcome, seen) = receive(&mut conn, true);
        assert_eq!(outcome.expect("lost"), Notifications::Lost);
        assert!(
            seen.is_empty(),
            "the kept notification predates the loss: {seen:?}"
        );
        assert_eq!(
            receive(&mut conn, true).0.expect("idle"),
            Notifications::Idle
        );
    }

    #[test]
    fn a_dump_after_a_loss_covers_it_and_drops_what_was_queued_before() {
        let kernel = FakeKernel::new(|m| {
            if m.message_type == 22 {
                vec![
                    nlmsg(NEW, NLM_F_MULTI, m.seq, &[1]),
                    notification(NEW, &[2]),
                    done(m.seq, 0),
                ]
            } else {
                vec![ack(m.seq, 0)]
            }
        })
        .with_queue_limit(1);
        let mut conn = subscribed(&kernel);
        // Queued before the overflow; what the overflow dropped (the ACK here, a removal of
        // 1 in real life) would have come after it.
        kernel.notify(notification(NEW, &[1]));
        let ping = RawRequest {
            bytes: nlmsg(23, 0, 0, &[]),
            description: "ping".to_owned(),
        };
        conn.request(&ping, |_| Ok(())).expect_err("ack lost");
        let kernel = kernel.with_queue_limit(usize::MAX);
        kernel.notify(notification(DEL, &[1]));
        conn.dump(&get(), |_| Ok(())).expect("dump");
        let (outcome, seen) = receive(&mut conn, true);
        assert_eq!(
            outcome.expect("kept"),
            Notifications::Received(1),
            "no loss to report after the dump, and only what came during it"
        );
        assert_eq!(seen, vec![(NEW, vec![2])]);
    }

    #[test]
    fn stale_replies_are_not_notifications_and_bad_datagrams_are_losses() {
        let kernel = FakeKernel::acking();
        let mut conn = subscribed(&kernel);
        // A reply to an abandoned request of ours: our port.
        kernel.push_datagram(nlmsg(NEW, NLM_F_MULTI, 41, &[5]));
        kernel.push_datagram(notification(NEW, &[6]));
        let (outcome, seen) = receive(&mut conn, true);
        assert_eq!(outcome.expect("received"), Notifications::Received(1));
        assert_eq!(seen, vec![(NEW, vec![6])]);
        assert_eq!(
            crate::fake::nlmsg(NEW, 0, 0, &[])[12..16],
            FAKE_PORT.to_ne_bytes()
        );
        let mut bad = notification(NEW, &[1; 8]);
        bad[..4].copy_from_slice(&400u32.to_ne_bytes());
        kernel.push_datagram(bad);
        kernel.push_datagram(notification(NEW, &[2]));
        let (outcome, seen) = receive(&mut conn, true);
        assert_eq!(outcome.expect("lost"), Notifications::Lost, "{seen:?}");
        assert_eq!(kernel.queued(), 0);
    }

    #[test]
    fn a_notification_the_family_cannot_parse_names_the_groups() {
        let kernel = FakeKernel::acking();
        let mut conn = subscribed(&kernel);
        kernel.notify(notification(NEW, &[1]));
        let error = conn
            .recv_notifications(true, |_| Err(DecodeError::from("bad IFA_LOCAL")))
            .expect_err("undecodable");
        assert!(matches!(error, NetlinkError::Malformed { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "netlink request 0 (notifications of groups [5], seq 0): malformed reply"
        );
    }
}
