//! Drives a [`Dataplane`] on a thread inside the node's namespace, on a current-thread tokio
//! runtime of its own that keeps running between requests: a userspace proxy's accept loops are
//! tasks of that runtime, and every socket, command and netlink request of the backend is made
//! from that thread, so all of it lands in the node's namespace and nowhere else.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use proxy_core::dataplane::{CleanupReport, Dataplane, SyncMode, SyncReport, SyncRequest};
use proxy_core::{ChangeSet, ServiceTable};
use testkit::netns::Netns;
use tokio::sync::mpsc;

use crate::error::ConformanceError;

/// The longest a sync or cleanup may take before the harness gives up on the backend.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

enum Request {
    Sync(ServiceTable, std_mpsc::Sender<Result<SyncReport, String>>),
    Cleanup(std_mpsc::Sender<Result<CleanupReport, String>>),
}

/// A dataplane running in the node's namespace. Dropping it runs the dataplane's cleanup, then
/// stops the thread.
#[derive(Debug)]
pub struct NodeDriver {
    backend: &'static str,
    requests: Option<mpsc::UnboundedSender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeDriver {
    /// Starts a thread in `node`, makes the dataplane there with `make` (so that whatever its
    /// constructor opens is in the namespace too) and serves requests until dropped.
    ///
    /// # Panics
    ///
    /// When the thread cannot enter the namespace or the runtime cannot be built.
    pub fn start<D, F>(node: &Netns, backend: &'static str, make: F) -> Self
    where
        D: Dataplane + 'static,
        F: FnOnce() -> D + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        let thread = node.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(async move {
                let mut dataplane = make();
                let mut last = ServiceTable::empty();
                while let Some(request) = rx.recv().await {
                    match request {
                        Request::Sync(table, reply) => {
                            // Always full: the suite checks what a table gives, not how a
                            // partial sync reaches it (each backend's own tests do that).
                            let changes: ChangeSet = proxy_core::diff(&last, &table);
                            let result = dataplane
                                .sync(SyncRequest {
                                    desired: &table,
                                    changes: &changes,
                                    mode: SyncMode::Full,
                                })
                                .await
                                .map_err(|e| error_chain(&e));
                            if result.is_ok() {
                                last = table;
                            }
                            let _ = reply.send(result);
                        }
                        Request::Cleanup(reply) => {
                            let result = dataplane.cleanup().await.map_err(|e| error_chain(&e));
                            let _ = reply.send(result);
                        }
                    }
                }
            });
        });
        Self {
            backend,
            requests: Some(tx),
            thread: Some(thread),
        }
    }

    /// Makes the dataplane implement `table` (a full sync) and returns its report.
    ///
    /// # Errors
    ///
    /// [`ConformanceError::Sync`] when the sync fails or does not return in time.
    pub fn sync(&self, table: &ServiceTable) -> Result<SyncReport, ConformanceError> {
        let (reply, answer) = std_mpsc::channel();
        self.send(Request::Sync(table.clone(), reply))?;
        answer
            .recv_timeout(REQUEST_TIMEOUT)
            .map_err(|e| self.sync_error(format!("no answer: {e}")))?
            .map_err(|reason| self.sync_error(reason))
    }

    /// Runs the dataplane's cleanup.
    ///
    /// # Errors
    ///
    /// [`ConformanceError::Sync`] when the cleanup fails or does not return in time.
    pub fn cleanup(&self) -> Result<CleanupReport, ConformanceError> {
        let (reply, answer) = std_mpsc::channel();
        self.send(Request::Cleanup(reply))?;
        answer
            .recv_timeout(REQUEST_TIMEOUT)
            .map_err(|e| self.sync_error(format!("no answer to cleanup: {e}")))?
            .map_err(|reason| self.sync_error(format!("cleanup: {reason}")))
    }

    fn send(&self, request: Request) -> Result<(), ConformanceError> {
        self.requests
            .as_ref()
            .and_then(|tx| tx.send(request).ok())
            .ok_or_else(|| self.sync_error("the driver thread has stopped".to_owned()))
    }

    fn sync_error(&self, reason: String) -> ConformanceError {
        ConformanceError::Sync {
            backend: self.backend,
            reason,
        }
    }
}

impl Drop for NodeDriver {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            tracing::warn!(backend = self.backend, error = %e, "cleanup after the suite failed");
        }
        // Closing the channel ends the driver's loop; the runtime and the dataplane go with it.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An error and its sources, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}
