//! Matcher throughput at the per-connection limits (400 track phrases, 5,000
//! follow ids, 25 location boxes) and far beyond them (100,000 phrases,
//! 1,000,000 ids, 10,000 boxes: local matching of open firehoses), over
//! synthetic posts.
//!
//! `cargo bench -p traptor-host --bench matcher`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use traptor_host::matcher::{Matcher, Scratch};
use traptor_host::post::{Message, PostView, v1};
use traptor_host::rules::{Rule, RuleType};
use traptor_host::sources::synthetic::{Generator, Rng, USERS, user_id};

fn rule(id: usize, t: &str, value: String) -> Rule {
    let fields = vec![
        ("rule_id".to_string(), id.to_string()),
        ("value".to_string(), value),
        ("rule_type".to_string(), t.to_string()),
    ];
    Rule::from_fields(fields, RuleType::Track).expect("valid")
}

const TERMS: &[&str] = &[
    "love", "happy", "coffee", "music", "game", "rain", "city", "news", "election", "market", "crypto", "rust",
    "python", "storm", "concert", "pizza", "movie", "launch", "deploy", "climate", "solar", "health", "café", "東京",
    "weekend", "birthday", "summer", "football", "example", "github", "tbt", "ai", "ramen", "vote",
];

fn track_rules(n: usize) -> Vec<Rule> {
    let mut r = Rng::new(42);
    (0..n)
        .map(|i| {
            let words = 1 + r.below(3);
            let v: Vec<String> = (0..words)
                .map(|_| {
                    format!("{}{}", r.pick(TERMS), if r.chance(0.5) { String::new() } else { r.below(50).to_string() })
                })
                .collect();
            rule(i, "track", v.join(" "))
        })
        .collect()
}

/// The 400 rules of [`track_rules`], then random-letter phrases (one or
/// two terms of 5 to 10 letters) that (almost) never match: only the number
/// of phrases grows.
fn track_rules_scaled(n: usize) -> Vec<Rule> {
    let mut rules = track_rules(n.min(400));
    let mut r = Rng::new(7);
    let word = |r: &mut Rng| (0..5 + r.below(6)).map(|_| char::from(b'a' + r.below(26) as u8)).collect::<String>();
    for i in 400..n {
        let v = if r.chance(0.5) { word(&mut r) } else { format!("{} {}", word(&mut r), word(&mut r)) };
        rules.push(rule(i, "track", v));
    }
    rules
}

fn follow_rules(n: usize) -> Vec<Rule> {
    // Half the pool is followed (once), plus ids that never post.
    (0..n)
        .map(|i| {
            let id = if i % 2 == 0 && i < 2 * USERS { user_id(i / 2 * 2 % USERS) } else { 9_000_000_000 + i as u64 };
            rule(i, "follow", id.to_string())
        })
        .collect()
}

fn location_rules(n: usize) -> Vec<Rule> {
    (0..n)
        .map(|i| {
            let w = -170.0 + (i as f64) * 13.0;
            rule(i, "locations", format!("{w},{},{},{}", -60.0 + i as f64, w + 10.0, -50.0 + i as f64 * 4.0))
        })
        .collect()
}

/// `n` small boxes on a world grid (lng × lat cells, 1° × 0.5° boxes).
fn grid_boxes(n: usize) -> Vec<Rule> {
    let cols = (n as f64).sqrt().ceil() as usize;
    let (dx, dy) = (360.0 / cols as f64, 180.0 / cols as f64);
    (0..n)
        .map(|i| {
            let (w, s) = (-180.0 + (i % cols) as f64 * dx, -90.0 + (i / cols) as f64 * dy);
            rule(i, "locations", format!("{w},{s},{},{}", (w + 1.0).min(180.0), (s + 0.5).min(90.0)))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = Generator::new(1);
    let raws: Vec<Vec<u8>> = (0..2000).map(|_| g.next_post()).collect();
    let posts: Vec<PostView<'_>> = raws
        .iter()
        .map(|r| match v1::decode(r) {
            Ok(Message::Post(p)) => *p,
            _ => panic!("synthetic post does not decode"),
        })
        .collect();
    let mut group = c.benchmark_group("match_post");
    group.throughput(Throughput::Elements(posts.len() as u64));
    for (name, rules) in [
        ("track_400", track_rules(400)),
        ("track_10000", track_rules_scaled(10_000)),
        ("track_100000", track_rules_scaled(100_000)),
        ("follow_5000", follow_rules(5000)),
        ("follow_100000", follow_rules(100_000)),
        ("follow_1000000", follow_rules(1_000_000)),
        ("locations_25", location_rules(25)),
        ("locations_grid_25", grid_boxes(25)),
        ("locations_grid_1000", grid_boxes(1000)),
        ("locations_grid_10000", grid_boxes(10_000)),
        ("all_three", {
            let mut all = track_rules(400);
            all.extend(follow_rules(5000));
            all.extend(location_rules(25));
            all
        }),
    ] {
        let m = Matcher::new(rules);
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut hits = 0;
                for p in &posts {
                    m.match_post(black_box(p), &mut scratch, &mut out);
                    hits += out.len();
                }
                hits
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(raws.len() as u64));
    group.bench_function("v1_decode", |b| {
        b.iter(|| raws.iter().filter(|r| matches!(v1::decode(black_box(r)), Ok(Message::Post(_)))).count())
    });
    group.finish();

    c.bench_function("compile_400_5000_25", |b| {
        let mut all = track_rules(400);
        all.extend(follow_rules(5000));
        all.extend(location_rules(25));
        b.iter(|| Matcher::new(black_box(all.clone())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
