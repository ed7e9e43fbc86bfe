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

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::post::PostView;
use crate::rules::{Rule, RuleType};

/// The collector identity written into every envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub traptor_type: RuleType,
    pub traptor_id: u32,
}

/// Optional members of the `traptor` object.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra<'a> {
    /// The serialised `{"stage": {...}, ...}` object of what stages added.
    pub enrichments: Option<&'a str>,
    /// `(stage, error)` for a dead letter.
    pub dead_letter: Option<(&'a str, &'a str)>,
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
    let dt = DateTime::parse_from_str(created_at, "%a %b %d %H:%M:%S %z %Y")
        .or_else(|_| DateTime::parse_from_rfc3339(created_at))
        .ok()?;
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

/// Write the envelope of one post into `out` (cleared first).
///
/// `matched` are indices into `rules`; `extra` holds further members of
/// the `traptor` object, already serialised (see [`Extra`]).
pub fn write_post(
    raw: &[u8],
    post: &PostView<'_>,
    id: Identity,
    matched: &[u32],
    rules: &[Rule],
    extra: Extra<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    out.clear();
    let mut t = String::with_capacity(128 + 256 * matched.len());
    let _ = write!(t, "{{\"id_str\":{},\"type\":\"{}\"", id.traptor_id, id.traptor_type);
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
    if matched.is_empty() {
        let _ = write!(
            t,
            ",\"rule_type\":\"{}\",\"id\":{},\"rule_tag\":\"Not Found\",\"rule_value\":\"Not Found\"",
            id.traptor_type, id.traptor_id
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
    t.push('}');
    splice(raw, "traptor", &t, out)
}

/// Copy a non-post message for output: unchanged, on one line.
pub fn write_control(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if raw.contains(&b'\n') || raw.contains(&b'\r') {
        minify_into(raw, out);
    } else {
        out.extend_from_slice(trim(raw));
    }
}

/// Insert `"key": value_json` as the last member of the JSON object `raw`.
pub fn splice(raw: &[u8], key: &str, value_json: &str, out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
    out.clear();
    if memchr::memmem::find(raw, format!("\"{key}\"").as_bytes()).is_some() && has_top_level_key(raw, key) {
        return rewrite(raw, key, value_json, out);
    }
    if raw.contains(&b'\n') || raw.contains(&b'\r') {
        minify_into(raw, out);
    } else {
        out.extend_from_slice(trim(raw));
    }
    if out.last() != Some(&b'}') || out.first() != Some(&b'{') {
        return Err(EnvelopeError::NotAnObject);
    }
    out.pop();
    let empty = out.iter().skip(1).all(|b| b.is_ascii_whitespace());
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

    fn id() -> Identity {
        Identity { traptor_type: RuleType::Track, traptor_id: 0 }
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
        let extra = Extra { enrichments: Some(r#"{"s":{"k":1}}"#), dead_letter: Some(("s", "boom \"x\"")) };
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
        assert_eq!(v["traptor"]["dead_letter"]["error"], "boom \"x\"");
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
        splice(raw, "traptor", "{}", &mut out).expect("splice");
        assert!(out.starts_with(br#"{"id_str":"1","text":"\"traptor\"","traptor":{}}"#));
    }

    #[test]
    fn control_messages_unchanged_on_one_line() {
        let raw = b"{\n  \"limit\":{\n    \"track\":1234\n  }\n}\n";
        let mut out = Vec::new();
        write_control(raw, &mut out);
        assert_eq!(out, br#"{"limit":{"track":1234}}"#);
    }
}
