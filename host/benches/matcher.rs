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

/// The synthetic corpus' places (west, south, east, north).
const PLACE_BOXES: [[f64; 4]; 10] = [
    [-122.514926, 37.708075, -122.357031, 37.833238],
    [-122.065206, 37.330068, -121.982475, 37.426726],
    [-74.026675, 40.683935, -73.910408, 40.877483],
    [-0.510375, 51.28676, 0.334015, 51.691874],
    [2.224101, 48.815573, 2.469920, 48.902145],
    [139.563, 35.528, 139.918, 35.817],
    [37.319, 55.489, 37.967, 55.958],
    [-46.826, -24.008, -46.365, -23.357],
    [150.520, -34.118, 151.343, -33.578],
    [3.098, 6.393, 3.696, 6.703],
];

/// A star of `n` vertices around (cx, cy): radius rx × ry, wobbling ±20 %.
fn star(cx: f64, cy: f64, rx: f64, ry: f64, n: usize, seed: u64) -> String {
    let mut r = Rng::new(seed);
    let mut pts: Vec<String> = (0..n)
        .map(|i| {
            let a = std::f64::consts::TAU * i as f64 / n as f64;
            let k = 0.8 + 0.4 * (r.below(1000) as f64 / 1000.0);
            format!("{:.6} {:.6}", cx + rx * k * a.cos(), cy + ry * k * a.sin())
        })
        .collect();
    pts.push(pts[0].clone());
    format!("POLYGON(({}))", pts.join(", "))
}

/// `n` polygons of `vertices` vertices: one over each synthetic place (so
/// every post with a location is tested against a polygon, about half of
/// its place's box inside), the rest small, on a world grid.
fn polygon_rules(n: usize, vertices: usize) -> Vec<Rule> {
    let cols = (n as f64).sqrt().ceil() as usize;
    (0..n)
        .map(|i| {
            let v = match PLACE_BOXES.get(i) {
                Some([w, s, e, nn]) => {
                    star((w + e) / 2.0, (s + nn) / 2.0, (e - w) / 2.0, (nn - s) / 2.0, vertices, i as u64)
                }
                None => {
                    let (x, y) = (
                        -178.0 + (i % cols) as f64 * 356.0 / cols as f64,
                        -80.0 + (i / cols) as f64 * 160.0 / cols as f64,
                    );
                    star(x, y, 0.3, 0.2, vertices, i as u64)
                }
            };
            rule(i, "locations", v)
        })
        .collect()
}

/// Only the posts with a point or a place: what location rules cost when
/// every post has to be placed (the corpus: one in ten).
fn bench_geo_posts(c: &mut Criterion, posts: &[PostView<'_>]) {
    let geo: Vec<&PostView<'_>> = posts.iter().filter(|p| p.coordinates.is_some() || p.place_bbox.is_some()).collect();
    let mut group = c.benchmark_group("match_geo_post");
    group.throughput(Throughput::Elements(geo.len() as u64));
    for (name, rules) in [
        ("locations_25", location_rules(25)),
        ("locations_grid_25", grid_boxes(25)),
        (
            "places_25",
            (0..25)
                .map(|i| {
                    let [w, s, e, n] = PLACE_BOXES[i % 10];
                    rule(i, "locations", format!("{w},{s},{e},{n}"))
                })
                .collect(),
        ),
        ("polygons_10x1000", polygon_rules(10, 1000)),
        ("polygons_1000x1000", polygon_rules(1000, 1000)),
    ] {
        bench_matching(&mut group, name, rules, geo.iter().copied());
    }
    group.finish();
}

/// Time matching every post of `posts` against `rules`, as `name`.
fn bench_matching<'a, 'p: 'a>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rules: Vec<Rule>,
    posts: impl Iterator<Item = &'a PostView<'p>> + Clone,
) {
    let m = Matcher::new(rules);
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut hits = 0;
            for p in posts.clone() {
                m.match_post(black_box(p), &mut scratch, &mut out);
                hits += out.len();
            }
            hits
        })
    });
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
        ("polygons_1000x1000", polygon_rules(1000, 1000)),
        ("all_three", {
            let mut all = track_rules(400);
            all.extend(follow_rules(5000));
            all.extend(location_rules(25));
            all
        }),
    ] {
        bench_matching(&mut group, name, rules, posts.iter());
    }
    group.finish();

    bench_geo_posts(c, &posts);

    c.bench_function("compile_polygons_1000x1000", |b| {
        let rules = polygon_rules(1000, 1000);
        b.iter(|| Matcher::new(black_box(rules.clone())))
    });

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
