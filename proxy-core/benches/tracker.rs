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
    tracker
        .set_node(Some("node-0".to_owned()))
        .expect("a plain node name");
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
    report::write();
}

/// The run as a markdown table and an SVG chart, from criterion's estimates: printed, and
/// written to `$BENCH_RESULTS_DIR/tracker-<UTC time>.{md,svg}` when that is set (the README
/// shows `bench/results/`).
mod report {
    use std::fmt::Write as _;
    use std::path::PathBuf;

    use super::SIZES;

    const SERIES: [(&str, &str, &str); 3] = [
        ("tracker", "tracker call alone", "#2ca02c"),
        (
            "tracker_to_sync_request",
            "tracker call to the dataplane's SyncRequest (SyncLoop)",
            "#ff7f0e",
        ),
        (
            "edit_build_diff",
            "before: ServiceTable::edit + build + diff",
            "#1f77b4",
        ),
    ];

    /// criterion's directory: `target/criterion`, beside the profile directory of this binary.
    fn criterion_dir() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.parent()?.parent()?.join("criterion"))
    }

    /// The median of one benchmark, in nanoseconds.
    fn median_ns(series: &str, size: usize) -> Option<f64> {
        let path = criterion_dir()?
            .join("one_endpoint_change")
            .join(series)
            .join(size.to_string())
            .join("new/estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["median"]["point_estimate"].as_f64()
    }

    fn shown(ns: f64) -> String {
        if ns >= 1e6 {
            format!("{:.2} ms", ns / 1e6)
        } else {
            format!("{:.1} µs", ns / 1e3)
        }
    }

    fn machine() -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        format!("{cores} CPUs, {cpu}")
    }

    fn utc_now() -> String {
        std::process::Command::new("date")
            .args(["-u", "+%Y%m%dT%H%M%SZ"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned())
    }

    pub(super) fn write() {
        let medians: Vec<Vec<Option<f64>>> = SERIES
            .iter()
            .map(|(series, _, _)| SIZES.iter().map(|size| median_ns(series, *size)).collect())
            .collect();
        if medians.iter().flatten().any(Option::is_none) {
            // A filtered run (`cargo bench -- tracker/1000`) measured only part: no report.
            return;
        }
        let stamp = utc_now();
        let mut md = String::new();
        let _ = writeln!(md, "# One endpoint change, by table size ({stamp})\n");
        let _ = writeln!(
            md,
            "`cargo bench -p proxy-core --bench tracker`: criterion's median. Service ports x 10 \
             endpoints; one endpoint of the middle service port flips between ready and \
             terminating. Machine: {}.\n",
            machine()
        );
        let _ = write!(md, "| service ports |");
        for (_, label, _) in SERIES {
            let _ = write!(md, " {label} |");
        }
        let _ = writeln!(md, " before / SyncLoop |");
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
        for (column, size) in SIZES.iter().enumerate() {
            let value = |row: usize| medians[row][column].unwrap_or(f64::NAN);
            let _ = writeln!(
                md,
                "| {size} | {} | {} | {} | {:.0}x |",
                shown(value(0)),
                shown(value(1)),
                shown(value(2)),
                value(2) / value(1)
            );
        }
        let svg = chart(&medians, &stamp);
        print!("\n{md}");
        let Some(dir) = std::env::var_os("BENCH_RESULTS_DIR") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let stem = format!("tracker-{stamp}");
        let md = md.replace("\n# One", "# One")
            + &format!("\n![one endpoint change by table size]({stem}.svg)\n");
        for (ext, text) in [("md", md), ("svg", svg)] {
            let path = dir.join(format!("{stem}.{ext}"));
            match std::fs::write(&path, text) {
                Ok(()) => println!("wrote {}", path.display()),
                Err(err) => eprintln!("cannot write {}: {err}", path.display()),
            }
        }
    }

    /// Grouped bars per table size on a log scale from 1 µs to 100 ms.
    fn chart(medians: &[Vec<Option<f64>>], stamp: &str) -> String {
        let (width, height) = (640.0, 360.0);
        let (left, right, top, bottom) = (70.0, 20.0, 60.0, 70.0);
        let plot_h = height - top - bottom;
        let (lo, hi) = (3.0_f64, 8.0_f64); // log10 ns: 1 µs .. 100 ms
        let y = |ns: f64| {
            top + plot_h * (1.0 - ((ns.max(1.0).log10() - lo) / (hi - lo)).clamp(0.0, 1.0))
        };
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="10" y="20" font-size="14" font-weight="bold">One endpoint change: cost by table size (log scale)</text>"#
        );
        let _ = writeln!(
            svg,
            r##"<text x="10" y="38" fill="#555">{stamp} · {}</text>"##,
            machine()
        );
        for (exp, label) in [
            (3, "1 µs"),
            (4, "10 µs"),
            (5, "100 µs"),
            (6, "1 ms"),
            (7, "10 ms"),
            (8, "100 ms"),
        ] {
            let yy = y(10f64.powi(exp));
            let _ = writeln!(
                svg,
                r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
                width - right,
                left - 6.0,
                yy + 4.0
            );
        }
        let group_w = (width - left - right) / SIZES.len() as f64;
        let bar_w = group_w / (SERIES.len() as f64 + 1.5);
        for (column, size) in SIZES.iter().enumerate() {
            let x0 = left + group_w * column as f64 + bar_w * 0.75;
            for (row, (_, _, colour)) in SERIES.iter().enumerate() {
                let ns = medians[row][column].unwrap_or(1.0);
                let (x, yy) = (x0 + bar_w * row as f64, y(ns));
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}</title></rect>"#,
                    bar_w * 0.9,
                    top + plot_h - yy,
                    shown(ns)
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{size} ports x 10</text>"#,
                left + group_w * (column as f64 + 0.5),
                top + plot_h + 16.0
            );
        }
        for (row, (_, label, colour)) in SERIES.iter().enumerate() {
            let yy = height - bottom + 34.0 + 12.0 * row as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{left}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{}" y="{:.1}">{label}</text>"#,
                yy - 9.0,
                left + 14.0,
                yy
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}
