//! What one endpoint change costs an embedder, at 1,000, 10,000 and 50,000 service ports × 10
//! endpoints: the change tracker alone, and the whole way from the tracker call until the
//! dataplane's `sync` is called with the `SyncRequest` (a real `SyncLoop` on a current-thread
//! runtime, minimum sync period 0, a dataplane that only signals). Beside them, the path an
//! embedder had before the tracker: `ServiceTable::edit` + `build` (whole-table validation) +
//! `diff`, which grows with the table.
//!
//! Target (issue 9): the change reaches the dataplane in ≤ 1 ms at 10,000 × 10, and the cost
//! follows the change, not the table. Results: `proxy-core/BENCHMARKS.md` and the README.
//! Runs are short (10 samples, 2 s each); pass criterion's flags to change that.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use proxy_core::dataplane::{CleanupReport, DryRun, SyncReport, SyncRequest};
use proxy_core::diff::diff;
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::tracker::{
    ChangeTracker, EndpointSlice, Service, ServiceName, ServicePortSpec, SliceEndpoint,
};
use proxy_core::{Capabilities, Dataplane, DataplaneError, ServiceTable, SyncConfig, SyncLoop};
use tokio::sync::mpsc;

const SIZES: [usize; 3] = [1_000, 10_000, 50_000];
const ENDPOINTS: usize = 10;

fn name(i: usize) -> ServiceName {
    ServiceName::new(format!("ns-{:03}", i / 100), format!("svc-{i:05}"))
}

/// Service `i`: one TCP port 80 -> 8080 on cluster IP 198.19.x.y.
fn service(i: usize) -> Service {
    let [_, _, hi, lo] = u32::try_from(i).expect("small").to_be_bytes();
    Service::new(name(i))
        .with_cluster_ip(IpAddr::from([198, 19, hi, lo]))
        .with_port(ServicePortSpec::tcp("http", 80).with_target_port(8080))
}

/// Service `i`'s slice: 10 endpoints in 198.18.0.0/16 (distinct within the service), on three
/// nodes; `variant` flips the first endpoint between ready and terminating.
fn slice(i: usize, variant: bool) -> EndpointSlice {
    let mut slice = EndpointSlice::new(name(i), "slice-1");
    for j in 0..ENDPOINTS {
        let n = u32::try_from((i * ENDPOINTS + j) % 65_536).expect("small");
        let [_, _, hi, lo] = n.to_be_bytes();
        let mut endpoint =
            SliceEndpoint::new(IpAddr::from([198, 18, hi, lo])).on_node(format!("node-{}", j % 3));
        if j == 0 && variant {
            endpoint = endpoint.terminating();
        }
        slice = slice.with_endpoint(endpoint);
    }
    slice
}

fn loaded_tracker(size: usize) -> (ChangeTracker, proxy_core::tracker::TrackerSource) {
    let (mut tracker, source) = ChangeTracker::new("bench", Capabilities::everything());
    tracker.set_node(Some("node-0".to_owned()));
    for i in 0..size {
        tracker.set_service(service(i));
        tracker.set_endpoint_slice(slice(i, false));
    }
    assert_eq!(tracker.table().len(), size);
    assert_eq!(tracker.table().endpoint_count(), size * ENDPOINTS);
    assert!(tracker.skipped().is_empty());
    (tracker, source)
}

/// A dataplane that tells the bench how many service ports each request changes.
#[derive(Debug)]
struct Signal(mpsc::UnboundedSender<usize>);

#[proxy_core::async_trait]
impl Dataplane for Signal {
    fn name(&self) -> &'static str {
        "signal"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::everything()
    }
    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        let _ = self.0.send(request.changes.service_ports_changed());
        Ok(SyncReport::for_request(&request))
    }
    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        Ok(CleanupReport::default())
    }
    fn dry_run(&self, _table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        Ok(DryRun::default())
    }
}

fn bench_tracker(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_endpoint_change");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    for size in SIZES {
        let middle = size / 2;
        let (mut tracker, _source) = loaded_tracker(size);
        let mut flip = false;
        group.bench_with_input(BenchmarkId::new("tracker", size), &size, |b, _| {
            b.iter(|| {
                flip = !flip;
                black_box(tracker.set_endpoint_slice(slice(middle, flip)))
            });
        });

        // The way to the dataplane, through a running loop.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (mut tracker, source) = loaded_tracker(size);
        let (signals, mut signalled) = mpsc::unbounded_channel();
        let config = SyncConfig {
            min_sync_period: Duration::ZERO,
            full_sync_period: Duration::from_secs(3_600),
            ..SyncConfig::default()
        };
        runtime.block_on(async {
            let sync_loop = SyncLoop::new(Signal(signals), config, &mut Registry::default());
            tokio::spawn(sync_loop.run(source, std::future::pending()));
            assert_eq!(signalled.recv().await, Some(size), "the first, full sync");
        });
        let mut flip = false;
        group.bench_with_input(
            BenchmarkId::new("tracker_to_sync_request", size),
            &size,
            |b, _| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            flip = !flip;
                            let change = slice(middle, flip);
                            let started = Instant::now();
                            tracker.set_endpoint_slice(change);
                            let changed = signalled.recv().await;
                            total += started.elapsed();
                            assert_eq!(changed, Some(1), "one service port per request");
                        }
                        total
                    })
                });
            },
        );

        // Before the tracker: edit the table, validate it whole, diff it.
        let table = tracker.table().clone();
        let port_name = name(middle).port("http");
        let port = Arc::clone(table.get(&port_name).expect("middle port"));
        let mut edited_port = (*port).clone();
        edited_port.endpoints[0].ready = !edited_port.endpoints[0].ready;
        let edited_port = Arc::new(edited_port);
        group.bench_with_input(BenchmarkId::new("edit_build_diff", size), &size, |b, _| {
            b.iter(|| {
                let edited = table
                    .edit()
                    .insert(Arc::clone(&edited_port))
                    .build()
                    .expect("valid");
                black_box(diff(&table, &edited))
            });
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_tracker(&mut criterion);
    criterion.final_summary();
}
