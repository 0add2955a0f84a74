//! [`SyncConfig`]: the timing of the sync loop.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Timing of the sync loop. Serialized with durations in (fractional) seconds:
/// `{min_sync_period_seconds: 1, full_sync_period_seconds: 30, ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// No two syncs start closer than this; tables arriving meanwhile coalesce into one sync
    /// (kube-proxy's `minSyncPeriod`, default 1 s).
    #[serde(rename = "min_sync_period_seconds", with = "seconds")]
    pub min_sync_period: Duration,
    /// A full resync runs this long after the last successful full sync, to repair drift
    /// (kube-proxy's `syncPeriod`, default 30 s).
    #[serde(rename = "full_sync_period_seconds", with = "seconds")]
    pub full_sync_period: Duration,
    /// While the loop is idle, the dataplane checks this often whether what it programmed is
    /// still in place ([`crate::Dataplane::check_drift`]: a flushed table, a deleted chain); if
    /// not, a full sync runs at once (within the minimum period) rather than at the next
    /// periodic resync. Default 2 s; zero turns the checks off.
    #[serde(rename = "drift_check_period_seconds", with = "seconds")]
    pub drift_check_period: Duration,
    /// Wait before the first retry of a failed or degraded sync (default 1 s); it doubles on each
    /// further failure.
    #[serde(rename = "retry_backoff_initial_seconds", with = "seconds")]
    pub retry_backoff_initial: Duration,
    /// The longest wait between retries (default 30 s).
    #[serde(rename = "retry_backoff_max_seconds", with = "seconds")]
    pub retry_backoff_max: Duration,
    /// Unhealthy once work has been pending this long; `None` (the default) means twice
    /// `full_sync_period`, as kube-proxy's healthz. See [`SyncConfig::health_timeout`].
    #[serde(
        rename = "health_timeout_seconds",
        with = "optional_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub health_timeout: Option<Duration>,
    /// Whether stopping the loop through its shutdown future runs [`crate::Dataplane::cleanup`]
    /// (default false: rules survive a restart, as kube-proxy's since KEP-2448).
    pub cleanup_on_shutdown: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            min_sync_period: Duration::from_secs(1),
            full_sync_period: Duration::from_secs(30),
            drift_check_period: Duration::from_secs(2),
            retry_backoff_initial: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(30),
            health_timeout: None,
            cleanup_on_shutdown: false,
        }
    }
}

impl SyncConfig {
    /// The health timeout in effect: the configured one, else twice `full_sync_period`.
    pub fn health_timeout(&self) -> Duration {
        self.health_timeout
            .unwrap_or_else(|| self.full_sync_period.saturating_mul(2))
    }
}

/// Durations as fractional seconds in config files.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|e| {
            serde::de::Error::custom(format!("{secs} is not a valid number of seconds: {e}"))
        })
    }
}

/// Optional durations as fractional seconds in config files.
mod optional_seconds {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => super::seconds::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::seconds::deserialize(d).map(Some)
    }
}
