//! Benchmarks of table building (with validation), diff, `share_unchanged` and `apply_changes` on
//! a 10,000-service-port × 10-endpoint table, plus the table's memory (RSS growth, printed first).
//!
//! Targets (issue 2): diff under 20 ms, validation under 20 ms, the table under 64 MiB.
//! Figures are recorded in `proxy-core/BENCHMARKS.md`. Runs are kept short (10 samples); pass
//! criterion's own flags to change that, e.g. `cargo bench -p proxy-core -- --sample-size 50`.

use std::fs;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use proxy_core::diff::{apply_changes, diff, share_unchanged};
use proxy_core::table::{ServicePort, ServiceTable, TableBuilder};
use proxy_core::testing::generate::{deep_copy, large_table, with_endpoint_changed};
use proxy_core::validate::validate;

const SERVICE_PORTS: usize = 10_000;
const ENDPOINTS_PER_PORT: usize = 10;
/// The service port whose endpoint the edited tables change: in the middle, so the diff walks
/// half the table on either side of it.
const CHANGED_PORT: usize = SERVICE_PORTS / 2;

/// A builder holding copies of every port of `table` (no `Arc` shared), as a file loader has.
fn fresh_builder(table: &ServiceTable) -> TableBuilder {
    let mut builder = ServiceTable::builder();
    builder.set_node(table.node().map(str::to_owned));
    for port in table.iter() {
        builder.upsert(ServicePort::clone(port));
    }
    builder
}

fn bench_table(c: &mut Criterion) {
    let table = large_table(SERVICE_PORTS, ENDPOINTS_PER_PORT);
    let edited = with_endpoint_changed(&table, CHANGED_PORT);
    // The same edit, parsed afresh: every port must be compared deeply.
    let fresh = deep_copy(&edited);
    let changes = diff(&table, &edited);
    assert_eq!(
        changes.endpoints_changed(),
        1,
        "the edit changes one endpoint"
    );

    let mut group = c.benchmark_group("10k_ports_x_10_endpoints");
    group.bench_function("build_and_validate", |b| {
        b.iter_batched(
            || fresh_builder(&table),
            |builder| builder.build().expect("generated tables are valid"),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("validate", |b| {
        b.iter(|| validate(black_box(table.node()), black_box(table.ports()), &[]).expect("valid"));
    });
    group.bench_function("diff_edited_shared_arcs", |b| {
        b.iter(|| diff(black_box(&table), black_box(&edited)));
    });
    group.bench_function("diff_independent_deep_compare", |b| {
        b.iter(|| diff(black_box(&table), black_box(&fresh)));
    });
    group.bench_function("share_unchanged", |b| {
        b.iter_with_large_drop(|| share_unchanged(black_box(&table), black_box(&fresh)));
    });
    group.bench_function("apply_changes", |b| {
        b.iter_with_large_drop(|| apply_changes(black_box(&table), black_box(&changes)));
    });
    group.bench_function("edit_one_endpoint", |b| {
        b.iter_with_large_drop(|| with_endpoint_changed(black_box(&table), CHANGED_PORT));
    });
    group.finish();
}

/// This process's resident set size in bytes (`VmRSS` in `/proc/self/status`), if readable.
fn rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    // Exact for any realistic size: f64 holds integers up to 2^53.
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints how much the process grows to hold a 10,000 × 10 table, then a second, independent
/// one, then an edited snapshot of the first (which shares every port but one). Run first, before
/// criterion allocates anything.
fn report_memory() {
    let Some(start) = rss_bytes() else {
        println!("memory: /proc/self/status unreadable, skipped");
        return;
    };
    let table = large_table(SERVICE_PORTS, ENDPOINTS_PER_PORT);
    let one = rss_bytes().unwrap_or(start);
    let copy = deep_copy(&table);
    let two = rss_bytes().unwrap_or(one);
    let edited = with_endpoint_changed(&table, CHANGED_PORT);
    let three = rss_bytes().unwrap_or(two);
    println!(
        "memory: {} service ports x {} endpoints ({} endpoints): table RSS +{:.1} MiB \
         (target < 64 MiB); an independent copy +{:.1} MiB; an edited snapshot sharing the rest \
         +{:.1} MiB",
        table.len(),
        ENDPOINTS_PER_PORT,
        table.endpoint_count(),
        mib(one.saturating_sub(start)),
        mib(two.saturating_sub(one)),
        mib(three.saturating_sub(two)),
    );
    drop((table, copy, edited));
}

fn main() {
    report_memory();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_table(&mut criterion);
    criterion.final_summary();
}
