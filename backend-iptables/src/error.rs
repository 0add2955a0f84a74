//! The crate's errors.

/// Restore text that is not one of our shapes (the shared rule model's parser error).
pub use iptables_runner::rules::ParseError;

/// A configuration the backend cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The chain prefix is empty, too long, or has characters iptables or we cannot use.
    #[error("prefix {prefix:?}: {reason}")]
    Prefix {
        /// The prefix given.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A mark bit is out of range or the two bits coincide.
    #[error("mark bits masquerade={masquerade} select={select}: {reason}")]
    MarkBits {
        /// The masquerade bit.
        masquerade: u8,
        /// The endpoint-select bit.
        select: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// More than one cluster CIDR per family.
    #[error("cluster_cidrs: at most one CIDR per address family, got {count} for {family}")]
    ClusterCidrs {
        /// The family with too many.
        family: &'static str,
        /// How many were given.
        count: usize,
    },
    /// A network in `node_port_addresses` we cannot serve node ports on.
    #[error("node_port_addresses: {net}: {reason}")]
    NodePortAddresses {
        /// The network given.
        net: ipnet::IpNet,
        /// Why not.
        reason: &'static str,
    },
    /// A network namespace name `ip netns exec` cannot take.
    #[error("netns {name:?}: {reason}")]
    Netns {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A hook operation that failed ([`crate::hooks::HookOps`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} {family} {table} {chain} {rule}: {message}")]
pub struct HookError {
    /// `check`, `insert` or `delete`.
    pub op: &'static str,
    /// Address family.
    pub family: crate::rules::Family,
    /// Table.
    pub table: String,
    /// Built-in chain.
    pub chain: String,
    /// The rule spec.
    pub rule: String,
    /// What the tool said.
    pub message: String,
}

/// Any error of this backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IptablesError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Restore text we could not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A restore failed; the kernel keeps that table as it was (restore is atomic per table), but
    /// restores of the same plan that ran before it did apply.
    #[error("{family} {table}: {failure}{}", context_suffix(.line, .context))]
    Restore {
        /// Address family.
        family: crate::rules::Family,
        /// Table.
        table: crate::rules::TableName,
        /// What the tool said: printed in the message, followed by our input lines, so not also
        /// a `source` (a chain of causes prints it once).
        failure: RestoreFailure,
        /// The failing line of our input, when the tool named one.
        line: Option<usize>,
        /// Our input lines around it (kube-proxy's `ExtractLines`).
        context: String,
    },
    /// No usable `iptables` on this host (neither variant could be detected).
    /// What the probe said is in the message, not a `source`: printed once.
    #[error("cannot detect the iptables variant: {0}")]
    Detect(RestoreFailure),
    /// Ensuring or removing a hook failed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// Another instance owns the chains of this prefix in this network namespace (its pid and
    /// command line are in the message), or the lock could not be taken
    /// ([`proxy_core::lock`]).
    #[error(transparent)]
    Lock(#[from] proxy_core::lock::LockError),
    /// `iptables-save` of every table of a family failed.
    #[error("{family}: {failure}")]
    SaveFamily {
        /// Address family.
        family: crate::rules::Family,
        /// What the tool said (in the message, not a `source`: printed once).
        failure: RestoreFailure,
    },
    /// `iptables-save` failed.
    #[error("{family} {table}: {failure}")]
    Save {
        /// Address family.
        family: crate::rules::Family,
        /// Table.
        table: crate::rules::TableName,
        /// What the tool said (in the message, not a `source`: printed once).
        failure: RestoreFailure,
    },
}

impl IptablesError {
    /// Wraps this error for the sync loop.
    pub fn into_dataplane(self) -> proxy_core::DataplaneError {
        proxy_core::DataplaneError::backend("iptables", self)
    }
}

fn context_suffix(line: &Option<usize>, context: &str) -> String {
    match line {
        Some(line) => format!("\n  at input line {line}:\n{context}"),
        None => String::new(),
    }
}

/// A restore (or save, or variant probe) command that failed to run or exited non-zero: the
/// shared runner's error, under the name this crate has always given it.
pub use iptables_runner::CommandFailure as RestoreFailure;
