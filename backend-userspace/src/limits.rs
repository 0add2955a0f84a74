//! Overload protection: how many TCP connections and UDP flows the proxy holds at once, per
//! service port and in all, and what an `accept` that fails for want of descriptors does.
//!
//! Every TCP connection holds two descriptors (client and upstream) and every UDP flow one, so
//! without a cap one service's idle connections take every descriptor the process may open:
//! other services' `accept`s fail with `EMFILE`, and connects to healthy endpoints fail too.
//! A [`Permit`] is taken before a connection is proxied (or a flow opened) and given back when
//! it ends; one that cannot be had refuses the new connection, counted by
//! [`crate::metrics::FailureReason`]. The limits are [`crate::UserspaceConfig::max_connections`],
//! [`crate::UserspaceConfig::max_connections_per_port`] and
//! [`crate::UserspaceConfig::udp_max_flows_total`], or derived from the open-file limit at each
//! sync ([`Limits::update`]).
//!
//! HAProxy's `maxconn` (global and per frontend) is the model; like it, a refused connection is
//! the proxy's local condition and never counts against an endpoint's health.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::UserspaceConfig;

/// One counted resource: in use now, and the most allowed.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    used: AtomicUsize,
    limit: AtomicUsize,
}

impl Gate {
    fn with_limit(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
        })
    }

    /// Counts one more if that stays within `limit`.
    fn try_take(self: &Arc<Self>, limit: usize) -> Option<Taken> {
        let before = self.used.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.used.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Taken(Arc::clone(self)))
    }

    /// In use now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One unit of a [`Gate`], given back on drop.
#[derive(Debug)]
struct Taken(Arc<Gate>);

impl Drop for Taken {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's or flow's place within the limits; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Permit {
    _global: Taken,
    _port: Option<Taken>,
}

/// Which limit refused a new connection or flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The service port holds its most connections.
    ServicePort,
    /// The proxy holds its most connections (or UDP flows) in all.
    Global,
}

/// The connection counts a per-service-port limit applies to: one per (service port,
/// protocol), shared by all its listeners.
pub(crate) type PortGate = Arc<Gate>;

/// The dataplane-wide limits and counts.
#[derive(Debug)]
pub(crate) struct Limits {
    tcp: Arc<Gate>,
    tcp_per_port: AtomicUsize,
    tcp_reserve: AtomicUsize,
    udp: Arc<Gate>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tcp: Gate::with_limit(usize::MAX),
            tcp_per_port: AtomicUsize::new(usize::MAX),
            tcp_reserve: AtomicUsize::new(0),
            udp: Gate::with_limit(usize::MAX),
        }
    }
}

impl Limits {
    /// Limits for `config` with `open_files` descriptors and `listeners` open.
    #[cfg(test)]
    pub(crate) fn new(config: &UserspaceConfig, open_files: u64, listeners: usize) -> Self {
        let limits = Self::default();
        limits.update(config, open_files, listeners);
        limits
    }

    /// Sets the limits from `config`, or where it names none from the descriptors left with
    /// `listeners` open ([`ConnectionLimits::derive`]). Connections over a lowered limit stay.
    pub(crate) fn update(&self, config: &UserspaceConfig, open_files: u64, listeners: usize) {
        let derived = ConnectionLimits::derive(config, open_files, listeners);
        self.tcp.limit.store(derived.tcp, Ordering::Release);
        self.tcp_per_port
            .store(derived.tcp_per_port, Ordering::Release);
        self.tcp_reserve
            .store(derived.tcp_reserve, Ordering::Release);
        self.udp.limit.store(derived.udp, Ordering::Release);
    }

    /// The limits in force now.
    pub(crate) fn current(&self) -> ConnectionLimits {
        ConnectionLimits {
            tcp: self.tcp.limit.load(Ordering::Acquire),
            tcp_per_port: self.tcp_per_port.load(Ordering::Acquire),
            tcp_reserve: self.tcp_reserve.load(Ordering::Acquire),
            udp: self.udp.limit.load(Ordering::Acquire),
        }
    }

    /// A place for a new TCP connection to a service port whose connections `port` counts. The
    /// last [`ConnectionLimits::tcp_reserve`] places in all go only to service ports holding
    /// fewer than that many connections, so that busy ports at their own limits never shut out
    /// a quiet one.
    pub(crate) fn admit_tcp(&self, port: &PortGate) -> Result<Permit, Refusal> {
        let reserve = self.tcp_reserve.load(Ordering::Acquire);
        let held_by_port = port.used();
        let port = port
            .try_take(self.tcp_per_port.load(Ordering::Acquire))
            .ok_or(Refusal::ServicePort)?;
        let limit = self.tcp.limit.load(Ordering::Acquire);
        let limit = if held_by_port >= reserve {
            limit.saturating_sub(reserve).max(1)
        } else {
            limit
        };
        let global = self.tcp.try_take(limit).ok_or(Refusal::Global)?;
        Ok(Permit {
            _global: global,
            _port: Some(port),
        })
    }

