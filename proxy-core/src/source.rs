//! [`ServiceSource`]: where the sync loop gets its tables, what a source hands it
//! ([`TableUpdate`]: a table, its generation, the service ports the source skipped), and the
//! trait's implementations for channels. Public as [`crate::sync`]'s; a module of its own, below
//! the sync loop, the tracker and the metrics, so that none of them imports another for it.

use std::fmt;

use async_trait::async_trait;

use crate::table::{ServicePortName, ServiceTable};
use crate::validate::FieldError;

/// Why a service port is not in the table as its source last described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// The port's own values are invalid (a zero port, a second IPv4 cluster IP, ...).
    Invalid,
    /// It asks for an address, node port or health-check port another service port holds: the
    /// newcomer is skipped, the incumbent keeps running.
    Clash,
    /// It asks for something the backend lacks (SCTP on userspace, `mh` on iptables).
    Unsupported,
}

impl SkipReason {
    /// The label value: `invalid`, `clash` or `unsupported`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Invalid => "invalid",
            SkipReason::Clash => "clash",
            SkipReason::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service port left out of the table, or kept at its last good version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPort {
    /// Why.
    pub reason: SkipReason,
    /// Every problem, each naming its field
    /// (`services[default/web].ports[http].node_port: 30080 already used by ...`).
    pub problems: Vec<FieldError>,
    /// Whether the port's last good version is still in the table (and so still runs); `false`
    /// when the port never had a good version.
    pub runs_previous: bool,
}

impl fmt::Display for SkippedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problems: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        write!(
            f,
            "skipped ({}{}): {}",
            self.reason,
            if self.runs_previous {
                ", its last good version runs"
            } else {
                ""
            },
            problems.join("; ")
        )
    }
}

/// The skipped service ports, by name: a persistent map, so a source re-publishes it in O(1).
pub type Skipped = imbl::OrdMap<ServicePortName, SkippedPort>;

/// What a source hands the sync loop: the table to converge to, its generation, and the service
/// ports the source left out of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableUpdate {
    /// The table; every service port in it is valid and free of clashes.
    pub table: ServiceTable,
    /// Increases with every table a source produces ([`crate::tracker::ChangeTracker`] counts
    /// from 1); 0 for sources without generations (a bare channel of tables).
    pub generation: u64,
    /// Service ports the source skipped, with why.
    pub skipped: Skipped,
}

impl From<ServiceTable> for TableUpdate {
    /// A table from a source without generations or skipped ports.
    fn from(table: ServiceTable) -> Self {
        Self {
            table,
            generation: 0,
            skipped: Skipped::new(),
        }
    }
}

/// Where the sync loop gets its tables from. The [`crate::tracker::ChangeTracker`]'s
/// [`TrackerSource`](crate::tracker::TrackerSource) is the usual one; channels of
/// [`ServiceTable`] or [`TableUpdate`] implement it too.
#[async_trait]
pub trait ServiceSource: Send {
    /// Waits for the next update and returns the newest available (older ones are superseded),
    /// or `None` once the source is closed and will produce no more.
    ///
    /// Must be cancel-safe: the loop drops this future when a timer fires first, and a later call
    /// must still return any update that arrived.
    async fn next_update(&mut self) -> Option<TableUpdate>;
}

/// Waits for a value not yet seen and returns the newest: bursts coalesce in the channel itself.
///
/// The value a receiver starts with counts as seen; call
/// [`mark_changed`](tokio::sync::watch::Receiver::mark_changed) first to have it synced.
#[async_trait]
impl ServiceSource for tokio::sync::watch::Receiver<ServiceTable> {
    async fn next_update(&mut self) -> Option<TableUpdate> {
        // `changed` is cancel-safe, and reports a value sent before the sender closed.
        self.changed().await.ok()?;
        Some(self.borrow_and_update().clone().into())
    }
}

/// As for a channel of tables.
#[async_trait]
impl ServiceSource for tokio::sync::watch::Receiver<TableUpdate> {
    async fn next_update(&mut self) -> Option<TableUpdate> {
        self.changed().await.ok()?;
        Some(self.borrow_and_update().clone())
    }
}

/// Waits for a table, then drains the channel and returns the newest.
#[async_trait]
impl ServiceSource for tokio::sync::mpsc::Receiver<ServiceTable> {
    async fn next_update(&mut self) -> Option<TableUpdate> {
        let mut table = self.recv().await?;
        while let Ok(newer) = self.try_recv() {
            table = newer;
        }
        Some(table.into())
    }
}

/// Waits for a table, then drains the channel and returns the newest.
#[async_trait]
impl ServiceSource for tokio::sync::mpsc::UnboundedReceiver<ServiceTable> {
    async fn next_update(&mut self) -> Option<TableUpdate> {
        let mut table = self.recv().await?;
        while let Ok(newer) = self.try_recv() {
            table = newer;
        }
        Some(table.into())
    }
}
