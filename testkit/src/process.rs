//! Commands that must succeed, and child processes whose stderr becomes a log.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::wait::poll;

/// Runs `program args...` (in the calling thread's namespaces) and returns its stdout.
///
/// # Panics
///
/// When the program cannot start or exits unsuccessfully, with the command, the exit status and
/// stderr.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program} {}`: {e}", args.join(" ")));
    stdout_of_success(program, args, None, &out)
}

/// Like [`run`], with `stdin` written to the program's standard input.
///
/// # Panics
///
/// As [`run`]; the message also shows the input.
pub fn run_with_stdin(program: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{program} {}`: {e}", args.join(" ")));
    // The pipe closes when this handle drops, so the program sees the end of its input.
    let written = child
        .stdin
        .take()
        .expect("stdin was set to piped above")
        .write_all(stdin.as_bytes());
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for `{program} {}`: {e}", args.join(" ")));
    if let Err(e) = written {
        panic!(
            "`{program} {}` did not take its input ({e}): {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout_of_success(program, args, Some(stdin), &out)
}

fn stdout_of_success(program: &str, args: &[&str], stdin: Option<&str>, out: &Output) -> String {
    assert!(
        out.status.success(),
        "`{program} {}` failed{}: {}: {}",
        args.join(" "),
        stdin
            .map(|input| format!(" with input\n{input}"))
            .unwrap_or_default(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running child process whose stderr is collected line by line into a log (stdout is
/// discarded). Killed and reaped on drop if it still runs.
#[derive(Debug)]
pub struct LoggedChild {
    child: Child,
    what: String,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl LoggedChild {
    /// Spawns `command` with stdout discarded and stderr collected. `what` names the child in
    /// panic messages (`"svcproxy"`).
    ///
    /// # Errors
    ///
    /// When the command cannot start.
    pub fn spawn(what: &str, command: &mut Command) -> std::io::Result<Self> {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("stderr was set to piped above");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Ok(Self {
            child,
            what: what.to_owned(),
            log,
            reader: Some(reader),
        })
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the log contains `needle`.
    ///
    /// # Panics
    ///
    /// When `timeout` passes first, with the whole log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let found = poll(timeout, Duration::from_millis(20), || {
            if self.log().contains(needle) {
                Ok(())
            } else {
                Err(())
            }
        });
        if found.is_err() {
            panic!(
                "{} never logged {needle:?} within {timeout:?}; log:\n{}",
                self.what,
                self.log()
            );
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status and the whole log (read
    /// to the end of the child's stderr, or for at most one more second if something else holds
    /// it open).
    ///
    /// # Panics
    ///
    /// When the signal cannot be sent, or the child has not exited within `timeout` (it is then
    /// killed on drop), with the log.
    pub fn terminate(self, timeout: Duration) -> (ExitStatus, String) {
        let pid = i32::try_from(self.child.id()).expect("Linux pids fit in i32");
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
            panic!("SIGTERM to {} ({pid}): {e}", self.what);
        }
        self.wait_exit(timeout, "ignored SIGTERM")
    }

    /// Waits for the child to exit on its own; returns the exit status and the whole log, as
    /// [`LoggedChild::terminate`] does.
    ///
    /// # Panics
    ///
    /// When the child still runs after `timeout` (it is then killed on drop), with `why` (what
    /// it failed to do, e.g. "did not exit") and the log.
    pub fn wait_exit(mut self, timeout: Duration, why: &str) -> (ExitStatus, String) {
        let exited = poll(timeout, Duration::from_millis(20), || {
            match self.child.try_wait() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err(None),
                Err(e) => Err(Some(e)),
            }
        });
        let status = match exited {
            Ok(status) => status,
            Err(Some(e)) => panic!("wait for {}: {e}; log:\n{}", self.what, self.log()),
            Err(None) => panic!("{} {why} for {timeout:?}; log:\n{}", self.what, self.log()),
        };
        if let Some(reader) = self.reader.take() {
            let _ = poll(Duration::from_secs(1), Duration::from_millis(10), || {
                if reader.is_finished() {
                    Ok(())
                } else {
                    Err(())
                }
            });
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        (status, self.log())
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_returns_stdout() {
        assert_eq!(run("echo", &["a", "b"]), "a b\n");
        assert_eq!(run_with_stdin("cat", &[], "in\n"), "in\n");
    }

    #[test]
    #[should_panic(expected = "`sh -c echo oops >&2; exit 3` failed: exit status: 3: oops")]
    fn run_panics_with_command_status_and_stderr() {
        run("sh", &["-c", "echo oops >&2; exit 3"]);
    }

    #[test]
    fn logged_child_collects_stderr_and_stops_on_sigterm() {
        let child = LoggedChild::spawn(
            "sleeper",
            Command::new("sh").args([
                "-c",
                "trap 'echo bye >&2; exit 7' TERM; echo ready >&2; while :; do sleep 0.05; done",
            ]),
        )
        .expect("spawn sh");
        child.wait_for_log("ready", Duration::from_secs(10));
        let (status, log) = child.terminate(Duration::from_secs(10));
        assert_eq!(status.code(), Some(7), "log:\n{log}");
        assert_eq!(log, "ready\nbye\n");
    }

    #[test]
    #[should_panic(expected = "quiet never logged \"never\"")]
    fn wait_for_log_is_bounded() {
        let child = LoggedChild::spawn("quiet", Command::new("sleep").arg("10")).expect("spawn");
        child.wait_for_log("never", Duration::from_millis(50));
    }

    #[test]
    fn drop_kills_the_child() {
        let child = LoggedChild::spawn("sleeper", Command::new("sleep").arg("30")).expect("spawn");
        let proc_dir = format!("/proc/{}", child.id());
        assert!(std::path::Path::new(&proc_dir).exists());
        drop(child);
        assert!(
            !std::path::Path::new(&proc_dir).exists(),
            "{proc_dir} still there: killed and reaped on drop"
        );
    }
}
