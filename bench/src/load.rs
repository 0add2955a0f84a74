//! The load generator: each scenario is bounded in time (and in count where it opens
//! connections), runs on the caller's tokio runtime, and returns what it measured.
//!
//! Every connection attempt has a timeout ([`OP_TIMEOUT`]), so a stuck proxy costs seconds, not
//! a hung run. Errors are counted, and the first one is kept for the report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::error::BenchError;
use crate::stats::{Samples, Summary};
use crate::wire::{self, CHUNK};

/// Longest a single connect plus request may take before it counts as an error.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// At most this many latencies are kept per scenario (the rest are counted).
const SAMPLE_CAP: usize = 2_000_000;

/// Bytes of each small request and of its response.
pub const SMALL_MESSAGE: usize = 64;

/// What a rate scenario measured: operations (connections or requests) and their latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateResult {
    /// Operations completed.
    pub ops: u64,
    /// Operations that failed or timed out.
    pub errors: u64,
    /// Operations not started because too many were in flight (fixed rate only).
    pub skipped: u64,
    /// Wall-clock time of the scenario, in seconds.
    pub elapsed_s: f64,
    /// Completed operations per second.
    pub ops_per_s: f64,
    /// Latency of the completed operations.
    pub latency: Option<Summary>,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

/// What a bulk transfer measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkResult {
    /// Bytes received.
    pub bytes: u64,
    /// Seconds from the request to the last byte (or to the time limit).
    pub elapsed_s: f64,
    /// Throughput, in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Whether the whole asked size arrived before the time limit.
    pub complete: bool,
}

/// The scenarios `bench load` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// New connections, one request each, as fast as --concurrency clients go.
    ConnMax,
    /// New connections, one request each, at --rate per second.
    ConnFixed,
    /// Requests at --rate per second over --concurrency keep-alive connections.
    ReqFixed,
    /// Requests as fast as --concurrency keep-alive connections go.
    Keepalive,
    /// One transfer of --count bytes.
    Bulk,
    /// --count requests one at a time on one connection.
    PingPong,
}

/// One scenario with its parameters: the arguments of `bench load`, so the same load can run
/// here or in another network namespace (see [`crate::netns::Topology::run_load`]).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct LoadSpec {
    /// Where to connect.
    #[arg(long)]
    pub target: SocketAddr,
    /// Which scenario.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Seconds (rate scenarios; the time limit for bulk and ping-pong).
    #[arg(long, default_value_t = 1.0)]
    pub duration: f64,
    /// Concurrent clients (conn-max) or connections (keepalive, req-fixed).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Per second (conn-fixed, req-fixed).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Bytes (bulk) or requests (ping-pong).
    #[arg(long, default_value_t = 1 << 30)]
    pub count: u64,
}

/// What a [`LoadSpec`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LoadOutcome {
    /// Every scenario but bulk.
    Rate(RateResult),
    /// Bulk.
    Bulk(BulkResult),
}

impl LoadSpec {
    /// A spec with the command line's defaults.
    pub fn new(target: SocketAddr, scenario: Scenario, duration: Duration) -> LoadSpec {
        LoadSpec {
            target,
            scenario,
            duration: duration.as_secs_f64(),
            concurrency: 16,
            rate: 1_000,
            count: 1 << 30,
        }
    }

    /// The `bench` arguments that run this spec (`load --target ...`).
    pub fn to_args(&self) -> Vec<String> {
        let scenario = clap::ValueEnum::to_possible_value(&self.scenario)
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default();
        vec![
            "load".to_owned(),
            "--target".to_owned(),
            self.target.to_string(),
            "--scenario".to_owned(),
            scenario,
            "--duration".to_owned(),
            self.duration.to_string(),
            "--concurrency".to_owned(),
            self.concurrency.to_string(),
            "--rate".to_owned(),
            self.rate.to_string(),
            "--count".to_owned(),
            self.count.to_string(),
        ]
    }

    /// Runs the scenario here.
    ///
    /// # Errors
    ///
    /// Only bulk fails as a whole (its connection could not be made); the others count errors.
    pub async fn run(&self) -> Result<LoadOutcome, BenchError> {
        let (target, duration) = (self.target, Duration::from_secs_f64(self.duration.max(0.0)));
        Ok(match self.scenario {
            Scenario::ConnMax => {
                LoadOutcome::Rate(connections_max_rate(target, self.concurrency, duration).await)
            }
            Scenario::ConnFixed => {
                LoadOutcome::Rate(connections_fixed_rate(target, self.rate, duration, 4_096).await)
            }
            Scenario::ReqFixed => LoadOutcome::Rate(
                requests_fixed_rate(target, self.rate, duration, self.concurrency).await,
            ),
            Scenario::Keepalive => {
                LoadOutcome::Rate(keepalive_requests(target, self.concurrency, duration).await)
            }
            Scenario::PingPong => LoadOutcome::Rate(ping_pong(target, self.count, duration).await),
            Scenario::Bulk => LoadOutcome::Bulk(bulk(target, self.count, duration).await?),
        })
    }
}

