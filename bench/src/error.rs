//! The harness's errors: each names what it was doing and carries the cause.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A socket or file operation failed.
    #[error("{what}: {error}")]
    Io {
        /// What we were doing, with the object (`"bind backend 127.0.0.2:0"`).
        what: String,
        /// The operating system's error, printed in the message (so not also a `source`).
        error: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot start {program}: {error}")]
    Spawn {
        /// The program, as given.
        program: String,
        /// Why it did not start, printed in the message (so not also a `source`).
        error: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed with {status}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// A proxy did not accept connections on its listen address in time.
    #[error("{proxy} did not listen on {addr} within {waited:?}{detail}")]
    NotReady {
        /// The proxy's name.
        proxy: String,
        /// Where it should listen.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// Its exit status or output, if it already died (starts with `": "`).
        detail: String,
    },
    /// A peer answered something our request/response protocol does not allow.
    #[error("protocol error from {peer}: {detail}")]
    Protocol {
        /// The peer.
        peer: SocketAddr,
        /// What was wrong.
        detail: String,
    },
    /// A results file could not be read or written as JSON.
    #[error("results JSON {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A scenario produced no usable measurement.
    #[error("scenario {scenario} against {proxy}: {detail}")]
    Scenario {
        /// The scenario's name.
        scenario: String,
        /// The proxy's name.
        proxy: String,
        /// What went wrong.
        detail: String,
    },
}

impl BenchError {
    /// An I/O error with its context.
    pub fn io(what: impl Into<String>, error: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            error,
        }
    }
}
