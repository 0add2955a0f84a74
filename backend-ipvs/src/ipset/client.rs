//! [`NetlinkIpset`]: [`IpsetOps`] over nfnetlink.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use netlink_transport::NetlinkError;
use tracing::{debug, trace};

use super::attr::DataAttr;
use super::constants::*;
use super::error::IpsetError;
use super::message::{IpsetAttr, IpsetCmd, IpsetMessage};
use super::model::{Family, SetEntry, SetListing, SetType};
use super::ops::{IpsetOp, IpsetOps};
use super::socket::IpsetSocket;

/// The most bytes of entries in one add or del message. Small enough that the kernel's copy
/// of a failed message (see [`super::socket`]) fits the receive buffer many times over; big
/// enough for about 400 entries.
pub(crate) const ENTRY_BYTES_PER_MESSAGE: usize = 16 * 1024;

/// The kernel's ipsets over a `NETLINK_NETFILTER` socket, in this thread's network namespace
/// at [`NetlinkIpset::connect`].
#[derive(Debug)]
pub struct NetlinkIpset {
    socket: IpsetSocket,
    /// The protocol version both sides speak (6 or 7).
    protocol: u8,
    /// The highest revision of each set type the kernel has, asked once per type.
    revisions: Mutex<BTreeMap<(SetType, Family), u8>>,
}

impl NetlinkIpset {
    /// Opens the socket and agrees on a protocol version with the kernel
    /// (`IPSET_CMD_PROTOCOL`: the kernel answers its own version, and from version 7 on
    /// the oldest it still accepts).
    ///
    /// # Errors
    /// [`IpsetError::Unavailable`] when the socket does not open, the kernel does not answer
    /// (no `ip_set` module), or it speaks only a protocol older than 6.
    pub fn connect() -> Result<Self, IpsetError> {
        let unavailable = |reason: &str, source| IpsetError::Unavailable {
            reason: reason.to_owned(),
            source,
        };
        let socket = IpsetSocket::connect()
            .map_err(|e| unavailable("NETLINK_NETFILTER socket", Some(e.into_io())))?;
        let query = IpsetMessage::new(
            IpsetCmd::Protocol,
            vec![IpsetAttr::Protocol(IPSET_PROTOCOL)],
        );
        let Some(answer) = socket.batch(&[(query, 0)]).pop() else {
            return Err(unavailable("protocol query unanswered", None));
        };
        if let Some(refusal) = answer.refusal() {
            return Err(unavailable(
                "protocol query refused",
                Some(io::Error::from_raw_os_error(refusal.errno)),
            ));
        }
        answer
            .result
            .map_err(|e| unavailable("protocol query", Some(e.into_io())))?;
        let (mut theirs, mut min) = (None, None);
        for attr in answer.replies.iter().flat_map(|m| &m.attrs) {
            match attr {
                IpsetAttr::Protocol(v) => theirs = Some(*v),
                IpsetAttr::ProtocolMin(v) => min = Some(*v),
                _ => {}
            }
        }
        let theirs = theirs.ok_or_else(|| unavailable("no protocol in the reply", None))?;
        let protocol = theirs.min(IPSET_PROTOCOL);
        if protocol < IPSET_PROTOCOL_MIN || min.is_some_and(|m| m > IPSET_PROTOCOL) {
            return Err(unavailable(
                &format!("kernel protocol {theirs} (min {min:?}); we speak 6 and 7"),
                None,
            ));
        }
        debug!(protocol, kernel = theirs, "ipset protocol");
        Ok(NetlinkIpset {
            socket,
            protocol,
            revisions: Mutex::new(BTreeMap::new()),
        })
    }

