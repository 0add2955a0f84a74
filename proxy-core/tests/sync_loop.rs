//! The sync loop against the in-memory fake dataplane, with tokio's clock paused: coalescing,
//! minimum interval, periodic resync, retry with backoff, capability rejection, shutdown, source
//! closing, health and metrics.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::registry::Registry;
use proptest::prelude::*;
use proxy_core::dataplane::{
    Capabilities, CleanupReport, Dataplane, DryRun, SyncMode, SyncReport, SyncRequest,
};
use proxy_core::diff::diff;
use proxy_core::metrics::{encode_text, FailureReason};
use proxy_core::sync::{
    sync_once, SkipReason, SyncConfig, SyncHandle, SyncHealth, SyncLoop, SyncLoopError, SyncStatus,
    TableUpdate,
};
use proxy_core::table::{
    Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable, TrafficPolicy,
};
use proxy_core::testing::fake::{FakeDataplane, FakeOutcome, RecordedSync};
use proxy_core::DataplaneError;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

const SECOND: Duration = Duration::from_secs(1);

// === helpers ===

/// `default/web:http` on 198.19.0.10:80 with `generation + 1` endpoints, so every generation is a
/// different table whose diff from the previous adds one endpoint.
fn table(generation: u16) -> ServiceTable {
    let mut web = ServicePort::new(web_name(), Protocol::Tcp, 80)
        .with_cluster_ip("198.19.0.10".parse().expect("valid ip"));
    for i in 0..=generation {
        web = web.with_endpoint(endpoint(i));
    }
    ServiceTable::builder()
        .node("node-a")
        .insert(web)
        .build()
        .expect("valid table")
}

fn web_name() -> ServicePortName {
    ServicePortName::new("default", "web", "http")
}

fn endpoint(i: u16) -> Endpoint {
    let [hi, lo] = i.to_be_bytes();
    Endpoint::new(format!("198.18.{hi}.{lo}").parse().expect("valid ip"), 8080)
}

/// `table(generation)` plus an SCTP service port `default/signal:sctp`.
fn with_sctp(generation: u16) -> ServiceTable {
    let signal = ServicePort::new(
        ServicePortName::new("default", "signal", "sctp"),
        Protocol::Sctp,
        3868,
    )
    .with_cluster_ip("198.19.0.20".parse().expect("valid ip"))
    .with_endpoint(Endpoint::new(
        "198.18.200.1".parse().expect("valid ip"),
        3868,
    ));
    table(generation)
        .edit()
        .insert(signal)
        .build()
        .expect("valid table")
}

fn without_sctp() -> Capabilities {
    Capabilities {
        protocols: [Protocol::Tcp, Protocol::Udp].into_iter().collect(),
        ..Capabilities::everything()
    }
}

fn config() -> SyncConfig {
    SyncConfig {
        min_sync_period: SECOND,
        full_sync_period: 30 * SECOND,
        drift_check_period: 2 * SECOND,
        retry_backoff_initial: SECOND,
        retry_backoff_max: 8 * SECOND,
        health_timeout: Some(10 * SECOND),
        cleanup_on_shutdown: false,
    }
}

/// A running loop fed by a watch channel.
struct Harness {
    fake: FakeDataplane,
    tables: watch::Sender<ServiceTable>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<FakeDataplane, SyncLoopError>>,
    health: SyncHealth,
    handle: SyncHandle,
    registry: Registry,
    start: Instant,
}

impl Harness {
    fn start(fake: FakeDataplane, config: SyncConfig) -> Self {
        let mut registry = Registry::default();
        let sync = SyncLoop::new(fake.clone(), config, &mut registry);
        let health = sync.health();
        let handle = sync.handle();
        let (tables, rx) = watch::channel(ServiceTable::empty());
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sync.run(rx, async {
            // A dropped sender also stops the loop.
            let _ = shutdown_rx.await;
        }));
        Self {
            fake,
            tables,
            shutdown: Some(shutdown),
            task,
            health,
            handle,
            registry,
            start: Instant::now(),
        }
    }

    fn send(&self, table: ServiceTable) {
        self.tables
            .send(table)
            .expect("the loop holds the receiver");
    }

    /// Seconds since the harness started, of a request.
    fn secs(&self, request: &RecordedSync) -> f64 {
        request.at.duration_since(self.start).as_secs_f64()
    }

    fn times(&self, requests: &[RecordedSync]) -> Vec<f64> {
        requests.iter().map(|r| self.secs(r)).collect()
    }

    async fn stop(mut self) -> Result<FakeDataplane, SyncLoopError> {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).expect("the loop is running");
        }
        self.task.await.expect("the loop task does not panic")
    }

    fn metrics(&self) -> String {
        encode_text(&self.registry).expect("our metrics encode")
    }
}

/// The value of the series `name` (with its labels, exactly as encoded), or a panic listing the text.
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(' ')?;
            value.split(' ').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no series {name} in:\n{text}"))
}

