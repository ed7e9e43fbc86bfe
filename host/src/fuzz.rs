//! Fuzzing on stable Rust: property tests over everything that reads bytes
//! from outside — the decoders of every format, the framings (v1.1 length
//! and lines, server-sent events, HTTP lines), the JSON-lines reader, the
//! rules parser, the pipeline-file loader and the Mastodon HTML reader.
//!
//! Each target checks three things: no panic on any input; nothing held past
//! its cap (no unbounded allocation); and good records mixed with bad ones,
//! cut at any position, all still come out.
//!
//! The seed is fixed (`TRAPTOR_FUZZ_SEED`, default below) and the number of
//! cases small (`TRAPTOR_FUZZ_CASES`, default 96), so the suite is
//! repeatable and quick in CI; `scripts/fuzz.sh SECONDS` runs it with fresh
//! seeds and many cases until the time is up. A failing case found that way
//! is saved in `host/fuzz-regressions.txt` (proptest's format) and replayed
//! first by every later run.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

use crate::post::{self, Format};
use crate::sources::live::Frame;

const DEFAULT_SEED: u64 = 20_261_129;

fn config() -> Config {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("TRAPTOR_FUZZ_CASES").map_or(96, |c| c as u32),
        rng_seed: RngSeed::Fixed(env("TRAPTOR_FUZZ_SEED").unwrap_or(DEFAULT_SEED)),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("fuzz-regressions.txt"))),
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

/// Real records of every format, the fuzzers' starting points.
fn corpus() -> Vec<(Format, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let read = |rel: &str| std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut out = Vec::new();
    for f in ["track_tweet.json", "follow_tweet.json", "locations_tweet.json", "limit_message.json"] {
        let v: serde_json::Value = serde_json::from_str(&read(&format!("upstream-traptor/{f}"))).expect("json");
        out.push((Format::TwitterV1, v.to_string().into_bytes()));
    }
    for l in read("jetstream/expected_v1.jsonl").lines().take(8) {
        out.push((Format::Jetstream, l.as_bytes().to_vec()));
    }
    let page: serde_json::Value = serde_json::from_str(&read("x-v2/brexit.jsonl")).expect("json");
    for t in page["data"].as_array().into_iter().flatten().take(4) {
        out.push((Format::XV2, serde_json::json!({"data": t, "includes": page["includes"]}).to_string().into_bytes()));
    }
    let status: serde_json::Value = serde_json::from_str(&read("mastodon/status_example.json")).expect("json");
    out.push((Format::Mastodon, status.to_string().into_bytes()));
    out
}

/// A record changed at a few places: bytes replaced, cut out or put in.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, b) in edits {
        if bytes.is_empty() {
            bytes.push(b);
            continue;
        }
        let i = at % bytes.len();
        match op % 3 {
            0 => bytes[i] = b,
            1 => {
                bytes.remove(i);
            }
            _ => bytes.insert(i, b),
        }
    }
    bytes
}

/// Cut `bytes` into pieces at the given (sorted, deduplicated) positions.
fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for c in at {
        out.push(bytes[start..c].to_vec());
        start = c;
    }
    out.push(bytes[start..].to_vec());
    out
}