    /// The protocol version in use.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    fn message(&self, cmd: IpsetCmd, mut attrs: Vec<IpsetAttr>) -> IpsetMessage {
        attrs.insert(0, IpsetAttr::Protocol(self.protocol));
        IpsetMessage::new(cmd, attrs)
    }

    /// The highest revision of `set_type` in `family` (`IPSET_CMD_TYPE`), asked once.
    fn revision(&self, set_type: SetType, family: Family) -> Result<u8, IpsetError> {
        let mut cache = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rev) = cache.get(&(set_type, family)) {
            return Ok(*rev);
        }
        let query = self.message(
            IpsetCmd::Type,
            vec![
                IpsetAttr::TypeName(set_type.name().to_owned()),
                IpsetAttr::Family(family.number()),
            ],
        );
        let set = format!("{set_type} family {}", family.name());
        let Some(answer) = self.socket.batch(&[(query, 0)]).pop() else {
            return Err(IpsetError::Decode {
                cmd: IpsetCmd::Type,
                source: "no answer to the type query".into(),
            });
        };
        answer
            .result
            .map_err(|e| socket_error(IpsetCmd::Type, &set, e))?;
        let rev = answer
            .replies
            .iter()
            .flat_map(|m| &m.attrs)
            .find_map(|a| match a {
                IpsetAttr::Revision(r) => Some(*r),
                _ => None,
            })
            .ok_or_else(|| IpsetError::Invalid {
                set,
                reason: "type reply without IPSET_ATTR_REVISION".to_owned(),
            })?;
        cache.insert((set_type, family), rev);
        Ok(rev)
    }

    /// The messages of `ops`, each with the step it came from and, for add and del, the
    /// index of its first entry.
    fn messages(&self, ops: &[IpsetOp]) -> Result<Vec<Request>, IpsetError> {
        let mut out = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            let name = |s: &str| IpsetAttr::SetName(s.to_owned());
            let single = |cmd, attrs, flags| Request {
                msg: self.message(cmd, attrs),
                flags,
                step,
                first_entry: 0,
            };
            match op {
                IpsetOp::Create(spec) => {
                    check_name(&spec.name)?;
                    let revision = self.revision(spec.set_type, spec.family)?;
                    let mut data = Vec::new();
                    if let Some(h) = spec.hash_size {
                        data.push(DataAttr::HashSize(h));
                    }
                    data.push(DataAttr::MaxElem(spec.max_elements));
                    let attrs = vec![
                        name(&spec.name),
                        IpsetAttr::TypeName(spec.set_type.name().to_owned()),
                        IpsetAttr::Revision(revision),
                        IpsetAttr::Family(spec.family.number()),
                        IpsetAttr::Data(data),
                    ];
                    // No NLM_F_EXCL: an identical existing set is fine (`-exist`).
                    out.push(single(IpsetCmd::Create, attrs, NLM_F_CREATE));
                }
                IpsetOp::Destroy(s) => out.push(single(IpsetCmd::Destroy, vec![name(s)], 0)),
                IpsetOp::Flush(s) => out.push(single(IpsetCmd::Flush, vec![name(s)], 0)),
                IpsetOp::Swap(a, b) | IpsetOp::Rename(a, b) => {
                    check_name(b)?;
                    let cmd = if matches!(op, IpsetOp::Swap(..)) {
                        IpsetCmd::Swap
                    } else {
                        IpsetCmd::Rename
                    };
                    let attrs = vec![name(a), IpsetAttr::SetName2(b.clone())];
                    out.push(single(cmd, attrs, 0));
                }
                IpsetOp::Add(s, entries) | IpsetOp::Del(s, entries) => {
                    let cmd = if matches!(op, IpsetOp::Add(..)) {
                        IpsetCmd::Add
                    } else {
                        IpsetCmd::Del
                    };
                    for (first_entry, adt) in adt_chunks(entries) {
                        // IPSET_ATTR_LINENO at the top asks the kernel to name a failing
                        // entry by its IPSET_ATTR_CADT_LINENO. No NLM_F_EXCL: `-exist`.
                        let attrs = vec![name(s), IpsetAttr::Lineno(0), IpsetAttr::Adt(adt)];
                        out.push(Request {
                            msg: self.message(cmd, attrs),
                            flags: 0,
                            step,
                            first_entry,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// One message of a batch and where it came from.
struct Request {
    msg: IpsetMessage,
    flags: u16,
    step: usize,
    first_entry: usize,
}

fn check_name(name: &str) -> Result<(), IpsetError> {
    if name.is_empty() || name.len() >= IPSET_MAXNAMELEN || name.contains('\0') {
        return Err(IpsetError::Invalid {
            set: name.to_owned(),
            reason: format!("a set name is 1 to {} bytes", IPSET_MAXNAMELEN - 1),
        });
    }
    Ok(())
}

/// Splits `entries` into `IPSET_ATTR_ADT` lists of at most [`ENTRY_BYTES_PER_MESSAGE`] bytes,
/// each entry numbered (`IPSET_ATTR_CADT_LINENO`, from 1 within its list); returns each list
/// with the index of its first entry.
fn adt_chunks(entries: &[SetEntry]) -> Vec<(usize, Vec<Vec<DataAttr>>)> {
    use netlink_packet_core::Emitable;
    let mut chunks = Vec::new();
    let (mut current, mut bytes, mut first) = (Vec::new(), 0, 0);
    for (i, entry) in entries.iter().enumerate() {
        let mut attrs = entry.to_attrs();
        let lineno = u32::try_from(i - first + 1).expect("a chunk holds far fewer than 2^32");
        attrs.push(DataAttr::Lineno(lineno));
        let size = 4 + attrs.as_slice().buffer_len();
        if !current.is_empty() && bytes + size > ENTRY_BYTES_PER_MESSAGE {
            chunks.push((first, std::mem::take(&mut current)));
            bytes = 0;
            first = i;
            // Renumber from 1 in the new list.
            attrs.pop();
            attrs.push(DataAttr::Lineno(1));
        }
        bytes += size;
        current.push(attrs);
    }
    if !current.is_empty() {
        chunks.push((first, current));
    }
    chunks
}

fn socket_error(cmd: IpsetCmd, set: &str, e: NetlinkError) -> IpsetError {
    match e {
        NetlinkError::Kernel { errno, .. } => IpsetError::Kernel {
            cmd,
            set: set.to_owned(),
            entry: None,
            errno: errno.raw(),
        },
        NetlinkError::Malformed { source, .. } => IpsetError::Decode { cmd, source },
        other => IpsetError::Socket {
            cmd,
            set: set.to_owned(),
            source: other.into_io(),
        },
    }
}

fn op_target(op: &IpsetOp) -> String {
    match op {
        IpsetOp::Swap(a, b) | IpsetOp::Rename(a, b) => format!("{a} -> {b}"),
        other => other.set().to_owned(),
    }
}

impl IpsetOps for NetlinkIpset {
    fn apply(&self, ops: &[IpsetOp]) -> Result<(), IpsetError> {
        let requests = self.messages(ops)?;
        if requests.is_empty() {
            return Ok(());
        }
        let wire: Vec<(IpsetMessage, u16)> =
            requests.iter().map(|r| (r.msg.clone(), r.flags)).collect();
        trace!(messages = wire.len(), "ipset batch");
        let answers = self.socket.batch(&wire);
        let mut first_error = None;
        let mut refused = 0;
        for (request, answer) in requests.iter().zip(answers) {
            let refusal = answer.refusal();
            let Err(failure) = answer.result else {
                continue;
            };
            refused += 1;
            let op = &ops[request.step];
            let error = match refusal {
                Some(refusal) => {
                    let entry = match (op, refusal.lineno) {
                        (IpsetOp::Add(_, entries) | IpsetOp::Del(_, entries), Some(line))
                            if line > 0 =>
                        {
                            entries
                                .get(request.first_entry + line as usize - 1)
                                .map(ToString::to_string)
                        }
                        _ => None,
                    };
                    IpsetError::Kernel {
                        cmd: request.msg.cmd,
                        set: op_target(op),
                        entry,
                        errno: refusal.errno,
                    }
                }
                // A lost ACK or a bad reply: this request's outcome is unknown.
                None => socket_error(request.msg.cmd, &op_target(op), failure),
            };
            if first_error.is_none() {
                first_error = Some(error);
            } else {
                debug!(error = %error, "ipset: further refusal in the same batch");
            }
        }
        match first_error {
            Some(e) => {
                debug!(refused, "ipset batch refused in part");
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn list_names(&self) -> Result<Vec<String>, IpsetError> {
        let msg = self.message(
            IpsetCmd::List,
            vec![IpsetAttr::Flags(IPSET_FLAG_LIST_SETNAME)],
        );
        let replies = self
            .socket
            .dump(&msg)
            .map_err(|e| socket_error(IpsetCmd::List, "(all)", e))?;
        let mut names: Vec<String> = Vec::new();
        for reply in replies {
            for attr in reply.attrs {
                if let IpsetAttr::SetName(n) = attr {
                    if names.last() != Some(&n) {
                        names.push(n);
                    }
                }
            }
        }
        Ok(names)
    }

    fn list(&self, name: &str) -> Result<SetListing, IpsetError> {
        check_name(name)?;
        let msg = self.message(IpsetCmd::List, vec![IpsetAttr::SetName(name.to_owned())]);
        let replies = self
            .socket
            .dump(&msg)
            .map_err(|e| socket_error(IpsetCmd::List, name, e))?;
        listing(name, &replies)
    }
}

/// Folds the messages of a one-set list dump into a [`SetListing`]. A big set comes in many
/// messages: the first has the header (type, family, `IPSET_ATTR_DATA`), every one has a
/// part of the entries (`IPSET_ATTR_ADT`).
pub(crate) fn listing(name: &str, replies: &[IpsetMessage]) -> Result<SetListing, IpsetError> {
    let mut out = SetListing {
        name: name.to_owned(),
        set_type: None,
        type_name: String::new(),
        family: None,
        max_elements: None,
        entries: Vec::new(),
    };
    let mut raw_entries = Vec::new();
    for reply in replies {
        for attr in &reply.attrs {
            match attr {
                IpsetAttr::TypeName(t) => {
                    out.type_name = t.clone();
                    out.set_type = SetType::from_name(t);
                }
                IpsetAttr::Family(f) => out.family = Family::from_number(*f),
                IpsetAttr::Data(data) => {
                    for d in data {
                        if let DataAttr::MaxElem(m) = d {
                            out.max_elements = Some(*m);
                        }
                    }
                }
                IpsetAttr::Adt(entries) => raw_entries.extend(entries.iter()),
                _ => {}
            }
        }
    }
    if let Some(set_type) = out.set_type {
        for attrs in raw_entries {
            let entry =
                SetEntry::from_attrs(set_type, attrs).map_err(|reason| IpsetError::Invalid {
                    set: name.to_owned(),
                    reason,
                })?;
            out.entries.push(entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;
    use proxy_core::table::Protocol;

    use super::*;

    #[test]
    fn big_entry_lists_split_into_numbered_messages_under_the_size_limit() {
        let entries: Vec<SetEntry> = (0..3000u32)
            .map(|n| SetEntry::IpPort {
                addr: std::net::IpAddr::from([198, 18, (n >> 8) as u8, n as u8]),
                protocol: Protocol::Udp,
                port: 53,
            })
            .collect();
        let chunks = adt_chunks(&entries);
        assert!(chunks.len() > 1, "3,000 entries do not fit one message");
        let mut next = 0;
        for (first, adt) in &chunks {
            assert_eq!(*first, next, "chunks follow each other");
            let bytes: usize = adt.iter().map(|e| 4 + e.as_slice().buffer_len()).sum();
            assert!(bytes <= ENTRY_BYTES_PER_MESSAGE, "{bytes} bytes");
            for (i, attrs) in adt.iter().enumerate() {
                // The number the kernel echoes for a failing entry leads back to it.
                let line = attrs.iter().find_map(|a| match a {
                    DataAttr::Lineno(l) => Some(*l as usize),
                    _ => None,
                });
                assert_eq!(line, Some(i + 1));
                let entry = SetEntry::from_attrs(SetType::HashIpPort, attrs).expect("entry");
                assert_eq!(entry, entries[first + line.unwrap_or(0) - 1]);
            }
            next += adt.len();
        }
        assert_eq!(next, entries.len());
    }

    #[test]
    fn set_names_of_32_bytes_or_more_are_refused_before_sending() {
        assert!(check_name(&"S".repeat(31)).is_ok());
        let err = check_name(&"S".repeat(32)).expect_err("too long");
        assert!(err.to_string().contains("1 to 31 bytes"), "{err}");
        assert!(check_name("").is_err());
    }
}