    /// A place for a new UDP flow (of any listener).
    pub(crate) fn admit_udp(&self) -> Result<Permit, Refusal> {
        let global = self
            .udp
            .try_take(self.udp.limit.load(Ordering::Acquire))
            .ok_or(Refusal::Global)?;
        Ok(Permit {
            _global: global,
            _port: None,
        })
    }

    /// TCP connections held now.
    pub(crate) fn tcp_connections(&self) -> usize {
        self.tcp.used()
    }

    /// UDP flows held now.
    pub(crate) fn udp_flows(&self) -> usize {
        self.udp.used()
    }
}

/// The limits on connections and flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// TCP connections in all.
    pub tcp: usize,
    /// TCP connections per service port (and protocol).
    pub tcp_per_port: usize,
    /// Of `tcp`, the last places kept for service ports that hold fewer connections than this:
    /// an eighth of `tcp` when the per-port limit is derived, 0 when it is configured.
    pub tcp_reserve: usize,
    /// UDP flows in all.
    pub udp: usize,
}

impl ConnectionLimits {
    /// The limits `config` names, and for those it leaves `None` the default: of the `open_files`
    /// descriptors, less the `listeners` open and a headroom of a sixteenth (at least 64) for
    /// files, the sync loop and splice pipes, half go to TCP connections (two descriptors each)
    /// and half to UDP flows (one each); a service port may take half of the TCP connections,
    /// and an eighth of them is kept for service ports holding fewer than that. Every limit is
    /// at least 1.
    pub fn derive(config: &UserspaceConfig, open_files: u64, listeners: usize) -> Self {
        let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
        let headroom = (open_files / 16).max(64);
        let spare = open_files
            .saturating_sub(listeners)
            .saturating_sub(headroom);
        let tcp = config.max_connections.unwrap_or(spare / 4).max(1);
        // Two ports at a derived per-port limit (half of `tcp`) would fill `tcp`: keep an eighth
        // for the quiet ones. Limits an operator set are taken as they are.
        let tcp_reserve = if config.max_connections_per_port.is_none() {
            tcp / 8
        } else {
            0
        };
        Self {
            tcp,
            tcp_per_port: config.max_connections_per_port.unwrap_or(tcp / 2).max(1),
            tcp_reserve,
            udp: config.udp_max_flows_total.unwrap_or(spare / 2).max(1),
        }
    }
}

/// Whether `error` is the proxy's own shortage (descriptors, buffers, memory, local ports),
/// not a fault of the peer: such an error never counts against an endpoint.
pub(crate) fn is_local_resource_error(error: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::errno::Errno;
        let local = [
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::ENOBUFS,
            Errno::ENOMEM,
            Errno::EADDRNOTAVAIL,
        ];
        if let Some(code) = error.raw_os_error() {
            return local.iter().any(|errno| *errno as i32 == code);
        }
    }
    matches!(
        error.kind(),
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::OutOfMemory
    )
}

/// What a listener does while `accept` fails for want of resources: it waits
/// [`AcceptBackoff::FIRST`], doubling up to [`AcceptBackoff::MAX`], instead of spinning on the
/// error, and logs once per burst of failures rather than once per failure.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// Failures since the last accept that succeeded.
    failures: u64,
    delay: Duration,
}

/// What to do after a failed accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AfterFailure {
    /// How long to wait before accepting again.
    pub wait: Duration,
    /// Whether this failure starts a burst (log it).
    pub is_first: bool,
}

impl AcceptBackoff {
    /// The first wait after a failure.
    pub const FIRST: Duration = Duration::from_millis(10);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_millis(100);

    /// Records a failed accept.
    pub(crate) fn failed(&mut self) -> AfterFailure {
        self.failures += 1;
        self.delay = if self.failures == 1 {
            Self::FIRST
        } else {
            (self.delay * 2).min(Self::MAX)
        };
        AfterFailure {
            wait: self.delay,
            is_first: self.failures == 1,
        }
    }

    /// Records an accept that succeeded; returns how many failed in the burst it ends (0: none).
    pub(crate) fn succeeded(&mut self) -> u64 {
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tcp: Option<usize>, per_port: Option<usize>) -> UserspaceConfig {
        UserspaceConfig {
            max_connections: tcp,
            max_connections_per_port: per_port,
            ..UserspaceConfig::default()
        }
    }

