//! The output envelope of DESIGN §5, compatible with the original traptor 4.x.
//!
//! A post leaves as its original bytes with a top-level `traptor` object spliced
//! in before the closing brace: the post is never parsed into a tree and
//! re-serialised, so numbers, key order and escapes stay exactly as the source
//! sent them. Two exceptions, both rare: a document spread over several lines
//! is minified (white space outside strings removed) so it stays one JSON line,
//! and a post that already carries a top-level `traptor` key (re-processing a
//! collector's output) has that key replaced through a parsed tree.
//!
//! Each rule's `collection_rules` entry is mostly its stored fields' JSON,
//! copied per match ([`Rule::write_entry`]).

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Timelike, Utc};

use crate::post::PostView;
use crate::rules::{Collector, Rule};

/// Optional members of the `traptor` object.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra<'a> {
    /// The serialised `{"stage": {...}, ...}` object of what stages added.
    pub enrichments: Option<&'a str>,
    /// `(stage, error)` for a dead letter.
    pub dead_letter: Option<(&'a str, &'a str)>,
    /// The name of the source the post came from (`[[sources]]`).
    pub source: Option<&'a str>,
    /// `traptor.provenance`, when on (`[traptor] provenance`).
    pub provenance: Option<Provenance<'a>>,
}

/// `traptor.provenance` of one post: the parts every post of a batch shares,
/// serialised once per batch, around the post's own cursor.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// `{"collector":…,"rules":…,"stages":…,"source":{"name":…,"format":…`
    pub head: &'a str,
    /// The source's resume position at this post, when it has one.
    pub cursor: Option<Cursor<'a>>,
    /// `},"key":…}`
    pub tail: &'a str,
}

/// A source's resume position, as written in `provenance.source.cursor`.
#[derive(Debug, Clone, Copy)]
pub enum Cursor<'a> {
    /// Jetstream's `time_us`.
    Number(u64),
    /// A post id (Mastodon's `since_id`).
    Text(&'a str),
}

/// Why a post could not be wrapped. The record is reported and skipped.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("post is not a JSON object (does not end with `}}`)")]
    NotAnObject,
    #[error("post carries a `traptor` key and could not be rewritten: {0}")]
    Rewrite(#[source] serde_json::Error),
}

/// v1.1 (`Mon Feb 22 01:34:53 +0000 2016`) or RFC 3339 timestamps, as RFC 3339
/// in UTC with a `+00:00` offset (what the original's `isoformat()` wrote).
pub fn created_at_iso(created_at: &str) -> Option<String> {
    with_created_at_iso(created_at, |iso| iso.map(str::to_owned))
}

/// Call `f` with [`created_at_iso`]'s answer, without allocating when the
/// timestamp is the thread's previous one: posts arrive in time order, so
/// consecutive posts mostly share their second.
fn with_created_at_iso<R>(created_at: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
    thread_local! {
        static LAST: std::cell::RefCell<(String, Option<String>)> =
            const { std::cell::RefCell::new((String::new(), None)) };
    }
    LAST.with_borrow_mut(|(input, output)| {
        if input.as_str() != created_at {
            input.clear();
            input.push_str(created_at);
            *output = parse_created_at(created_at);
        }
        f(output.as_deref())
    })
}