/// Counts of one scenario's operations, folded into a [`RateResult`].
#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    errors: u64,
    skipped: u64,
    first_error: Option<String>,
    samples: Samples,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            samples: Samples::with_cap(SAMPLE_CAP),
            ..Tally::default()
        }
    }

    fn record(&mut self, outcome: Result<Duration, String>) {
        match outcome {
            Ok(latency) => {
                self.ops += 1;
                self.samples.record(latency);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.skipped += other.skipped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.samples.merge(other.samples);
    }

    fn finish(self, elapsed: Duration) -> RateResult {
        let elapsed_s = elapsed.as_secs_f64();
        RateResult {
            ops: self.ops,
            errors: self.errors,
            skipped: self.skipped,
            elapsed_s,
            ops_per_s: if elapsed_s > 0.0 {
                self.ops as f64 / elapsed_s
            } else {
                0.0
            },
            latency: self.samples.summary(),
            first_error: self.first_error,
        }
    }
}

/// One connection, one small request and response, then close: the latency of it all.
async fn connect_and_request(target: SocketAddr, buf: &mut Vec<u8>) -> Result<Duration, String> {
    let start = Instant::now();
    let attempt = async {
        let mut stream = TcpStream::connect(target)
            .await
            .map_err(|e| BenchError::io(format!("connect {target}"), e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| BenchError::io("TCP_NODELAY", e))?;
        wire::round_trip(&mut stream, SMALL_MESSAGE, SMALL_MESSAGE, buf).await
    };
    match timeout(OP_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "connect and request to {target}: timed out after {OP_TIMEOUT:?}"
        )),
    }
}

/// New connections per second at the highest rate `concurrency` closed-loop clients reach in
/// `duration`: each connects, sends one request, reads the response and closes, then repeats.
pub async fn connections_max_rate(
    target: SocketAddr,
    concurrency: usize,
    duration: Duration,
) -> RateResult {
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        workers.spawn(async move {
            let mut tally = Tally {
                samples: Samples::with_cap(SAMPLE_CAP / concurrency.max(1)),
                ..Tally::default()
            };
            let mut buf = Vec::with_capacity(256);
            while Instant::now() < deadline {
                tally.record(connect_and_request(target, &mut buf).await);
            }
            tally
        });
    }
    collect(workers, start).await
}

/// New connections at a fixed `rate` per second for `duration` (open loop: each starts on its
/// schedule whether or not earlier ones finished, at most `max_in_flight` at once; the rest are
/// counted as skipped). Latency is connect plus one request and response.
pub async fn connections_fixed_rate(
    target: SocketAddr,
    rate: u32,
    duration: Duration,
    max_in_flight: usize,
) -> RateResult {
    let rate = rate.max(1);
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs(1) / rate;
    let in_flight = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut tally = Tally::new();
    for i in 0..total {
        let due = start + period * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due).await;
        // Reap finished connections as we go, so the set stays small.
        while let Some(done) = tasks.try_join_next() {
            tally.record(done.unwrap_or_else(|e| Err(format!("task failed: {e}"))));
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tally.skipped += 1;
            continue;
        };
        tasks.spawn(async move {
            let mut buf = Vec::with_capacity(256);
            let outcome = connect_and_request(target, &mut buf).await;
            drop(permit);
            outcome
        });
    }
    while let Some(done) = tasks.join_next().await {
        tally.record(done.unwrap_or_else(|e| Err(format!("task failed: {e}"))));
    }
    tally.finish(start.elapsed())
}

