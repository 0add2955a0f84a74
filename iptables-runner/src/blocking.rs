//! The blocking calls ([`detect_variant_blocking`], [`Iptables::restore_blocking`],
//! [`Iptables::save_blocking`]) behind one small trait, [`BlockingRunner`], so that a caller
//! that runs the tools from a blocking thread (the IPVS companions) can be tested against a
//! fake (`testing::FakeTools`, feature `testing`) as kube-proxy's `utiliptables.Interface` is.
//! [`ProcessRunner`] runs the real processes; the argument vectors stay [`Iptables`]'s, so a
//! fake sees exactly the commands the real runner would start.

use std::fmt;

use crate::{detect_variant_blocking, CommandFailure, Family, Iptables, Variant};

/// Detects the variant, restores and saves, blocking the calling thread.
pub trait BlockingRunner: Send + Sync + fmt::Debug {
    /// Which variant plain `iptables` is, run under `prefix` ([`detect_variant_blocking`]).
    ///
    /// # Errors
    /// [`CommandFailure`] if `iptables` cannot run or names neither variant.
    fn detect_variant(&self, prefix: &[String]) -> Result<Variant, CommandFailure>;

    /// Feeds `input` to `tools`' restore tool of `family` ([`Iptables::restore_command`]).
    ///
    /// # Errors
    /// [`CommandFailure`] with the command, status and stderr.
    fn restore(&self, tools: &Iptables, family: Family, input: &str) -> Result<(), CommandFailure>;

    /// The output of `tools`' save tool of `family`, for `table` (`None`: every table)
    /// ([`Iptables::save_command`]).
    ///
    /// # Errors
    /// [`CommandFailure`] if the tool failed.
    fn save(
        &self,
        tools: &Iptables,
        family: Family,
        table: Option<&str>,
    ) -> Result<String, CommandFailure>;
}

/// The real tools, as processes (`std::process`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessRunner;

impl BlockingRunner for ProcessRunner {
    fn detect_variant(&self, prefix: &[String]) -> Result<Variant, CommandFailure> {
        detect_variant_blocking(prefix)
    }

    fn restore(&self, tools: &Iptables, family: Family, input: &str) -> Result<(), CommandFailure> {
        tools.restore_blocking(family, input)
    }

    fn save(
        &self,
        tools: &Iptables,
        family: Family,
        table: Option<&str>,
    ) -> Result<String, CommandFailure> {
        tools.save_blocking(family, table)
    }
}