fn parse_created_at(created_at: &str) -> Option<String> {
    let dt = match v1_time(created_at) {
        Some(dt) => dt,
        None => {
            DateTime::parse_from_str(created_at, V1_TIME).or_else(|_| DateTime::parse_from_rfc3339(created_at)).ok()?
        }
    };
    let dt = dt.with_timezone(&Utc);
    if !(0..=9999).contains(&dt.year()) {
        return Some(dt.format("%Y-%m-%dT%H:%M:%S%:z").to_string());
    }
    let mut iso = String::with_capacity(25);
    // As `%Y-%m-%dT%H:%M:%S%:z` would write it, without a format parser.
    let _ = write!(
        iso,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    Some(iso)
}

/// Twitter v1.1's timestamp layout.
const V1_TIME: &str = "%a %b %d %H:%M:%S %z %Y";

/// A v1.1 timestamp in its exact layout (`Mon Feb 22 01:34:53 +0000 2016`)
/// read by position, without chrono's format parser (which showed in
/// profiles: a live stream's posts mostly have distinct seconds when the
/// memo above cannot help). Answers only when sure, i.e. when
/// `parse_from_str(s, V1_TIME)` gives the same time: the layout is exact,
/// every field in range, the weekday the date's. Anything else (another
/// layout, a leap second, a wrong weekday) is left to chrono.
fn v1_time(s: &str) -> Option<DateTime<FixedOffset>> {
    const DAYS: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let b = s.as_bytes();
    if b.len() != 30 || [3, 7, 10, 19, 25].iter().any(|&i| b[i] != b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |at: usize, len: usize| -> Option<u32> {
        b[at..at + len].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let weekday = DAYS.iter().position(|d| &b[0..3] == *d)?;
    let month = MONTHS.iter().position(|m| &b[4..7] == *m)? as u32 + 1;
    let (day, hour, minute, second) = (num(8, 2)?, num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let sign = match b[20] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (off_h, off_m, year) = (num(21, 2)?, num(23, 2)?, num(26, 4)?);
    if second > 59 || off_m > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    if date.weekday().num_days_from_monday() as usize != weekday {
        return None;
    }
    let offset = FixedOffset::east_opt(sign * (off_h * 3600 + off_m * 60) as i32)?;
    offset.from_local_datetime(&date.and_hms_opt(hour, minute, second)?).single()
}

/// Append the envelope of one post to `out` (on error, `out` is left as it
/// was): the worker writes straight into its output batch.
///
/// `matched` are indices into `rules`; `extra` holds further members of
/// the `traptor` object, already serialised (see [`Extra`]).
pub fn write_post(
    raw: &[u8],
    post: &PostView<'_>,
    id: Collector,
    matched: &[u32],
    rules: &[Rule],
    extra: Extra<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    let provenance = extra.provenance.map_or(0, |p| p.head.len() + p.tail.len() + 48);
    let mut t = String::with_capacity(128 + 256 * matched.len() + provenance);
    let _ = write!(t, "{{\"id_str\":{},\"type\":\"{}\"", id.id, id.rule_type);
    if let Some(created_at) = post.created_at.as_deref() {
        with_created_at_iso(created_at, |iso| {
            if let Some(iso) = iso {
                t.push_str(",\"created_at_iso\":\"");
                t.push_str(iso);
                t.push('"');
            }
        });
    }
    if post.edited_at.is_some() {
        t.push_str(",\"edit\":true");
    }
    if let Some(source) = extra.source {
        let _ = write!(t, ",\"source\":{}", serde_json::Value::from(source));
    }
    if matched.is_empty() {
        let _ = write!(
            t,
            ",\"rule_type\":\"{}\",\"id\":{},\"rule_tag\":\"Not Found\",\"rule_value\":\"Not Found\"",
            id.rule_type, id.id
        );
    } else {
        t.push_str(",\"collection_rules\":[");
        for (i, &r) in matched.iter().enumerate() {
            if i > 0 {
                t.push(',');
            }
            rules[r as usize].write_entry(&mut t);
        }
        t.push(']');
    }
    if let Some(e) = extra.enrichments {
        t.push_str(",\"enrichments\":");
        t.push_str(e);
    }
    if let Some((stage, error)) = extra.dead_letter {
        let _ = write!(
            t,
            ",\"dead_letter\":{{\"stage\":{},\"error\":{}}}",
            serde_json::Value::from(stage),
            serde_json::Value::from(error)
        );
    }
    if let Some(p) = extra.provenance {
        t.push_str(",\"provenance\":");
        t.push_str(p.head);
        match p.cursor {
            Some(Cursor::Number(n)) => {
                let _ = write!(t, ",\"cursor\":{n}");
            }
            Some(Cursor::Text(s)) => {
                let _ = write!(t, ",\"cursor\":{}", serde_json::Value::from(s));
            }
            None => {}
        }
        t.push_str(p.tail);
    }
    t.push('}');
    splice(raw, "traptor", &t, out)
}

/// Append a non-post message for output: unchanged, on one line.
pub fn write_control(raw: &[u8], out: &mut Vec<u8>) {
    if has_line_break(raw) {
        minify_into(raw, out);
    } else {
        out.extend_from_slice(trim(raw));
    }
}

/// Append `raw` with `"key": value_json` inserted as the last member of
/// its top-level object (replacing a top-level `key` it already has). On
/// error `out` is left as it was.
pub fn splice(raw: &[u8], key: &str, value_json: &str, out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
    let start = out.len();
    let r = splice_at(raw, key, value_json, out, start);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn splice_at(raw: &[u8], key: &str, value_json: &str, out: &mut Vec<u8>, start: usize) -> Result<(), EnvelopeError> {
    if names_key(raw, key) && has_top_level_key(raw, key) {
        return rewrite(raw, key, value_json, out);
    }
    if has_line_break(raw) {
        minify_into(raw, out);
    } else {
        out.extend_from_slice(trim(raw));
    }
    if out.len() < start + 2 || out.last() != Some(&b'}') || out[start] != b'{' {
        return Err(EnvelopeError::NotAnObject);
    }
    out.pop();
    let empty = out[start + 1..].iter().all(|b| b.is_ascii_whitespace());
    if !empty {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value_json.as_bytes());
    out.push(b'}');
    Ok(())
}

/// One vectorised scan (two `contains` were two byte-wise scans of every post).
fn has_line_break(raw: &[u8]) -> bool {
    memchr::memchr2(b'\n', b'\r', raw).is_some()
}

/// `"key"` appears somewhere in `raw` (a cheap test before a full parse).
fn names_key(raw: &[u8], key: &str) -> bool {
    // Every post is searched for `"traptor"`: its searcher is built once.
    static TRAPTOR: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"traptor\""));
    if key == "traptor" {
        return TRAPTOR.find(raw).is_some();
    }
    memchr::memmem::find_iter(raw, key.as_bytes())
        .any(|i| i > 0 && raw[i - 1] == b'"' && raw.get(i + key.len()) == Some(&b'"'))
}

fn has_top_level_key(raw: &[u8], key: &str) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(raw).is_ok_and(|m| m.contains_key(key))
}

fn rewrite(raw: &[u8], key: &str, value_json: &str, out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
    let mut obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(raw).map_err(EnvelopeError::Rewrite)?;
    let value: serde_json::Value = serde_json::from_str(value_json).map_err(EnvelopeError::Rewrite)?;
    obj.shift_remove(key);
    obj.insert(key.to_owned(), value);
    serde_json::to_writer(&mut *out, &obj).map_err(EnvelopeError::Rewrite)
}

fn trim(raw: &[u8]) -> &[u8] {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(raw.len());
    let end = raw.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &raw[start..end]
}

/// Remove white space outside strings (JSON text stays byte-identical otherwise).
fn minify_into(raw: &[u8], out: &mut Vec<u8>) {
    let (mut in_str, mut esc) = (false, false);
    for &b in raw {
        if in_str {
            out.push(b);
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if b == b'"' {
                in_str = true;
            }
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::post::{Message, v1};
    use crate::rules::RuleType;

    fn id() -> Collector {
        Collector::new(RuleType::Track, 0)
    }

    #[test]
    fn iso_dates() {
        assert_eq!(created_at_iso("Mon Feb 22 01:34:53 +0000 2016").as_deref(), Some("2016-02-22T01:34:53+00:00"));
        assert_eq!(created_at_iso("2022-03-01T10:00:00.000Z").as_deref(), Some("2022-03-01T10:00:00+00:00"));
        assert_eq!(created_at_iso("yesterday"), None);
        // The per-thread memo answers a repeat, and only a repeat.
        for (input, want) in [
            ("Mon Feb 22 01:34:53 +0000 2016", Some("2016-02-22T01:34:53+00:00")),
            ("Mon Feb 22 01:34:53 +0000 2016", Some("2016-02-22T01:34:53+00:00")),
            ("yesterday", None),
            ("yesterday", None),
            ("Mon Feb 22 01:34:54 +0000 2016", Some("2016-02-22T01:34:54+00:00")),
            ("", None),
            ("Mon Feb 22 01:34:54 +0000 2016", Some("2016-02-22T01:34:54+00:00")),
            ("Sat Jan 01 00:00:00 +0100 2000", Some("1999-12-31T23:00:00+00:00")),
            ("0099-01-02T03:04:05Z", Some("0099-01-02T03:04:05+00:00")),
        ] {
            assert_eq!(created_at_iso(input).as_deref(), want, "{input:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        /// The positional reader of v1.1 timestamps agrees with chrono's
        /// format parser whenever it answers, and answers for every valid
        /// timestamp in the exact layout; wrong weekdays, impossible dates
        /// and out-of-range fields are chrono's to refuse.
        #[test]
        fn v1_timestamps_read_by_position_as_chrono_reads_them(
            year in 0u32..=9999, month in 0usize..13, day in 0u32..=32, hour in 0u32..=25, minute in 0u32..=61,
            second in 0u32..=61, weekday in 0usize..8, sign in proptest::sample::select(vec!['+', '-', '~']),
            off_h in 0u32..=25, off_m in 0u32..=61,
        ) {
            const DAYS: [&str; 8] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Xyz"];
            const MONTHS: [&str; 13] =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Foo"];
            let mut s = format!(
                "{} {} {day:02} {hour:02}:{minute:02}:{second:02} {sign}{off_h:02}{off_m:02} {year:04}",
                DAYS[weekday], MONTHS[month]
            );
            // Half the cases with the right weekday, so most dates are valid.
            let chrono = |s: &str| DateTime::parse_from_str(s, V1_TIME).ok();
            if weekday % 2 == 0 && let Some(d) = NaiveDate::from_ymd_opt(year as i32, month as u32 + 1, day) {
                s.replace_range(0..3, DAYS[d.weekday().num_days_from_monday() as usize]);
            }
            let fast = v1_time(&s);
            if let Some(fast) = fast {
                let slow = chrono(&s);
                proptest::prop_assert_eq!(Some(fast), slow, "{}", s);
                proptest::prop_assert_eq!(Some(*fast.offset()), slow.map(|d| *d.offset()));
            } else if second < 60 {
                proptest::prop_assert!(chrono(&s).is_none(), "{} parsed by chrono only", s);
            }
        }
    }

    #[test]
    fn not_found_form_and_original_bytes_kept() {
        let raw = br#"{"id_str":"1","text":"x","n":1.50,"created_at":"Mon Feb 22 01:34:53 +0000 2016"}"#;
        let Message::Post(p) = v1::decode(raw).expect("decode") else { panic!() };
        let mut out = Vec::new();
        write_post(raw, &p, id(), &[], &[], Extra::default(), &mut out).expect("wrap");
        let s = String::from_utf8(out).expect("utf8");
        assert!(s.starts_with(r#"{"id_str":"1","text":"x","n":1.50,"#), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid json");
        assert_eq!(v["traptor"]["rule_tag"], "Not Found");
        assert_eq!(v["traptor"]["rule_value"], "Not Found");
        assert_eq!(v["traptor"]["rule_type"], "track");
        assert_eq!(v["traptor"]["id"], 0);
        assert_eq!(v["traptor"]["id_str"], 0);
        assert_eq!(v["traptor"]["created_at_iso"], "2016-02-22T01:34:53+00:00");
    }

    #[test]
    fn matched_rules_carry_all_fields() {
        let rule = Rule::from_fields(
            vec![
                ("rule_id".into(), "12347".into()),
                ("value".into(), "happy".into()),
                ("tag".into(), "test".into()),
                ("appid".into(), "a".into()),
            ],
            RuleType::Track,
        )
        .expect("rule");
        let rj = [rule];
        let raw = b"{\n  \"id_str\": \"1\",\n  \"text\": \"a  b\"\n}\n";
        let Message::Post(p) = v1::decode(raw).expect("decode") else { panic!() };
        let mut out = Vec::new();
        let extra = Extra {
            enrichments: Some(r#"{"s":{"k":1}}"#),
            dead_letter: Some(("s", "boom \"x\"")),
            source: Some("x-\"0\""),
            provenance: Some(Provenance {
                head: r#"{"collector":{"type":"track","id":0,"host":"h"},"rules":{"count":1,"sha256":"ab"},"stages":[],"source":{"name":"s","format":"mastodon""#,
                cursor: Some(Cursor::Text("1\"2")),
                tail: r#"},"key":"k"}"#,
            }),
        };
        write_post(raw, &p, id(), &[0], &rj, extra, &mut out).expect("wrap");
        let s = String::from_utf8(out).expect("utf8");
        assert!(!s.contains('\n'));
        assert!(s.contains(r#""text":"a  b""#), "string content untouched: {s}");
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        let r = &v["traptor"]["collection_rules"][0];
        assert_eq!(r["rule_id"], "12347");
        assert_eq!(r["rule_tag"], "test");
        assert_eq!(r["rule_value"], "happy");
        assert_eq!(r["appid"], "a");
        assert_eq!(v["traptor"]["enrichments"]["s"]["k"], 1);
        assert_eq!(v["traptor"]["provenance"]["source"]["cursor"], "1\"2", "{s}");
        assert_eq!(v["traptor"]["provenance"]["key"], "k");
        assert_eq!(v["traptor"]["dead_letter"]["error"], "boom \"x\"");
        assert_eq!(v["traptor"]["source"], "x-\"0\"");
    }

    #[test]
    fn an_edit_is_marked_and_a_first_version_is_not() {
        let raw = br#"{"id_str":"1","text":"x"}"#;
        let Message::Post(mut p) = v1::decode(raw).expect("decode") else { panic!() };
        let mut out = Vec::new();
        write_post(raw, &p, id(), &[], &[], Extra::default(), &mut out).expect("wrap");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert!(v["traptor"].get("edit").is_none(), "{v}");
        p.edited_at = Some("2026-11-29T10:00:00Z".into());
        out.clear();
        write_post(raw, &p, id(), &[], &[], Extra::default(), &mut out).expect("wrap");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["traptor"]["edit"], true);
    }

    #[test]
    fn existing_traptor_key_is_replaced() {
        let raw = br#"{"id_str":"1","text":"x","traptor":{"old":true}}"#;
        let mut out = Vec::new();
        splice(raw, "traptor", r#"{"new":true}"#, &mut out).expect("splice");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["traptor"], serde_json::json!({"new": true}));
        // "traptor" only inside a string: plain splice.
        let raw = br#"{"id_str":"1","text":"\"traptor\""}"#;
        out.clear();
        splice(raw, "traptor", "{}", &mut out).expect("splice");
        assert!(out.starts_with(br#"{"id_str":"1","text":"\"traptor\"","traptor":{}}"#));
    }

    /// The worker writes envelopes straight into its output batch: each
    /// call appends, and a record that cannot be wrapped leaves no trace.
    #[test]
    fn envelopes_append_and_a_failure_leaves_the_buffer_as_it_was() {
        let mut out = b"before\n".to_vec();
        splice(br#"{"a":1}"#, "traptor", "{}", &mut out).expect("splice");
        assert_eq!(out, b"before\n{\"a\":1,\"traptor\":{}}");
        let len = out.len();
        for bad in [&b"[1]"[..], b"{", b"", b"}"] {
            assert!(matches!(splice(bad, "traptor", "{}", &mut out), Err(EnvelopeError::NotAnObject)));
            assert_eq!(out.len(), len, "{:?}", String::from_utf8_lossy(bad));
        }
        splice(b" {\n} ", "traptor", "{}", &mut out).expect("empty object");
        assert!(out.ends_with(b"}{\"traptor\":{}}"), "{:?}", String::from_utf8_lossy(&out));
        write_control(b"{\"limit\":{}}", &mut out);
        assert!(out.ends_with(b"}{\"traptor\":{}}{\"limit\":{}}"));
    }

    #[test]
    fn control_messages_unchanged_on_one_line() {
        let raw = b"{\n  \"limit\":{\n    \"track\":1234\n  }\n}\n";
        let mut out = Vec::new();
        write_control(raw, &mut out);
        assert_eq!(out, br#"{"limit":{"track":1234}}"#);
    }
}