/// Requests at a fixed `rate` per second for `duration` over a pool of `connections` keep-alive
/// connections (open loop: each request starts on its schedule on a free connection; when none
/// is free it is counted as skipped). Latency is one request and response, no connect: the
/// "with keep-alive" half of the fixed-rate latency comparison.
pub async fn requests_fixed_rate(
    target: SocketAddr,
    rate: u32,
    duration: Duration,
    connections: usize,
) -> RateResult {
    let mut tally = Tally::new();
    let (pool_tx, mut pool_rx) = tokio::sync::mpsc::channel(connections.max(1));
    for _ in 0..connections.max(1) {
        match timeout(OP_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                // The channel holds `connections` streams, so this never waits.
                let _ = pool_tx.try_send(stream);
            }
            Ok(Err(e)) => tally.record(Err(format!("connect {target}: {e}"))),
            Err(_) => tally.record(Err(format!("connect {target}: timed out"))),
        }
    }
    let rate = rate.max(1);
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + period * u32::try_from(i).unwrap_or(u32::MAX)).await;
        while let Some(done) = tasks.try_join_next() {
            tally.record(done.unwrap_or_else(|e| Err(format!("task failed: {e}"))));
        }
        let Ok(mut stream) = pool_rx.try_recv() else {
            tally.skipped += 1;
            continue;
        };
        let pool = pool_tx.clone();
        tasks.spawn(async move {
            let mut buf = Vec::with_capacity(256);
            let begun = Instant::now();
            let exchange = wire::round_trip(&mut stream, SMALL_MESSAGE, SMALL_MESSAGE, &mut buf);
            match timeout(OP_TIMEOUT, exchange).await {
                Ok(Ok(())) => {
                    let latency = begun.elapsed();
                    let _ = pool.try_send(stream);
                    Ok(latency)
                }
                // A broken connection leaves the pool.
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("keep-alive request timed out".to_owned()),
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        tally.record(done.unwrap_or_else(|e| Err(format!("task failed: {e}"))));
    }
    tally.finish(start.elapsed())
}

/// Requests per second on `connections` keep-alive connections for `duration`: each connection
/// sends a small request, waits for its response, and repeats.
pub async fn keepalive_requests(
    target: SocketAddr,
    connections: usize,
    duration: Duration,
) -> RateResult {
    let mut streams = Vec::with_capacity(connections);
    let mut setup = Tally::new();
    for _ in 0..connections.max(1) {
        match timeout(OP_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => {
                // Best effort: without it latency only grows, the figures stay valid.
                let _ = stream.set_nodelay(true);
                streams.push(stream);
            }
            Ok(Err(e)) => setup.record(Err(format!("connect {target}: {e}"))),
            Err(_) => setup.record(Err(format!("connect {target}: timed out"))),
        }
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = JoinSet::new();
    let per_worker_cap = SAMPLE_CAP / streams.len().max(1);
    for mut stream in streams {
        workers.spawn(async move {
            let mut tally = Tally {
                samples: Samples::with_cap(per_worker_cap),
                ..Tally::default()
            };
            let mut buf = Vec::with_capacity(256);
            while Instant::now() < deadline {
                let begun = Instant::now();
                let exchange =
                    wire::round_trip(&mut stream, SMALL_MESSAGE, SMALL_MESSAGE, &mut buf);
                match timeout(OP_TIMEOUT, exchange).await {
                    Ok(Ok(())) => tally.record(Ok(begun.elapsed())),
                    Ok(Err(e)) => {
                        tally.record(Err(e.to_string()));
                        break;
                    }
                    Err(_) => {
                        tally.record(Err("keep-alive request timed out".to_owned()));
                        break;
                    }
                }
            }
            tally
        });
    }
    let mut result = collect(workers, start).await;
    result.errors += setup.errors;
    if result.first_error.is_none() {
        result.first_error = setup.first_error;
    }
    result
}

/// Sequential requests on one connection (one in flight): the round-trip latency with no
/// queueing. Stops after `count` requests or `time_limit`.
pub async fn ping_pong(target: SocketAddr, count: u64, time_limit: Duration) -> RateResult {
    let mut results = ping_pong_interleaved(&[target], count, 1, time_limit).await;
    results
        .pop()
        .unwrap_or_else(|| Tally::new().finish(Duration::ZERO))
}

/// [`ping_pong`] against several targets in alternation, for the added-latency comparison:
/// one connection each, then `rounds` rounds of `count / rounds` requests to each target in
/// turn, so a burst of outside load lands on all of them alike. Stops after `time_limit` in all.
/// Returns one result per target, in order.
pub async fn ping_pong_interleaved(
    targets: &[SocketAddr],
    count: u64,
    rounds: u64,
    time_limit: Duration,
) -> Vec<RateResult> {
    let deadline = Instant::now() + time_limit;
    let rounds = rounds.clamp(1, count.max(1));
    let per_round = count.div_ceil(rounds);
    let mut lanes = Vec::with_capacity(targets.len());
    for &target in targets {
        let mut tally = Tally::new();
        let stream = match timeout(OP_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Some(stream)
            }
            Ok(Err(e)) => {
                tally.record(Err(format!("connect {target}: {e}")));
                None
            }
            Err(_) => {
                tally.record(Err(format!("connect {target}: timed out")));
                None
            }
        };
        lanes.push((stream, tally, Duration::ZERO));
    }
    let mut buf = Vec::with_capacity(256);
    for _ in 0..rounds {
        for (stream_slot, tally, busy) in &mut lanes {
            let Some(stream) = stream_slot else { continue };
            let lane_start = Instant::now();
            for _ in 0..per_round {
                if Instant::now() >= deadline || tally.ops >= count {
                    break;
                }
                let begun = Instant::now();
                let exchange = wire::round_trip(stream, SMALL_MESSAGE, SMALL_MESSAGE, &mut buf);
                let failure = match timeout(OP_TIMEOUT, exchange).await {
                    Ok(Ok(())) => {
                        tally.record(Ok(begun.elapsed()));
                        None
                    }
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("request timed out".to_owned()),
                };
                if let Some(e) = failure {
                    tally.record(Err(e));
                    *stream_slot = None;
                    break;
                }
            }
            *busy += lane_start.elapsed();
        }
    }
    lanes
        .into_iter()
        .map(|(_, tally, busy)| tally.finish(busy))
        .collect()
}

/// One large transfer: asks for `bytes` on a fresh connection and reads until they all arrived
/// or `time_limit` passed.
///
/// # Errors
///
/// [`BenchError::Io`] when the connection cannot be made or breaks.
pub async fn bulk(
    target: SocketAddr,
    bytes: u64,
    time_limit: Duration,
) -> Result<BulkResult, BenchError> {
    let mut stream = timeout(OP_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| {
            BenchError::io(
                format!("connect {target}"),
                std::io::ErrorKind::TimedOut.into(),
            )
        })?
        .map_err(|e| BenchError::io(format!("connect {target}"), e))?;
    let start = Instant::now();
    let deadline = start + time_limit;
    tokio::io::AsyncWriteExt::write_all(&mut stream, &wire::header(0, bytes))
        .await
        .map_err(|e| BenchError::io(format!("write bulk request to {target}"), e))?;
    let mut buf = vec![0; CHUNK];
    let mut received = 0u64;
    while received < bytes {
        let read = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(read) => read.map_err(|e| BenchError::io(format!("read bulk from {target}"), e))?,
            Err(_) => break,
        };
        if read == 0 {
            break;
        }
        received += read as u64;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(BulkResult {
        bytes: received,
        elapsed_s,
        mb_per_s: received as f64 / 1e6 / elapsed_s.max(1e-9),
        complete: received >= bytes,
    })
}

/// Opens `count` connections and makes one request on each (so a proxy has its upstream side
/// open too), keeping them open. Bounded: gives up after `time_limit`.
/// Returns the open connections and the number that failed.
pub async fn open_idle(
    target: SocketAddr,
    count: usize,
    time_limit: Duration,
) -> (Vec<TcpStream>, u64) {
    const BATCH: usize = 100;
    let deadline = Instant::now() + time_limit;
    let mut open = Vec::with_capacity(count);
    let mut failed = 0u64;
    while open.len() + (failed as usize) < count && Instant::now() < deadline {
        let batch = BATCH.min(count - open.len() - failed as usize);
        let mut set = JoinSet::new();
        for _ in 0..batch {
            set.spawn(async move {
                let attempt = async {
                    let mut stream = TcpStream::connect(target)
                        .await
                        .map_err(|e| BenchError::io(format!("connect {target}"), e))?;
                    let mut buf = Vec::new();
                    wire::round_trip(&mut stream, SMALL_MESSAGE, SMALL_MESSAGE, &mut buf).await?;
                    Ok::<_, BenchError>(stream)
                };
                timeout(OP_TIMEOUT, attempt).await
            });
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(Ok(stream))) => open.push(stream),
                _ => failed += 1,
            }
        }
    }
    (open, failed)
}

