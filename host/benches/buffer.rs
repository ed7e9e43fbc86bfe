//! How fast the buffer between sources and workers moves records to disk and
//! back: what bounds a live source's rate while the workers are behind.
//!
//! `cargo bench -p traptor-host --bench buffer`
//!
//! Records are synthetic v1.1 posts (≈ 2.5 KB), in batches of 256; the queue
//! lives in a temporary directory (the page cache: `fsync = "never"`, the default).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use traptor_host::batch::RawBatch;
use traptor_host::pipeline::buffer::{BufferConfig, DiskQueue};
use traptor_host::sources::synthetic::Generator;

const BATCH: usize = 256;

fn batch(g: &mut Generator) -> RawBatch {
    let mut b = RawBatch::default();
    for i in 0..BATCH {
        b.push(&g.next_post(), i as u64);
    }
    b
}

fn bench(c: &mut Criterion) {
    let mut g = Generator::new(7);
    let batches: Vec<RawBatch> = (0..16).map(|_| batch(&mut g)).collect();
    let bytes: u64 = batches.iter().map(|b| b.bytes() as u64).sum::<u64>() / batches.len() as u64;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = BufferConfig { max_bytes: 1 << 40, ..BufferConfig::default() };
    let mut group = c.benchmark_group("buffer");
    group.throughput(Throughput::Elements(BATCH as u64));
    eprintln!("a batch: {BATCH} records, {bytes} bytes");

    // To disk: append batches (the queue grows; emptied between samples).
    let mut q = DiskQueue::open(&dir.path().join("to"), &cfg).expect("open");
    let mut i = 0;
    group.bench_function("to_disk", |bench| {
        bench.iter(|| {
            i += 1;
            black_box(q.push(&batches[i % batches.len()]).expect("push"))
        })
    });
    drop(q);

    // From disk: read a queued batch back and remove it (as the sink confirms).
    let mut q = DiskQueue::open(&dir.path().join("from"), &cfg).expect("open");
    group.bench_function("from_disk", |bench| {
        bench.iter(|| {
            if q.queued().0 == 0 {
                // Refill (a sixteenth of the reads: their cost is in this figure too,
                // measured alone above).
                for b in &batches {
                    q.push(b).expect("push");
                }
            }
            let d = q.pop(BATCH).expect("pop").expect("queued");
            q.ack(d.end, d.records, d.bytes).expect("ack");
            black_box(d.records)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
