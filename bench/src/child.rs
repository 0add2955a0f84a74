//! A proxy under test run as a child process, its stderr in a log file: checked between probes
//! (a dead one fails the step with its log's last lines), killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::BenchError;

/// See the [module docs](self).
#[derive(Debug)]
pub struct ProxyProcess {
    child: Child,
    log: PathBuf,
    /// The suite, for the error of a proxy that died.
    scenario: &'static str,
    /// The program, likewise.
    proxy: &'static str,
}

impl ProxyProcess {
    /// Starts `command` with no stdin or stdout and its stderr written to `log` (created).
    ///
    /// # Errors
    /// The log cannot be created, or the program cannot be started.
    pub fn spawn(
        command: &mut Command,
        log: PathBuf,
        scenario: &'static str,
        proxy: &'static str,
    ) -> Result<Self, BenchError> {
        let stderr = std::fs::File::create(&log)
            .map_err(|e| BenchError::io(format!("create {}", log.display()), e))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|error| BenchError::Spawn {
                program: command.get_program().to_string_lossy().into_owned(),
                error,
            })?;
        Ok(Self {
            child,
            log,
            scenario,
            proxy,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether it still runs; its log's end when it does not.
    ///
    /// # Errors
    /// [`BenchError::Scenario`] when it has exited.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                Err(BenchError::Scenario {
                    scenario: self.scenario.to_owned(),
                    proxy: self.proxy.to_owned(),
                    detail: format!("exited with {status}: {}", tail.join(" | ")),
                })
            }
            Err(e) => Err(BenchError::io(format!("wait for {}", self.proxy), e)),
        }
    }

    /// Kills it and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Checks that the release binary `bin` of the examples crate is at `path` before a suite
/// starts, with the command that builds it in the error.
///
/// # Errors
/// [`BenchError`] (not found) when there is no file at `path`.
pub fn require_release_binary(path: &Path, bin: &str) -> Result<(), BenchError> {
    if path.exists() {
        return Ok(());
    }
    Err(BenchError::io(
        format!("{bin} binary {}", path.display()),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("build it with cargo build --release -p examples --bin {bin}"),
        ),
    ))
}