async fn collect(mut workers: JoinSet<Tally>, start: Instant) -> RateResult {
    let mut tally = Tally::new();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(worker) => tally.merge(worker),
            Err(e) => tally.record(Err(format!("worker failed: {e}"))),
        }
    }
    tally.finish(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Backends;

    async fn echo() -> Backends {
        Backends::start(&["127.0.0.1".parse().expect("literal")], 0)
            .await
            .expect("bind loopback backend")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_rate_against_a_direct_backend_makes_connections() {
        let backends = echo().await;
        let result = connections_max_rate(backends.addrs()[0], 4, Duration::from_millis(500)).await;
        assert!(result.ops > 0, "no connections measured: {result:?}");
        assert_eq!(result.errors, 0, "errors: {result:?}");
        assert!(
            result.elapsed_s >= 0.5 && result.elapsed_s < 5.0,
            "{result:?}"
        );
        let latency = result.latency.expect("latencies recorded");
        assert_eq!(latency.count, result.ops);
        assert_eq!(
            backends.accepted()[0],
            result.ops,
            "one backend connection per op"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixed_rate_makes_the_scheduled_number_of_connections() {
        let backends = echo().await;
        let result =
            connections_fixed_rate(backends.addrs()[0], 200, Duration::from_millis(500), 100).await;
        assert_eq!(
            result.ops + result.errors + result.skipped,
            100,
            "{result:?}"
        );
        assert!(result.ops >= 95, "{result:?}");
        // 100 connections spread over 0.5 s cannot finish much sooner.
        assert!(result.elapsed_s >= 0.49, "{result:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixed_rate_requests_reuse_the_pool() {
        let backends = echo().await;
        let result =
            requests_fixed_rate(backends.addrs()[0], 200, Duration::from_millis(500), 4).await;
        assert_eq!(
            result.ops + result.errors + result.skipped,
            100,
            "{result:?}"
        );
        assert!(result.ops >= 95, "{result:?}");
        assert_eq!(backends.accepted()[0], 4, "only the pool's connections");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keepalive_reuses_its_connections() {
        let backends = echo().await;
        let result = keepalive_requests(backends.addrs()[0], 3, Duration::from_millis(300)).await;
        assert!(result.ops > 3, "{result:?}");
        assert_eq!(backends.accepted()[0], 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_receives_everything_asked() {
        let backends = echo().await;
        let result = bulk(backends.addrs()[0], 8 << 20, Duration::from_secs(10))
            .await
            .expect("bulk");
        assert!(result.complete, "{result:?}");
        assert_eq!(result.bytes, 8 << 20);
        assert!(result.mb_per_s > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_pong_stops_at_its_count_and_idle_connections_stay_open() {
        let backends = echo().await;
        let result = ping_pong(backends.addrs()[0], 50, Duration::from_secs(5)).await;
        assert_eq!(result.ops, 50, "{result:?}");
        let (open, failed) = open_idle(backends.addrs()[0], 250, Duration::from_secs(10)).await;
        assert_eq!((open.len(), failed), (250, 0));
        assert_eq!(backends.accepted()[0], 251);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interleaved_ping_pong_measures_each_target() {
        let first = echo().await;
        let second = echo().await;
        let targets = [first.addrs()[0], second.addrs()[0]];
        let results = ping_pong_interleaved(&targets, 100, 10, Duration::from_secs(5)).await;
        let ops: Vec<u64> = results.iter().map(|r| r.ops).collect();
        assert_eq!(ops, [100, 100], "{results:?}");
        assert_eq!((first.accepted(), second.accepted()), (vec![1], vec![1]));
    }

    #[test]
    fn load_spec_arguments_parse_back_to_the_spec() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Cmd,
        }
        #[derive(Debug, clap::Subcommand)]
        enum Cmd {
            Load(LoadSpec),
        }
        let mut spec = LoadSpec::new(
            "198.18.1.1:9000".parse().expect("literal"),
            Scenario::ReqFixed,
            Duration::from_millis(1500),
        );
        spec.rate = 250;
        let args = spec.to_args();
        assert_eq!(
            &args[..5],
            [
                "load",
                "--target",
                "198.18.1.1:9000",
                "--scenario",
                "req-fixed"
            ]
        );
        let parsed =
            <Cli as clap::Parser>::try_parse_from(std::iter::once("bench".to_owned()).chain(args))
                .expect("parses");
        let Cmd::Load(back) = parsed.command;
        assert_eq!(back, spec);
    }

    #[test]
    fn outcomes_read_back_as_their_kind() {
        let bulk = LoadOutcome::Bulk(BulkResult {
            bytes: 10,
            elapsed_s: 1.0,
            mb_per_s: 0.00001,
            complete: true,
        });
        let rate = LoadOutcome::Rate(Tally::new().finish(Duration::from_secs(1)));
        for outcome in [bulk, rate] {
            let json = serde_json::to_string(&outcome).expect("serialize");
            let back: LoadOutcome = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, outcome);
        }
    }

    #[tokio::test]
    async fn a_closed_port_counts_errors_not_connections() {
        let addr = {
            let backends = echo().await;
            backends.addrs()[0]
        };
        // Let the aborted listener close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let result = connections_fixed_rate(addr, 100, Duration::from_millis(100), 10).await;
        assert_eq!(result.ops, 0, "{result:?}");
        assert!(result.errors > 0);
        assert!(result.first_error.is_some());
    }
}