fn formats() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::TwitterV1), Just(Format::XV2), Just(Format::Jetstream), Just(Format::Mastodon)]
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, any format: an error or a message, never a panic.
    #[test]
    fn decoders_take_any_bytes(format in formats(), bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = post::decode(format, &bytes);
    }

    /// Real records with a few bytes changed, in their own and every other
    /// format: never a panic; the view's entity spans stay inside the text.
    #[test]
    fn decoders_take_damaged_records(
        pick in any::<prop::sample::Index>(),
        format in formats(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8),
    ) {
        let corpus = corpus();
        let (own, record) = &corpus[pick.index(corpus.len())];
        for f in [*own, format] {
            let bytes = mutate(record.clone(), &edits);
            if let Ok(post::Message::Post(p)) = post::decode(f, &bytes) {
                for span in &p.text.entity_spans {
                    prop_assert!(p.text.text.get(span.clone()).is_some(), "{f:?}: span {span:?} of {:?}", p.text.text);
                }
            }
        }
    }

    /// v1.1 framing: good messages, length-delimited or lines, cut anywhere
    /// and mixed with keep-alives, all come out in order; nothing past the
    /// cap is held.
    #[test]
    fn v1_framing_gives_back_every_message(
        delimited in any::<bool>(),
        n in 1usize..20,
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        use crate::sources::v1_filter::{Framed, Framer};
        let msgs: Vec<String> = (0..n).map(|i| format!("{{\"id_str\":\"{i}\",\"text\":\"{}\"}}", "w".repeat(i * 7))).collect();
        let mut wire = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if i % 3 == 0 {
                wire.extend_from_slice(b"\r\n"); // keep-alive
            }
            if delimited {
                wire.extend_from_slice(format!("{}\r\n", m.len() + 2).as_bytes());
            }
            wire.extend_from_slice(m.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        let mut f = Framer::new(delimited, 4096);
        let mut got = Vec::new();
        for piece in pieces(&wire, &cuts) {
            f.push(&piece);
            while let Some(m) = f.next() {
                got.push(m);
            }
            prop_assert!(f.held() <= 4096 + piece.len());
        }
        let want: Vec<Framed> = msgs.iter().map(|m| Framed::Message(m.clone().into_bytes())).collect();
        prop_assert_eq!(got, want);
    }

    /// v1.1 framing of garbage: never a panic, never more than the cap held.
    #[test]
    fn v1_framing_takes_any_bytes(
        delimited in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut f = crate::sources::v1_filter::Framer::new(delimited, 256);
        for piece in pieces(&bytes, &cuts) {
            f.push(&piece);
            while f.next().is_some() {}
            prop_assert!(f.held() <= 256 + piece.len(), "held {}", f.held());
        }
    }

    /// Server-sent events: good events with any line endings, cut anywhere,
    /// all come out; garbage never panics or piles up.
    #[test]
    fn sse_framing_gives_back_every_event(
        n in 1usize..12,
        ending in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        garbage in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        use crate::sources::mastodon::EventParser;
        let mut wire = String::new();
        for i in 0..n {
            wire.push_str(&format!(":thump{ending}event: update{ending}data: {{\"id\":\"{i}\"}}{ending}{ending}"));
        }
        let mut p = EventParser::new(1 << 16);
        let mut frames = Vec::new();
        for piece in pieces(wire.as_bytes(), &cuts) {
            p.feed(&piece, &mut frames);
        }
        // A lone `\r` at the very end may still wait for a `\n`: end the stream.
        p.feed(b"\n", &mut frames);
        let ids: Vec<Option<String>> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Record { dedup, .. } => Some(dedup.clone()),
                _ => None,
            })
            .collect();
        let want: Vec<Option<String>> = (0..n).map(|i| Some(i.to_string())).collect();
        prop_assert_eq!(ids, want);
        let mut g = EventParser::new(128);
        g.feed(&garbage, &mut Vec::new());
        prop_assert!(g.held() <= 128 + 1);
    }

    /// HTTP lines (X): the same lines as a plain split, whatever the cuts;
    /// a line over the cap is reported, not held.
    #[test]
    fn http_lines_match_a_plain_split(
        text in "[a-z\n]{0,300}",
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        use crate::sources::http::{Lines, Piece};
        let mut l = Lines::new(1 << 20);
        let mut got = Vec::new();
        for piece in pieces(text.as_bytes(), &cuts) {
            l.feed(&piece, |p| if let Piece::Line(b) = p { got.push(String::from_utf8_lossy(b).into_owned()) });
        }
        let mut want: Vec<String> = text.split('\n').map(str::to_owned).collect();
        want.pop(); // the part after the last newline is not a line yet
        prop_assert_eq!(got, want);
        let mut capped = Lines::new(16);
        for piece in pieces(text.as_bytes(), &cuts) {
            capped.feed(&piece, |_| {});
            prop_assert!(capped.pending() <= 16);
        }
    }

    /// The JSON-lines reader: any bytes, any buffer size: the lines of a
    /// plain split (those within the cap), and never more than the cap held.
    #[test]
    fn the_line_reader_matches_a_plain_split(
        bytes in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x'), any::<u8>()], 0..600),
        capacity in 1usize..64,
        max in 1usize..80,
    ) {
        use crate::sources::replay::{LineRead, next_line};
        let mut r = std::io::BufReader::with_capacity(capacity, &bytes[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            let read = next_line(&mut r, &mut buf, max).expect("in memory");
            prop_assert!(buf.len() <= max + 1);
            match read {
                LineRead::Eof => break,
                LineRead::Line | LineRead::Partial => got.push(Some(buf.clone())),
                LineRead::TooLong => got.push(None),
            }
            buf.clear();
        }
        let mut want: Vec<Option<Vec<u8>>> = bytes
            .split_inclusive(|&b| b == b'\n')
            .map(|l| (l.len() <= max + usize::from(l.ends_with(b"\n"))).then(|| l.to_vec()))
            .collect();
        if want.last().is_some_and(|l| l.as_ref().is_some_and(Vec::is_empty)) {
            want.pop();
        }
        prop_assert_eq!(got, want);
    }

    /// The rules parser: good rules mixed with garbage lines all load, each
    /// bad line is reported with its number, and any bytes never panic.
    #[test]
    fn the_rules_parser_keeps_every_good_rule(
        garbage in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 1..40), 0..10),
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        use crate::rules::{RuleType, file};
        let mut text = Vec::new();
        let mut good = 0;
        for (i, g) in garbage.iter().enumerate() {
            text.extend_from_slice(format!("{{\"rule_id\":\"r{i}\",\"value\":\"word{i}\"}}\n").as_bytes());
            good += 1;
            text.extend_from_slice(g);
            text.push(b'\n');
        }
        let snap = file::parse_bytes(&text, "r.jsonl", RuleType::Track, 1 << 16);
        let loaded = snap.rules.iter().filter(|r| r.rule_id().starts_with('r')).count();
        prop_assert!(loaded >= good, "{loaded} of {good}: {:?}", snap.problems);
        for p in &snap.problems {
            prop_assert!(p.location.starts_with("r.jsonl:"));
        }
        let _ = file::parse_bytes(&bytes, "any", RuleType::Follow, 64);
    }

    /// The pipeline-file loader: a valid file with a few bytes changed, or
    /// any text: an error with a message, or a config whose checks run —
    /// never a panic.
    #[test]
    fn the_pipeline_loader_takes_damaged_files(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..128), 0..6),
        text in "\\PC{0,200}",
    ) {
        let good = "[traptor]\ntype = \"track\"\nid = 3\n\n[source]\ntype = \"replay\"\npath = \"posts.jsonl\"\nrate = 10\n\n\
                    [rules]\ntype = \"file\"\npath = \"rules.jsonl\"\n\n[[stages]]\nname = \"s\"\nplugin = \"s.wasm\"\n\n\
                    [sink]\ntype = \"kafka\"\nbrokers = \"b:1\"\n\n[sink.spool]\ndir = \"spool\"\n\n[pipeline]\nworkers = 2\n";
        let damaged = mutate(good.as_bytes().to_vec(), &edits);
        for t in [String::from_utf8_lossy(&damaged).into_owned(), text] {
            match crate::config::PipelineConfig::parse(&t) {
                Ok(c) => {
                    let _ = c.check();
                }
                Err(e) => prop_assert!(!e.is_empty()),
            }
        }
    }

    /// Mastodon's HTML: any text becomes text without a panic, with anchor
    /// spans on character boundaries.
    #[test]
    fn html_becomes_text(html in "(<a href=\"x\">|</a>|<p>|</p>|<br>|&amp;|&#[0-9]{1,8};|&#x[0-9a-f]{1,7};|[a-zé😀 <>&;#])*") {
        let mut p = crate::post::mastodon::Plain::default();
        p.html(&html);
        for a in &p.anchors {
            prop_assert!(p.text.get(a.span.clone()).is_some(), "{:?} in {:?}", a.span, p.text);
        }
        let _ = crate::post::mastodon::decode_entities(&html);
    }
}
