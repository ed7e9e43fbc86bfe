//! The Kafka sink against a real broker process (Tansu, started by the test):
//! delivery, a 30 s hang of the broker while 50,000 posts flow, and
//! `traptor-host` killed (SIGKILL) with posts in its spool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use traptor_tests::{Host, TansuBroker, wait_for};

const LIMIT: Duration = Duration::from_secs(180);
const PARTITIONS: u32 = 4;

fn pipeline(dir: &Path, brokers: &str, source: &str) -> PathBuf {
    traptor_tests::kafka_pipeline(dir, brokers, source, 8_000_000, 1000)
}

/// Count messages per key by reading every partition from the start until
/// `expect` distinct keys have arrived and 3 s pass without more
/// (assignment, not a group: Tansu's groups join slowly).
fn read_all(brokers: &str, expect: usize) -> HashMap<String, usize> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "verify")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        tpl.add_partition_offset("traptor", p, rdkafka::Offset::Beginning).expect("offset");
    }
    c.assign(&tpl).expect("assign");
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + LIMIT;
    let mut quiet = Instant::now();
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet = Instant::now();
                let k = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                *seen.entry(k).or_default() += 1;
            }
            _ if seen.len() >= expect && quiet.elapsed() > Duration::from_secs(3) => break,
            _ => {}
        }
    }
    seen
}

#[test]
fn posts_reach_a_real_broker() {
    let broker = TansuBroker::start();
    broker.create_topic("traptor", PARTITIONS);
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(dir.path(), &broker.brokers(), "type = \"synthetic\"\ncount = 5000\nseed = 21");
    let out = traptor_tests::run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = read_all(&broker.brokers(), 5000);
    assert_eq!(seen.len(), 5000);
    assert!(seen.values().all(|n| *n == 1));
}

#[test]
fn a_30_second_broker_outage_under_50k_posts_loses_nothing_with_bounded_memory() {
    let broker = TansuBroker::start();
    broker.create_topic("traptor", PARTITIONS);
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(dir.path(), &broker.brokers(), "type = \"synthetic\"\ncount = 50000\nrate = 2500\nseed = 22");
    traptor_tests::edit_file(&p, &[("stats_interval_secs = 0", "stats_interval_secs = 2")]);
    let mut host = Host::spawn(&["--pipeline", p.to_str().expect("utf8")], &[]);
    std::thread::sleep(Duration::from_secs(3));
    broker.pause();
    let peak = host.peak_rss_through(Duration::from_secs(30), || broker.resume(), LIMIT);
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("spilling to the disk spool") && log.contains("spool replayed"), "{log}");
    let backlog = log.split("spool_backlog=").skip(1).filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok());
    assert!(backlog.max().unwrap_or(0) > 1000, "the throughput line shows the spool backlog: {log}");
    let seen = read_all(&broker.brokers(), 50_000);
    let doubled = seen.values().filter(|n| **n > 1).count();
    eprintln!("outage: peak RSS {} MiB, {} unique, {} doubled", peak / 1024, seen.len(), doubled);
    assert_eq!(seen.len(), 50_000, "none lost");
    assert_eq!(doubled, 0, "none doubled");
    assert!(peak < 512 * 1024, "memory bounded while the broker was away: {} MiB", peak / 1024);
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

/// An enrichment worker (kafka source → kafka sink with a spool) is killed
/// with SIGKILL while the sink's broker hangs and posts sit in its spool.
/// Restarted, it sends the spool first and re-reads what it had not
/// confirmed: every post arrives (at least once: a post consumed after the
/// last offset commit may arrive twice).
#[test]
fn a_killed_collector_sends_its_spool_after_a_restart_and_loses_nothing() {
    const POSTS: usize = 20_000;
    // The source topic lives on librdkafka's mock cluster (always up); the
    // sink writes to the real broker, which hangs.
    let source = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    // 16 partitions: the mock keeps only ~5 MiB per partition (~54 MB here).
    source.create_topic("raw", 16, 1).expect("topic");
    let ids = traptor_tests::produce_raw(&source.bootstrap_servers(), POSTS, 31);
    let broker = TansuBroker::start();
    broker.create_topic("traptor", PARTITIONS);
    let dir = tempfile::tempdir().expect("tmp");
    let src = format!(
        "type = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"raw\"]\ngroup_id = \"enrichers\"\n\n\
         [source.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"",
        source.bootstrap_servers()
    );
    let p = pipeline(dir.path(), &broker.brokers(), &src);
    traptor_tests::edit_file(
        &p,
        &[("max_inflight_bytes = 8000000", "max_inflight_bytes = 2000000\nspill_after_ms = 500")],
    );
    let args = ["--pipeline", p.to_str().expect("utf8")];

    broker.pause();
    let mut first = Host::spawn(&args, &[]);
    first.wait_log("spilling to the disk spool", LIMIT);
    let spool = dir.path().join("spool");
    wait_for("5 MB in the spool", LIMIT, || (dir_bytes(&spool) > 5_000_000).then_some(()));
    let _ = std::process::Command::new("kill").args(["-KILL", &first.pid().to_string()]).status();
    wait_for("the collector to die", LIMIT, || (!first.is_running()).then_some(()));
    let spooled = dir_bytes(&spool);
    broker.resume();

    let second = Host::spawn(&args, &[]);
    second.wait_log("earlier run; replaying", LIMIT);
    let seen = read_all(&broker.brokers(), POSTS);
    let (status, log) = second.stop();
    eprintln!("first run:\n{}\nsecond run:\n{log}", first.log());
    assert!(status.success(), "{log}");
    assert!(log.contains("spool replayed"), "{log}");
    let doubled = seen.values().filter(|n| **n > 1).count();
    eprintln!("kill -9 with {spooled} spooled bytes: {} unique, {doubled} sent twice", seen.len());
    let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{} posts lost, e.g. {:?}", missing.len(), missing.first());
    assert_eq!(seen.len(), POSTS, "nothing but the posts written");
}
