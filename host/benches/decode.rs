//! How fast each source's messages are decoded into the post view (what bounds
//! a source's sustained parse rate on one core).
//!
//! `cargo bench -p traptor-host --bench decode`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use traptor_host::post::{Format, Message, decode};
use traptor_host::sources::synthetic::Generator;

fn fixture(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel);
    std::fs::read_to_string(p).expect("fixture (tests/fixtures)")
}

/// The recorded v2 page as 100 stream messages.
fn v2_lines() -> Vec<Vec<u8>> {
    let page: serde_json::Value = serde_json::from_str(&fixture("x-v2/brexit.jsonl")).expect("json");
    let inc = &page["includes"];
    let pick = |list: &serde_json::Value, ids: &[serde_json::Value]| -> Vec<serde_json::Value> {
        list.as_array().map(|a| a.iter().filter(|x| ids.contains(&x["id"])).cloned().collect()).unwrap_or_default()
    };
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| {
            // Only the includes this post refers to, as the stream sends them.
            let refs: Vec<serde_json::Value> =
                t["referenced_tweets"].as_array().map(|a| a.iter().map(|r| r["id"].clone()).collect()).unwrap_or_default();
            let tweets = pick(&inc["tweets"], &refs);
            let mut authors = vec![t["author_id"].clone()];
            authors.extend(tweets.iter().map(|x| x["author_id"].clone()));
            let users = pick(&inc["users"], &authors);
            serde_json::json!({"data": t, "includes": {"users": users, "tweets": tweets}, "matching_rules": [{"id": "1", "tag": "r"}]})
                .to_string()
                .into_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = Generator::new(1);
    let v1: Vec<Vec<u8>> = (0..1000).map(|_| g.next_post()).collect();
    let v2 = v2_lines();
    let jet: Vec<Vec<u8>> = fixture("jetstream/expected_v1.jsonl").lines().map(|l| l.as_bytes().to_vec()).collect();
    let mut group = c.benchmark_group("decode");
    for (name, format, corpus) in [
        ("twitter_v1_synthetic", Format::TwitterV1, &v1),
        ("x_v2_recorded", Format::XV2, &v2),
        ("jetstream_recorded", Format::Jetstream, &jet),
    ] {
        group.throughput(Throughput::Elements(corpus.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| corpus.iter().filter(|m| matches!(decode(format, black_box(m)), Ok(Message::Post(_)))).count())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
