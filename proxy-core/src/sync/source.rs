//! [`ServiceSource`]: where the sync loop gets its tables, and its implementations for channels.

use async_trait::async_trait;

use crate::table::ServiceTable;

/// Where the sync loop gets its tables from. Embedders wire their own (a file watcher, a
/// controller); channels of [`ServiceTable`] implement it.
#[async_trait]
pub trait ServiceSource: Send {
    /// Waits for the next table and returns the newest available (older ones are superseded), or
    /// `None` once the source is closed and will produce no more.
    ///
    /// Must be cancel-safe: the loop drops this future when a timer fires first, and a later call
    /// must still return any table that arrived.
    async fn next_table(&mut self) -> Option<ServiceTable>;
}

/// Waits for a value not yet seen and returns the newest: bursts coalesce in the channel itself.
///
/// The value a receiver starts with counts as seen; call
/// [`mark_changed`](tokio::sync::watch::Receiver::mark_changed) first to have it synced.
#[async_trait]
impl ServiceSource for tokio::sync::watch::Receiver<ServiceTable> {
    async fn next_table(&mut self) -> Option<ServiceTable> {
        // `changed` is cancel-safe, and reports a value sent before the sender closed.
        self.changed().await.ok()?;
        Some(self.borrow_and_update().clone())
    }
}

/// Waits for a table, then drains the channel and returns the newest.
#[async_trait]
impl ServiceSource for tokio::sync::mpsc::Receiver<ServiceTable> {
    async fn next_table(&mut self) -> Option<ServiceTable> {
        let mut table = self.recv().await?;
        while let Ok(newer) = self.try_recv() {
            table = newer;
        }
        Some(table)
    }
}

/// Waits for a table, then drains the channel and returns the newest.
#[async_trait]
impl ServiceSource for tokio::sync::mpsc::UnboundedReceiver<ServiceTable> {
    async fn next_table(&mut self) -> Option<ServiceTable> {
        let mut table = self.recv().await?;
        while let Ok(newer) = self.try_recv() {
            table = newer;
        }
        Some(table)
    }
}