// === coalescing and the minimum interval ===

#[tokio::test(start_paused = true)]
async fn burst_within_min_period_gives_two_syncs_and_the_last_table_wins() {
    let h = Harness::start(FakeDataplane::new(), config());
    for generation in 0..10 {
        h.send(table(generation));
        sleep(Duration::from_millis(50)).await;
    }
    sleep(5 * SECOND).await;

    let requests = h.fake.requests();
    assert_eq!(h.times(&requests), [0.0, 1.0], "{requests:#?}");
    assert_eq!(requests[0].desired, table(0));
    assert_eq!(requests[0].mode, SyncMode::Full, "the first sync is full");
    assert_eq!(requests[1].desired, table(9), "the newest table wins");
    assert_eq!(requests[1].mode, SyncMode::Partial);
    assert_eq!(requests[1].changes, diff(&table(0), &table(9)));
    assert!(requests.iter().all(|r| r.changes_match_applied));
    assert_eq!(h.fake.applied(), table(9));
    h.stop().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn table_after_a_quiet_period_syncs_at_once() {
    let h = Harness::start(FakeDataplane::new(), config());
    h.send(table(0));
    sleep(5 * SECOND).await;
    h.send(table(1));
    sleep(SECOND / 2).await;
    let requests = h.fake.requests();
    assert_eq!(h.times(&requests), [0.0, 5.0], "{requests:#?}");
    h.stop().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn identical_table_does_not_sync() {
    let h = Harness::start(FakeDataplane::new(), config());
    h.send(table(0));
    sleep(2 * SECOND).await;
    h.send(table(0));
    sleep(5 * SECOND).await;
    assert_eq!(h.fake.requests().len(), 1);
    h.stop().await.expect("clean stop");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the arrival times and failures, no two syncs start closer than the minimum period,
    /// every change set is computed against what the dataplane really has, and the newest table is
    /// the last one synced.
    #[test]
    fn min_sync_period_is_never_violated(
        gaps_ms in prop::collection::vec(0u64..2_500, 1..24),
        failures in prop::collection::vec(any::<bool>(), 0..12),
        min_ms in 100u64..2_000,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let min = Duration::from_millis(min_ms);
        let requests = runtime.block_on(async {
            let fake = FakeDataplane::new();
            fake.script(failures.iter().map(|&fail| {
                if fail { FakeOutcome::Failed } else { FakeOutcome::Applied }
            }));
            let config = SyncConfig { min_sync_period: min, ..config() };
            let mut registry = Registry::default();
            let sync = SyncLoop::new(fake.clone(), config, &mut registry);
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let task = tokio::spawn(sync.run(rx, std::future::pending()));
            for (generation, gap) in (0u16..).zip(&gaps_ms) {
                sleep(Duration::from_millis(*gap)).await;
                tx.send(table(generation)).await.expect("loop running");
            }
            drop(tx);
            task.await.expect("no panic").expect("no cleanup");
            fake.requests()
        });
        for pair in requests.windows(2) {
            let gap = pair[1].at - pair[0].at;
            prop_assert!(gap >= min, "syncs {gap:?} apart, minimum {min:?}: {requests:#?}");
        }
        prop_assert!(requests.iter().all(|r| r.changes_match_applied));
        let last_sent = u16::try_from(gaps_ms.len() - 1).expect("small");
        prop_assert_eq!(&requests.last().expect("at least one sync").desired, &table(last_sent));
    }
}

// === periodic resync ===

#[tokio::test(start_paused = true)]
async fn full_resync_runs_every_full_sync_period() {
    let h = Harness::start(FakeDataplane::new(), config());
    h.send(table(0));
    sleep(10 * SECOND).await;
    h.send(table(1));
    sleep_until(h.start + 95 * SECOND).await;

    let requests = h.fake.requests();
    assert_eq!(
        h.times(&requests),
        [0.0, 10.0, 30.0, 60.0, 90.0],
        "{requests:#?}"
    );
    let modes: Vec<SyncMode> = requests.iter().map(|r| r.mode).collect();
    use SyncMode::{Full, Partial};
    assert_eq!(modes, [Full, Partial, Full, Full, Full]);
    for resync in &requests[2..] {
        assert_eq!(resync.desired, table(1));
        assert!(
            resync.changes.is_empty(),
            "nothing changed since the last sync"
        );
    }
    h.stop().await.expect("clean stop");
}

// === retries ===

#[tokio::test(start_paused = true)]
async fn failed_sync_retries_in_full_with_capped_exponential_backoff() {
    let fake = FakeDataplane::new();
    let config = SyncConfig {
        full_sync_period: 3600 * SECOND,
        health_timeout: Some(3600 * SECOND),
        ..config()
    };
    let h = Harness::start(fake.clone(), config);
    h.send(table(0));
    sleep(5 * SECOND).await;
    fake.fail_next(6);
    h.send(table(1));
    let requests = fake.wait_for_requests(8).await;
    sleep(60 * SECOND).await;
    assert_eq!(fake.requests().len(), 8, "no sync after the recovery");

    let times = h.times(&requests);
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 5 s after the first sync, then 1, 2, 4, 8, capped at 8, 8.
    assert_eq!(gaps, [5.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0], "{requests:#?}");
    let outcomes: Vec<FakeOutcome> = requests.iter().map(|r| r.outcome).collect();
    use FakeOutcome::{Applied, Failed};
    assert_eq!(
        outcomes,
        [Applied, Failed, Failed, Failed, Failed, Failed, Failed, Applied]
    );
    assert_eq!(requests[1].mode, SyncMode::Partial);
    for retry in &requests[2..] {
        assert_eq!(retry.mode, SyncMode::Full, "a retry after failure is full");
        assert_eq!(retry.desired, table(1));
        assert_eq!(
            retry.applied_before,
            table(0),
            "the last good table stays in place"
        );
        assert_eq!(
            retry.changes,
            diff(&table(0), &table(1)),
            "changes are computed from the last good table"
        );
    }
    assert_eq!(fake.applied(), table(1));
    assert_eq!(h.health.consecutive_failures(), 0);
    let text = h.metrics();
    assert_eq!(
        series(
            &text,
            "svcproxy_sync_failures_total{reason=\"dataplane_error\"}"
        ),
        6.0
    );
    assert_eq!(
        series(
            &text,
            "svcproxy_syncs_total{mode=\"full\",result=\"error\"}"
        ),
        5.0
    );
    assert_eq!(
        series(
            &text,
            "svcproxy_syncs_total{mode=\"partial\",result=\"error\"}"
        ),
        1.0
    );
    let last_error = h.health.last_error().expect("kept for diagnosis");
    assert_eq!(last_error.reason, FailureReason::DataplaneError);
    assert!(
        last_error.message.contains("injected failure of sync #6"),
        "{last_error}"
    );
    h.stop().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn new_table_during_backoff_syncs_without_waiting_for_the_retry() {
    let fake = FakeDataplane::new();
    let h = Harness::start(fake.clone(), config());
    fake.fail_next(2);
    h.send(table(0));
    sleep(SECOND / 2).await; // failures at 0 and 1; the next retry is due at 3
    sleep(SECOND).await;
    h.send(table(1));
    let requests = fake.wait_for_requests(3).await;
    sleep(10 * SECOND).await;
    assert_eq!(fake.requests().len(), 3, "no retry after the success");
    assert_eq!(h.times(&requests), [0.0, 1.0, 2.0], "{requests:#?}");
    assert_eq!(requests[2].desired, table(1), "the new table goes first");
    assert_eq!(requests[2].mode, SyncMode::Full, "still after a failure");
    assert_eq!(requests[2].outcome, FakeOutcome::Applied);
    assert_eq!(fake.applied(), table(1));
    h.stop().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn degraded_sync_keeps_the_table_and_retries_in_full() {
    let fake = FakeDataplane::new();
    let h = Harness::start(fake.clone(), config());
    fake.degrade_next(1);
    h.send(table(0));
    sleep(SECOND / 2).await;
    assert!(h.health.is_degraded());
    assert!(h.health.is_healthy(), "degraded is converged");
    let requests = fake.wait_for_requests(2).await;
    assert_eq!(h.times(&requests), [0.0, 1.0]);
    assert_eq!(requests[1].mode, SyncMode::Full);
    assert_eq!(requests[1].applied_before, table(0));
    assert!(
        requests[1].changes.is_empty(),
        "a degraded sync counts as synced, so the retry has no changes"
    );
    sleep(SECOND).await;
    assert!(!h.health.is_degraded());
    assert_eq!(fake.requests().len(), 2, "a complete sync ends the retries");
    h.stop().await.expect("clean stop");
}

// === capabilities ===

#[tokio::test(start_paused = true)]
async fn unsupported_port_is_skipped_by_name_and_the_rest_applies() {
    let fake = FakeDataplane::with_capabilities(without_sctp());
    let h = Harness::start(fake.clone(), config());
    h.send(table(0));
    sleep(2 * SECOND).await;
    h.send(with_sctp(1)); // an endpoint added to web, and an SCTP port the backend lacks
    let requests = fake.wait_for_requests(2).await;

    assert_eq!(
        requests[1].desired,
        table(1),
        "web's change applies, without the SCTP port"
    );
    assert_eq!(requests[1].changes, diff(&table(0), &table(1)));
    let outcome = h.handle.latest();
    assert_eq!(outcome.status, SyncStatus::Applied);
    let signal = ServicePortName::new("default", "signal", "sctp");
    let skipped = &outcome.skipped[&signal];
    assert_eq!(skipped.reason, SkipReason::Unsupported);
    assert_eq!(
        skipped.problems[0].to_string(),
        "services[default/signal].ports[sctp].protocol: sctp is not supported by the fake backend"
    );
    assert!(!outcome.is_complete());
    assert!(h.health.is_degraded(), "a skipped port degrades the node");
    assert!(
        h.health.problems()[0].starts_with("default/signal:sctp: skipped (unsupported)"),
        "{:?}",
        h.health.problems()
    );
    assert!(h.health.is_healthy(), "nothing is pending");
    assert_eq!(
        series(
            &h.metrics(),
            "svcproxy_sync_skipped_service_ports{reason=\"unsupported\"}"
        ),
        1.0
    );

    h.send(table(2));
    let requests = fake.wait_for_requests(3).await;
    assert_eq!(requests[2].desired, table(2));
    assert!(requests
        .iter()
        .all(|r| r.desired.iter().all(|port| port.protocol != Protocol::Sctp)));
    assert!(h.handle.latest().skipped.is_empty());
    assert!(!h.health.is_degraded());
    assert_eq!(
        series(
            &h.metrics(),
            "svcproxy_sync_skipped_service_ports{reason=\"unsupported\"}"
        ),
        0.0
    );
    h.stop().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn update_that_only_adds_an_unsupported_port_needs_no_sync_but_is_reported() {
    let fake = FakeDataplane::with_capabilities(without_sctp());
    let h = Harness::start(fake.clone(), config());
    h.send(table(0));
    sleep(2 * SECOND).await;
    h.send(with_sctp(0));
    sleep(20 * SECOND).await;
    let requests = fake.requests();
    assert_eq!(
        requests.len(),
        1,
        "the dataplane's table did not change: {requests:#?}"
    );
    assert_eq!(fake.applied(), table(0));
    let outcome = h.handle.latest();
    assert_eq!(outcome.sequence, 1);
    assert!(outcome
        .skipped
        .contains_key(&ServicePortName::new("default", "signal", "sctp")));
    assert!(h.health.is_degraded());
    h.stop().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn sync_once_checks_capabilities_and_diffs_from_empty() {
    let fake = FakeDataplane::with_capabilities(without_sctp());
    let mut dataplane = fake.clone();
    let error = sync_once(&mut dataplane, &with_sctp(0), SyncMode::Full)
        .await
        .expect_err("SCTP is unsupported");
    assert!(matches!(error, DataplaneError::Unsupported(_)), "{error}");
    assert!(fake.requests().is_empty());

    let report = sync_once(&mut dataplane, &table(1), SyncMode::Full)
        .await
        .expect("syncs");
    assert_eq!((report.service_ports, report.endpoints), (1, 2));
    let requests = fake.requests();
    assert_eq!(requests[0].changes, diff(&ServiceTable::empty(), &table(1)));
    assert_eq!(requests[0].mode, SyncMode::Full);
}

// === shutdown and source closing ===

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_loop_without_cleanup_by_default() {
    let fake = FakeDataplane::new();
    let h = Harness::start(fake.clone(), config());
    h.send(table(0));
    sleep(SECOND / 2).await;
    h.send(table(1)); // queued, not yet synced
    let returned = h.stop().await.expect("clean stop");
    assert_eq!(fake.cleanups(), 0);
    assert_eq!(fake.requests().len(), 1, "shutdown does not flush");
    assert_eq!(
        returned.applied(),
        table(0),
        "the dataplane is handed back as it is"
    );
    sleep(60 * SECOND).await;
    assert_eq!(fake.requests().len(), 1, "no sync after shutdown");
}

#[tokio::test(start_paused = true)]
async fn shutdown_runs_cleanup_when_configured() {
    let fake = FakeDataplane::new();
    let config = SyncConfig {
        cleanup_on_shutdown: true,
        ..config()
    };
    let h = Harness::start(fake.clone(), config);
    h.send(table(0));
    sleep(SECOND).await;
    h.stop().await.expect("clean stop");
    assert_eq!(fake.cleanups(), 1);
    assert!(fake.applied().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failed_cleanup_on_shutdown_is_returned() {
    let fake = FakeDataplane::new();
    fake.set_fail_cleanup(true);
    let config = SyncConfig {
        cleanup_on_shutdown: true,
        ..config()
    };
    let h = Harness::start(fake.clone(), config);
    h.send(table(0));
    sleep(SECOND).await;
    let error = h.stop().await.expect_err("cleanup failed");
    assert!(matches!(error, SyncLoopError::Cleanup(_)), "{error}");
    assert_eq!(fake.cleanups(), 1);
}

#[tokio::test(start_paused = true)]
async fn closed_source_syncs_the_queued_table_and_ends_the_loop() {
    let fake = FakeDataplane::new();
    let mut registry = Registry::default();
    let sync = SyncLoop::new(fake.clone(), config(), &mut registry);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let start = Instant::now();
    let task = tokio::spawn(sync.run(rx, std::future::pending()));
    tx.send(table(0)).await.expect("loop running");
    sleep(SECOND / 10).await;
    tx.send(table(1)).await.expect("loop running");
    tx.send(table(2)).await.expect("loop running");
    drop(tx);
    let returned = task.await.expect("no panic").expect("no cleanup");
    let requests = fake.requests();
    let times: Vec<Duration> = requests.iter().map(|r| r.at - start).collect();
    assert_eq!(times, [Duration::ZERO, SECOND], "{requests:#?}");
    assert_eq!(
        returned.applied(),
        table(2),
        "the newest queued table is synced"
    );
    assert_eq!(fake.cleanups(), 0);
}

#[tokio::test(start_paused = true)]
async fn closed_source_with_nothing_queued_ends_at_once() {
    let fake = FakeDataplane::new();
    let mut registry = Registry::default();
    let sync = SyncLoop::new(fake.clone(), config(), &mut registry);
    let (tx, rx) = watch::channel(ServiceTable::empty());
    drop(tx);
    let start = Instant::now();
    sync.run(rx, std::future::pending())
        .await
        .expect("no cleanup");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(
        fake.requests().is_empty(),
        "the initial value counts as seen"
    );
}

#[tokio::test(start_paused = true)]
async fn watch_initial_value_is_synced_when_marked_changed() {
    let fake = FakeDataplane::new();
    let mut registry = Registry::default();
    let sync = SyncLoop::new(fake.clone(), config(), &mut registry);
    let (tx, mut rx) = watch::channel(table(3));
    rx.mark_changed();
    drop(tx);
    sync.run(rx, std::future::pending())
        .await
        .expect("no cleanup");
    assert_eq!(fake.applied(), table(3));
}

// === health ===

#[tokio::test(start_paused = true)]
async fn health_fails_when_syncs_keep_failing_past_the_timeout_and_recovers() {
    let fake = FakeDataplane::new();
    // Backoff 1, 2, 4, 8, 8: failures at 0, 1, 3, 7, 15; success at 23.
    fake.fail_next(5);
    let config = SyncConfig {
        health_timeout: Some(10 * SECOND),
        ..config()
    };
    let h = Harness::start(fake.clone(), config);
    assert!(
        h.health.is_healthy(),
        "waiting for a first table is healthy"
    );
    assert!(!h.health.has_synced());
    h.send(table(0));

    sleep_until(h.start + 5 * SECOND).await;
    assert!(h.health.is_healthy(), "failing for 5 s, timeout 10 s");
    assert_eq!(h.health.consecutive_failures(), 3);

    sleep_until(h.start + 11 * SECOND).await;
    assert!(!h.health.is_healthy(), "failing for 11 s, timeout 10 s");
    assert_eq!(h.health.pending_since(), Some(h.start));

    let requests = fake.wait_for_requests(6).await;
    assert_eq!(
        h.times(&requests),
        [0.0, 1.0, 3.0, 7.0, 15.0, 23.0],
        "{requests:#?}"
    );
    assert!(h.health.is_healthy(), "a success clears the pending work");
    assert_eq!(h.health.last_success(), Some(h.start + 23 * SECOND));
    assert_eq!(h.health.consecutive_failures(), 0);
    h.stop().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn health_timeout_defaults_to_twice_the_full_sync_period() {
    let config = SyncConfig {
        full_sync_period: 45 * SECOND,
        ..SyncConfig::default()
    };
    assert_eq!(config.health_timeout(), 90 * SECOND);
    let mut registry = Registry::default();
    let sync = SyncLoop::new(FakeDataplane::new(), config, &mut registry);
    assert_eq!(sync.health().timeout(), 90 * SECOND);
}

// === metrics ===

#[tokio::test(start_paused = true)]
async fn metrics_report_changes_pending_sizes_and_policy_drops() {
    let fake = FakeDataplane::new();
    let h = Harness::start(fake.clone(), config());
    let a = table(1); // web with 2 endpoints
    let mut api = ServicePort::new(
        ServicePortName::new("default", "api", "grpc"),
        Protocol::Tcp,
        443,
    )
    .with_cluster_ip("198.19.0.11".parse().expect("valid ip"))
    .with_endpoint(endpoint(100));
    api.internal_traffic_policy = TrafficPolicy::Local; // its only endpoint is not local: dropped
    let b = table(2).edit().insert(api).build().expect("valid table");

    h.send(a);
    sleep(SECOND / 2).await;
    h.send(b.clone());
    sleep(SECOND / 10).await;
    let text = h.metrics();
    // b vs a: web changed (one endpoint added), api added (one endpoint): 2 ports, 2 endpoints.
    assert_eq!(
        series(&text, "kubeproxy_sync_proxy_rules_service_changes_pending"),
        2.0
    );
    assert_eq!(
        series(&text, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"),
        2.0
    );
    assert!(
        series(
            &text,
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"
        ) >= series(&text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds"),
        "b was queued after a was synced:\n{text}"
    );

    fake.wait_for_requests(2).await;
    let text = h.metrics();
    for (name, want) in [
        // a from nothing: 1 port, 2 endpoints; then b: 2 ports, 2 endpoints.
        ("kubeproxy_sync_proxy_rules_service_changes_total", 3.0),
        ("kubeproxy_sync_proxy_rules_endpoint_changes_total", 4.0),
        ("kubeproxy_sync_proxy_rules_service_changes_pending", 0.0),
        ("kubeproxy_sync_proxy_rules_endpoint_changes_pending", 0.0),
        ("kubeproxy_sync_proxy_rules_duration_seconds_count", 2.0),
        (
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"}",
            1.0,
        ),
        (
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}",
            0.0,
        ),
        ("svcproxy_sync_service_ports", 2.0),
        ("svcproxy_sync_endpoints", 4.0),
        (
            "svcproxy_syncs_total{mode=\"full\",result=\"success\"}",
            1.0,
        ),
        (
            "svcproxy_syncs_total{mode=\"partial\",result=\"success\"}",
            1.0,
        ),
        (
            "svcproxy_sync_failures_total{reason=\"dataplane_error\"}",
            0.0,
        ),
        (
            "svcproxy_sync_failures_total{reason=\"unsupported_table\"}",
            0.0,
        ),
    ] {
        assert_eq!(series(&text, name), want, "{name} in:\n{text}");
    }
    let synced_at = series(&text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        (now - synced_at).abs() < 60.0,
        "wall-clock timestamp, got {synced_at}"
    );
    for help in [
        "# HELP kubeproxy_sync_proxy_rules_duration_seconds SyncProxyRules latency in seconds.",
        "# TYPE kubeproxy_sync_proxy_rules_service_changes counter",
        "# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge",
    ] {
        assert!(
            text.lines().any(|l| l == help),
            "missing {help:?} in:\n{text}"
        );
    }
    h.stop().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn sync_duration_is_observed_with_kube_proxy_buckets() {
    let fake = FakeDataplane::new();
    fake.set_sync_delay(Duration::from_millis(300));
    let h = Harness::start(fake.clone(), config());
    h.send(table(0));
    fake.wait_for_requests(1).await;
    sleep(SECOND).await;
    let text = h.metrics();
    let bucket = |le: &str| {
        series(
            &text,
            &format!("kubeproxy_sync_proxy_rules_duration_seconds_bucket{{le=\"{le}\"}}"),
        )
    };
    assert_eq!(bucket("0.256"), 0.0);
    assert_eq!(bucket("0.512"), 1.0);
    assert_eq!(bucket("16.384"), 1.0);
    assert_eq!(bucket("+Inf"), 1.0);
    h.stop().await.expect("clean stop");
}

// === config ===

#[test]
fn config_defaults_match_kube_proxy_and_read_seconds() {
    let defaults = SyncConfig::default();
    assert_eq!(defaults.min_sync_period, SECOND);
    assert_eq!(defaults.full_sync_period, 30 * SECOND);
    assert_eq!(defaults.retry_backoff_initial, SECOND);
    assert_eq!(defaults.retry_backoff_max, 30 * SECOND);
    assert_eq!(defaults.health_timeout(), 60 * SECOND);
    assert_eq!(defaults.drift_check_period, 2 * SECOND);
    assert!(!defaults.cleanup_on_shutdown);

    let parsed: SyncConfig = serde_json::from_str(
        r#"{"min_sync_period_seconds": 0.5, "health_timeout_seconds": 12, "drift_check_period_seconds": 0}"#,
    )
    .expect("valid config");
    assert_eq!(parsed.drift_check_period, Duration::ZERO, "checks off");
    assert_eq!(parsed.min_sync_period, SECOND / 2);
    assert_eq!(parsed.health_timeout(), 12 * SECOND);
    assert_eq!(
        parsed.full_sync_period,
        30 * SECOND,
        "unset fields keep defaults"
    );

    let error = serde_json::from_str::<SyncConfig>(r#"{"min_sync_period_seconds": -1}"#)
        .expect_err("negative");
    assert!(error.to_string().contains("-1"), "{error}");
    assert!(serde_json::from_str::<SyncConfig>(r#"{"min_sync_period": 1}"#).is_err());

    let round_trip: SyncConfig =
        serde_json::from_str(&serde_json::to_string(&defaults).expect("serializes"))
            .expect("parses");
    assert_eq!(round_trip, defaults);
}

#[test]
fn protocols_helper_sanity() {
    // The capability used above really lacks SCTP and nothing else.
    let caps = without_sctp();
    let want: BTreeSet<Protocol> = [Protocol::Tcp, Protocol::Udp].into_iter().collect();
    assert_eq!(caps.protocols, want);
    assert!(caps.check("fake", &table(0)).is_ok());
    assert!(caps.check("fake", &with_sctp(0)).is_err());
}

// === the handle: outcomes by generation, resync, dry run ===

/// A loop fed `TableUpdate`s with generations, as a tracker feeds it.
fn start_with_generations(
    fake: &FakeDataplane,
) -> (
    watch::Sender<TableUpdate>,
    SyncHandle,
    JoinHandle<Result<FakeDataplane, SyncLoopError>>,
) {
    let sync = SyncLoop::new(fake.clone(), config(), &mut Registry::default());
    let handle = sync.handle();
    let (updates, rx) = watch::channel(TableUpdate::default());
    let task = tokio::spawn(sync.run(rx, std::future::pending()));
    (updates, handle, task)
}

fn update(table: ServiceTable, generation: u64) -> TableUpdate {
    TableUpdate {
        table,
        generation,
        ..TableUpdate::default()
    }
}

#[tokio::test(start_paused = true)]
async fn each_outcome_names_its_generation_and_a_failure_keeps_the_applied_one() {
    let fake = FakeDataplane::new();
    let (updates, handle, task) = start_with_generations(&fake);
    updates.send_replace(update(table(0), 7));
    let outcome = handle.wait_for(7).await.expect("the loop runs");
    assert_eq!(
        (
            outcome.sequence,
            outcome.generation,
            outcome.applied_generation
        ),
        (1, 7, 7)
    );
    assert_eq!(outcome.status, SyncStatus::Applied);

    fake.fail_next(1);
    updates.send_replace(update(table(1), 8));
    let mut outcomes = handle.outcomes();
    let failed = outcomes
        .wait_for(|o| o.sequence == 2)
        .await
        .expect("the loop runs")
        .clone();
    assert_eq!(failed.generation, 8);
    assert_eq!(failed.applied_generation, 7, "generation 7 stays in place");
    assert!(
        matches!(&failed.status, SyncStatus::Failed(e) if e.contains("injected failure")),
        "{failed}"
    );
    // The retry (a full sync after the backoff) puts generation 8 in place.
    let outcome = handle.wait_for(8).await.expect("the loop runs");
    assert_eq!(outcome.sequence, 3);
    assert_eq!(outcome.mode, SyncMode::Full);
    assert_eq!(fake.applied(), table(1));
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_resync_through_the_handle_is_full_and_waits_only_for_the_min_period() {
    let fake = FakeDataplane::new();
    let (updates, handle, task) = start_with_generations(&fake);
    updates.send_replace(update(table(0), 1));
    handle.wait_for(1).await.expect("the loop runs");
    sleep(5 * SECOND).await;
    let asked = Instant::now();
    handle.resync().expect("the loop runs");
    let requests = fake.wait_for_requests(2).await;
    assert_eq!(requests[1].mode, SyncMode::Full);
    assert!(requests[1].changes.is_empty());
    assert_eq!(requests[1].at, asked, "not at the periodic 30 s resync");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_through_the_handle_renders_the_desired_table_and_changes_nothing() {
    let fake = FakeDataplane::new();
    let (updates, handle, task) = start_with_generations(&fake);
    let before = handle.dry_run().await.expect("the loop answers");
    assert_eq!(before.rendered, "", "nothing desired yet");
    updates.send_replace(update(table(2), 1));
    handle.wait_for(1).await.expect("the loop runs");
    let dry_run = handle.dry_run().await.expect("the loop answers");
    assert_eq!(dry_run.rendered, "default/web:http (3 endpoint(s))\n");
    assert_eq!(fake.requests().len(), 1, "a dry run is no sync");
    task.abort();
    let _ = task.await;
    assert!(handle.dry_run().await.is_err(), "the loop is gone");
}

// === drift checks ===

/// The fake dataplane with a scripted drift check: it reports drift from the moment a test says
/// so until a full sync repairs it, and records when each check and each sync ran.
#[derive(Debug, Clone)]
struct Drifting {
    fake: FakeDataplane,
    script: Arc<Mutex<DriftScript>>,
}

#[derive(Debug, Default)]
struct DriftScript {
    drifted: bool,
    syncing: bool,
    /// When each check ran.
    checks: Vec<Instant>,
    /// Checks that ran while a sync was in progress.
    checks_during_sync: usize,
    /// Each sync's start and end.
    syncs: Vec<(Instant, Instant)>,
}

impl Drifting {
    fn new(fake: FakeDataplane) -> Self {
        Self {
            fake,
            script: Arc::default(),
        }
    }

    fn script(&self) -> MutexGuard<'_, DriftScript> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[proxy_core::async_trait]
impl Dataplane for Drifting {
    fn name(&self) -> &'static str {
        self.fake.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.fake.capabilities()
    }
    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        let started = Instant::now();
        self.script().syncing = true;
        let result = self.fake.sync(request).await;
        let mut script = self.script();
        script.syncing = false;
        script.syncs.push((started, Instant::now()));
        if result.is_ok() && request.mode == SyncMode::Full {
            script.drifted = false;
        }
        result
    }
    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        self.fake.cleanup().await
    }
    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        self.fake.dry_run(table)
    }
    async fn check_drift(&mut self) -> Result<bool, DataplaneError> {
        let mut script = self.script();
        script.checks.push(Instant::now());
        if script.syncing {
            script.checks_during_sync += 1;
        }
        Ok(script.drifted)
    }
}

/// A loop over `dataplane` fed by a watch channel; returns the sender, the loop's health, its
/// registry and the task.
fn start_drifting(
    dataplane: Drifting,
    config: SyncConfig,
) -> (
    watch::Sender<ServiceTable>,
    SyncHealth,
    Registry,
    JoinHandle<Result<Drifting, SyncLoopError>>,
) {
    let mut registry = Registry::default();
    let sync = SyncLoop::new(dataplane, config, &mut registry);
    let health = sync.health();
    let (tables, rx) = watch::channel(ServiceTable::empty());
    let task = tokio::spawn(sync.run(rx, std::future::pending()));
    (tables, health, registry, task)
}

#[tokio::test(start_paused = true)]
async fn drift_found_by_a_check_forces_a_full_sync_within_the_min_period_and_is_reported() {
    let fake = FakeDataplane::new();
    let dataplane = Drifting::new(fake.clone());
    let config = SyncConfig {
        min_sync_period: 3 * SECOND,
        ..config()
    };
    let start = Instant::now();
    let at = |secs: f64| start + Duration::from_secs_f64(secs);
    let (tables, health, registry, task) = start_drifting(dataplane.clone(), config);
    tables.send(table(0)).expect("the loop runs");
    sleep_until(at(5.5)).await;
    tables.send(table(1)).expect("the loop runs");
    sleep_until(at(6.0)).await;
    // Someone flushes our rules at 6 s; the next check is a period after the 5.5 s sync.
    dataplane.script().drifted = true;
    sleep_until(at(8.0)).await;
    assert!(
        health.is_degraded()
            && health
                .problems()
                .iter()
                .any(|p| p.contains("changed behind our back")),
        "drift found at 7.5 s, repair waits for the min period (8.5 s): {:?}",
        health.problems()
    );
    assert_eq!(health.drifts_detected(), 1);
    assert_eq!(health.last_drift(), Some(at(7.5)));
    sleep_until(at(9.0)).await;

    let requests = fake.requests();
    let times: Vec<f64> = requests
        .iter()
        .map(|r| r.at.duration_since(start).as_secs_f64())
        .collect();
    assert_eq!(times, [0.0, 5.5, 8.5], "{requests:#?}");
    let modes: Vec<SyncMode> = requests.iter().map(|r| r.mode).collect();
    assert_eq!(modes, [SyncMode::Full, SyncMode::Partial, SyncMode::Full]);
    assert!(requests[2].changes.is_empty(), "a repair, not a change");
    assert!(!health.is_degraded(), "{:?}", health.problems());
    let text = encode_text(&registry).expect("encodes");
    assert_eq!(series(&text, "svcproxy_sync_drift_detected_total"), 1.0);
    let checks: Vec<f64> = dataplane
        .script()
        .checks
        .iter()
        .map(|t| t.duration_since(start).as_secs_f64())
        .collect();
    assert_eq!(
        checks,
        [2.0, 4.0, 7.5],
        "every period while idle, a period after each sync"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn no_drift_check_runs_before_the_first_sync_or_during_one() {
    let fake = FakeDataplane::new();
    fake.set_sync_delay(5 * SECOND);
    let dataplane = Drifting::new(fake.clone());
    let config = SyncConfig {
        drift_check_period: SECOND,
        ..config()
    };
    let start = Instant::now();
    let (tables, _health, _registry, task) = start_drifting(dataplane.clone(), config);
    sleep(3 * SECOND).await;
    assert!(dataplane.script().checks.is_empty(), "nothing synced yet");
    tables.send(table(0)).expect("the loop runs");
    // Off the checks' whole seconds, so that no two events share an instant.
    sleep_until(start + Duration::from_millis(11_500)).await;
    tables.send(table(1)).expect("the loop runs");
    sleep_until(start + Duration::from_millis(19_200)).await;

    let script = dataplane.script();
    assert_eq!(script.syncs.len(), 2, "{script:#?}");
    assert_eq!(script.checks_during_sync, 0, "{script:#?}");
    for check in &script.checks {
        assert!(
            script
                .syncs
                .iter()
                .all(|(from, to)| check < from || check >= to),
            "check at {:?} inside a sync: {script:#?}",
            check.duration_since(start)
        );
    }
    let secs = |t: &Instant| t.duration_since(start).as_secs_f64();
    let checks: Vec<f64> = script.checks.iter().map(secs).collect();
    // Syncs 3-8 s and 11.5-16.5 s; a check each second after each.
    assert_eq!(checks, [9.0, 10.0, 11.0, 17.5, 18.5], "{script:#?}");
    drop(script);
    task.abort();
}
