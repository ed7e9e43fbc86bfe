//! The Kafka sink alone: ready-made batches of enveloped records (as the
//! workers hand them over) into a running broker, timed from producer start
//! to the last delivery report. Run by `scripts/bench-kafka.sh`, which starts
//! the broker and compares with a reference producer on the same records:
//!
//!   TRAPTOR_BENCH_BROKERS=127.0.0.1:9092 TRAPTOR_BENCH_RECORDS=records.jsonl \
//!     cargo bench -p traptor-host --bench kafka_sink [-- TOPIC]

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use traptor_host::batch::OutBatch;
use traptor_host::sinks::kafka::{self, KafkaOptions, KafkaStats};
use traptor_host::telemetry::Metrics;

const BATCH: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (Ok(brokers), Ok(records)) = (std::env::var("TRAPTOR_BENCH_BROKERS"), std::env::var("TRAPTOR_BENCH_RECORDS"))
    else {
        eprintln!("kafka_sink: set TRAPTOR_BENCH_BROKERS and TRAPTOR_BENCH_RECORDS (scripts/bench-kafka.sh does)");
        return Ok(());
    };
    let topic = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_else(|| "traptor".into());
    let text = std::fs::read(&records)?;
    let mut batches = Vec::new();
    let mut batch = OutBatch::with_seq(0);
    let (mut posts, mut bytes) = (0u64, 0u64);
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line)?;
        let id = v["id_str"].as_str().unwrap_or_default();
        let rules = v["traptor"]["collection_rules"].as_array().cloned().unwrap_or_default();
        batch.push_with_rules(line, id, rules.iter().filter_map(|r| r["rule_id"].as_str()));
        posts += 1;
        bytes += line.len() as u64;
        if batch.len() == BATCH {
            let seq = batch.seq + 1;
            batches.push(std::mem::replace(&mut batch, OutBatch::with_seq(seq)));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    let inflight =
        std::env::var("TRAPTOR_BENCH_INFLIGHT_MIB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(64) << 20;
    let opts = KafkaOptions {
        brokers,
        topic,
        compression: "lz4".into(),
        // The sink's default bound unless TRAPTOR_BENCH_INFLIGHT_MIB says otherwise.
        max_inflight_bytes: inflight,
        delivery_timeout: Duration::from_secs(300),
        drain_timeout: Duration::from_secs(60),
        spill_after: Duration::from_secs(2),
        properties: Vec::new(),
        spool: None,
        traptor_type: "track".into(),
        traptor_id: 0,
        dead_letter_topic: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let stats = Arc::new(KafkaStats::default());
    let (tx, rx) = traptor_host::sinks::channel(64);
    let started = Instant::now();
    // The clock stops at the last delivery report (like the reference's
    // flush), not after the producer's teardown, which is timed apart.
    let watch = {
        let stats = stats.clone();
        rt.spawn(async move {
            while stats.delivered.load(std::sync::atomic::Ordering::Relaxed) < posts {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            started.elapsed()
        })
    };
    let summary = rt.block_on(async {
        let feed = tokio::spawn(async move {
            for b in batches {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
        });
        let d = kafka::Delivery {
            metrics: Arc::new(Metrics::default()),
            confirmed: Arc::new(AtomicU64::new(0)),
            stats: stats.clone(),
            dead: traptor_host::sinks::DeadLetters::none(),
            shutdown: Default::default(),
        };
        let r = kafka::deliver(opts, rx, d).await;
        let _ = feed.await;
        r
    })?;
    let total = started.elapsed().as_secs_f64();
    let delivered = stats.delivered.load(std::sync::atomic::Ordering::Relaxed);
    if delivered != posts {
        return Err(format!("only {delivered} of {posts} records delivered").into());
    }
    let secs = rt.block_on(watch)?.as_secs_f64();
    println!(
        "kafka sink alone: {:.0} posts/s, {:.1} MiB/s ({posts} records, {:.2} s to the last report, {:.2} s with \
         the producer's teardown; taken {}, in flight ≤ {} MiB)",
        posts as f64 / secs,
        bytes as f64 / secs / 1048576.0,
        secs,
        total,
        summary.records,
        inflight >> 20
    );
    Ok(())
}
