//! Archive benchmarks: `get`, durable `set` and `remove_domain` of 1,000 keys, with the backend
//! and the value size as parameters.
//!
//! Run `cargo bench --bench archive`; `cargo bench --bench archive -- --test` runs every benchmark
//! once, as a quick check that they work.

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use session_archive::{Archive, RedbArchive};

/// Opens a fresh archive of one backend in an empty directory.
type Open = fn(&Path) -> Box<dyn Archive>;

/// The backends under comparison, one line each.
const BACKENDS: &[(&str, Open)] = &[("redb", |dir| {
    Box::new(RedbArchive::open(dir.join("archive.redb")).expect("open redb"))
})];

/// The value sizes: a small session (200 B) and a large one (4 KiB).
const VALUE_SIZES: [usize; 2] = [200, 4096];

/// How many domains `get` and `set` spread over.
const DOMAINS: usize = 1000;

/// The keys removed by one `remove_domain`.
const DOMAIN_KEYS: usize = 1000;

fn value(size: usize) -> Vec<u8> {
    (0..=250u8).cycle().take(size).collect()
}

fn domain_names() -> Vec<String> {
    (0..DOMAINS).map(|i| format!("domain-{i:05}")).collect()
}

/// Runs `bench` once per backend and value size, each on a fresh archive.
fn each_case(
    c: &mut Criterion,
    group: &str,
    mut bench: impl FnMut(&mut criterion::Bencher<'_>, &dyn Archive, &[u8]),
) {
    let mut group = c.benchmark_group(group);
    for &(name, open) in BACKENDS {
        for size in VALUE_SIZES {
            let dir = tempfile::tempdir().expect("temporary directory");
            let archive = open(dir.path());
            let value = value(size);
            group.throughput(Throughput::Elements(1));
            group.bench_function(BenchmarkId::new(name, format!("{size}B")), |b| {
                bench(b, archive.as_ref(), &value);
            });
        }
    }
    group.finish();
}

fn get(c: &mut Criterion) {
    let domains = domain_names();
    each_case(c, "get", |b, archive, value| {
        let entries: Vec<(&str, &str, &[u8])> = domains
            .iter()
            .map(|d| (d.as_str(), "session.json", value))
            .collect();
        archive.set_many(&entries).expect("populate");
        let mut next = domains.iter().cycle();
        b.iter(|| {
            let domain = next.next().expect("cycle never ends");
            black_box(archive.get(domain, "session.json").expect("get"))
        });
    });
}

fn set(c: &mut Criterion) {
    let domains = domain_names();
    each_case(c, "set", |b, archive, value| {
        let mut next = domains.iter().cycle();
        b.iter(|| {
            let domain = next.next().expect("cycle never ends");
            archive.set(domain, "session.json", value).expect("set");
        });
    });
}

fn remove_domain(c: &mut Criterion) {
    let keys: Vec<String> = (0..DOMAIN_KEYS).map(|i| format!("key-{i:04}")).collect();
    each_case(c, "remove_domain", |b, archive, value| {
        let entries: Vec<(&str, &str, &[u8])> =
            keys.iter().map(|k| ("doomed", k.as_str(), value)).collect();
        // A neighbour that shares the prefix, so the range delete has something to leave alone.
        archive.set("doomed-not", "k", value).expect("neighbour");
        b.iter_batched(
            || archive.set_many(&entries).expect("populate the domain"),
            |()| assert!(archive.remove_domain("doomed").expect("remove_domain")),
            BatchSize::PerIteration,
        );
    });
}

criterion_group!(benches, get, set, remove_domain);
criterion_main!(benches);