    #[test]
    fn per_port_and_global_limits_refuse_and_permits_give_places_back() {
        let limits = Limits::new(&config(Some(3), Some(2)), 1024, 0);
        let a = PortGate::default();
        let b = PortGate::default();
        let a1 = limits.admit_tcp(&a).expect("a1");
        let _a2 = limits.admit_tcp(&a).expect("a2");
        assert_eq!(limits.admit_tcp(&a).err(), Some(Refusal::ServicePort));
        let _b1 = limits.admit_tcp(&b).expect("b1");
        assert_eq!(limits.admit_tcp(&b).err(), Some(Refusal::Global));
        assert_eq!(b.used(), 1, "a refused connection holds no place");
        assert_eq!(limits.tcp_connections(), 3);
        drop(a1);
        assert!(limits.admit_tcp(&b).is_ok(), "a freed place is taken again");
    }

    #[test]
    fn busy_ports_at_their_derived_limits_leave_a_reserve_for_a_quiet_one() {
        // 64 TCP connections in all (spare 256 / 4), 32 per port, the last 8 for quiet ports.
        let limits = Limits::new(&config(None, None), 256 + 64 + 100, 100);
        let current = limits.current();
        assert_eq!(
            (current.tcp, current.tcp_per_port, current.tcp_reserve),
            (64, 32, 8)
        );
        let (hog_a, hog_b, quiet) = (
            PortGate::default(),
            PortGate::default(),
            PortGate::default(),
        );
        let mut held = Vec::new();
        while let Ok(permit) = limits.admit_tcp(&hog_a) {
            held.push(permit);
        }
        while let Ok(permit) = limits.admit_tcp(&hog_b) {
            held.push(permit);
        }
        assert_eq!((hog_a.used(), hog_b.used()), (32, 24), "b stops at 64 - 8");
        assert_eq!(limits.admit_tcp(&hog_b).err(), Some(Refusal::Global));
        for i in 0..8 {
            held.push(
                limits
                    .admit_tcp(&quiet)
                    .unwrap_or_else(|e| panic!("quiet #{i}: {e:?}")),
            );
        }
        assert_eq!(
            limits.admit_tcp(&quiet).err(),
            Some(Refusal::Global),
            "64 in all"
        );
        let named = Limits::new(&config(None, Some(32)), 256 + 64 + 100, 100);
        assert_eq!(
            named.current().tcp_reserve,
            0,
            "a configured per-port limit as it is"
        );
    }

    #[test]
    fn default_limits_leave_the_listeners_and_a_headroom_their_descriptors() {
        let default = UserspaceConfig::default();
        let limits = ConnectionLimits::derive(&default, 20_000, 1_000);
        // 20,000 - 1,000 listeners - 1,250 headroom = 17,750 spare descriptors.
        assert_eq!(limits.tcp, 17_750 / 4);
        assert_eq!(limits.tcp_per_port, 17_750 / 8);
        assert_eq!(limits.udp, 17_750 / 2);
        let descriptors = 2 * limits.tcp + limits.udp + 1_000 + 1_250;
        assert!(descriptors <= 20_000, "{descriptors}");
        let tiny = ConnectionLimits::derive(&default, 16, 100);
        assert_eq!((tiny.tcp, tiny.tcp_per_port, tiny.udp), (1, 1, 1));
        let named = ConnectionLimits::derive(&config(Some(7), None), 20_000, 0);
        assert_eq!((named.tcp, named.tcp_per_port), (7, 3));
    }

    #[test]
    fn accept_backoff_doubles_to_its_cap_and_logs_once_per_burst() {
        let mut backoff = AcceptBackoff::default();
        let waits: Vec<(u64, bool)> = (0..6)
            .map(|_| backoff.failed())
            .map(|after| (after.wait.as_millis() as u64, after.is_first))
            .collect();
        assert_eq!(
            waits,
            [
                (10, true),
                (20, false),
                (40, false),
                (80, false),
                (100, false),
                (100, false)
            ]
        );
        assert_eq!(backoff.succeeded(), 6);
        assert_eq!(backoff.succeeded(), 0);
        assert_eq!(backoff.failed().wait, AcceptBackoff::FIRST, "a new burst");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn descriptor_shortages_are_local_and_refusals_are_not() {
        for code in [24, 23, 105, 99] {
            assert!(
                is_local_resource_error(&io::Error::from_raw_os_error(code)),
                "errno {code}"
            );
        }
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::TimedOut,
        ] {
            assert!(!is_local_resource_error(&io::Error::from(kind)), "{kind:?}");
        }
    }
}
