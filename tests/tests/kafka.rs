//! The Kafka sink against librdkafka's mock cluster (real Kafka protocol on
//! local TCP ports, in this test process; the collector is a separate
//! process): delivery with keys and headers, a broker outage absorbed by the
//! spool, the spool surviving a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use traptor_tests::{Host, run_host, wait_for};

const LIMIT: Duration = Duration::from_secs(120);

fn pipeline(dir: &Path, brokers: &str, source: &str) -> PathBuf {
    std::fs::write(dir.join("rules.jsonl"), "{\"rule_id\":\"c\",\"value\":\"coffee\"}\n").expect("rules");
    let p = dir.join("pipeline.toml");
    std::fs::write(
        &p,
        format!(
            r#"[traptor]
type = "track"
id = 4
stats_interval_secs = 0

[source]
{source}

[rules]
type = "file"
path = "rules.jsonl"

[sink]
type = "kafka"
brokers = "{brokers}"
topic = "traptor"
delivery_timeout_ms = 1500
max_inflight_bytes = 4000000

[sink.properties]
"reconnect.backoff.max.ms" = "500"

[sink.spool]
dir = "spool"
"#
        ),
    )
    .expect("pipeline");
    p
}

/// Every message of the topic: key → (count, rule header, value).
fn consume(brokers: &str, expect: usize) -> BTreeMap<String, (usize, String, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("verify-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&["traptor"]).expect("subscribe");
    let mut seen: BTreeMap<String, (usize, String, serde_json::Value)> = BTreeMap::new();
    let mut total = 0;
    let deadline = Instant::now() + LIMIT;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                total += 1;
                quiet_since = Instant::now();
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                let mut rules = String::new();
                let mut has_type = false;
                if let Some(h) = m.headers() {
                    for i in 0..h.count() {
                        let hd = h.get(i);
                        let v = hd.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
                        match hd.key {
                            "traptor-rules" => rules = v,
                            "traptor-type" => has_type = v == "track",
                            _ => {}
                        }
                    }
                }
                assert!(has_type, "traptor-type header");
                let value: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("json value");
                seen.entry(key).or_insert((0, rules, value)).0 += 1;
            }
            _ => {
                if total >= expect && quiet_since.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
        }
    }
    seen
}

fn mock() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("traptor", 16, 1).expect("topic");
    cluster
}

#[test]
fn posts_are_delivered_with_keys_and_headers() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(dir.path(), &brokers, "type = \"synthetic\"\ncount = 3000\nseed = 2");
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = consume(&brokers, 3000);
    assert_eq!(seen.len(), 3000, "every post, keyed by its id");
    assert!(seen.values().all(|(n, _, _)| *n == 1), "exactly once");
    for (key, (_, rules, value)) in &seen {
        assert_eq!(value["id_str"].as_str(), Some(key.as_str()), "key = post id");
        let ids: Vec<&str> = value["traptor"]["collection_rules"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["rule_id"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(rules.as_str(), ids.join(","), "traptor-rules header = matched rules");
    }
    assert!(seen.values().any(|(_, r, _)| r == "c"));
}

#[test]
fn a_broker_outage_is_absorbed_by_the_spool_and_nothing_is_lost_or_doubled() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(dir.path(), &brokers, "type = \"synthetic\"\ncount = 12000\nrate = 2000\nseed = 3");
    let host = Host::spawn(&["--pipeline", p.to_str().expect("utf8")], &[]);
    std::thread::sleep(Duration::from_millis(1200));
    cluster.broker_down(1).expect("down");
    wait_for("spooling", LIMIT, || host.log().contains("spooling to disk").then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    cluster.broker_up(1).expect("up");
    let (status, log) = {
        let mut host = host;
        wait_for("the run to end", LIMIT, || (!host.is_running()).then_some(()));
        host.stop()
    };
    assert!(status.success(), "{log}");
    assert!(log.contains("spool replayed"), "{log}");
    let seen = consume(&brokers, 12000);
    let doubled = seen.values().filter(|(n, _, _)| *n > 1).count();
    assert_eq!(seen.len(), 12000, "none lost");
    assert_eq!(doubled, 0, "none doubled");
}

#[test]
fn the_spool_survives_a_restart() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    cluster.broker_down(1).expect("down");
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(dir.path(), &brokers, "type = \"synthetic\"\ncount = 500\nseed = 4");
    // The broker is down for the whole first run: everything ends in the spool.
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("records in the spool"), "{stderr}");
    cluster.broker_up(1).expect("up");
    // Second run: the spool is replayed first, then a few new posts.
    let p = pipeline(dir.path(), &brokers, "type = \"synthetic\"\ncount = 10\nseed = 5");
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("earlier run; replaying"), "{stderr}");
    let seen = consume(&brokers, 510);
    assert_eq!(seen.len(), 510);
    assert!(seen.values().all(|(n, _, _)| *n == 1));
}
