//! svcproxy's allocator: jemalloc with its background purging threads, instead of glibc's malloc.
//!
//! A proxy's memory comes and goes in waves: thousands of UDP flows or idle connections arrive,
//! then expire. glibc's malloc keeps what they freed in its per-thread arenas, and a later wave
//! served by other threads grows the resident set again (issue #10 measured 453 MB still resident
//! after 20,000 flows had expired); giving memory back takes `malloc_trim`, an unsafe FFI call.
//! jemalloc's background threads return freed pages to the system within its decay time (10 s),
//! with no call from us. Measured with `bench limits` (8,000 UDP flows, one run each, 2-vCPU VM):
//! 15 s after the flows expired, glibc still held +13.2 MiB over the baseline and a second wave
//! added 13.3 MiB more; jemalloc was back to +0.4 MiB and its second wave grew it by 0.4 MiB.
//! (mimalloc, tried too, kept +19.5 MiB.) The library stays allocator-agnostic: an embedder
//! chooses its own.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
