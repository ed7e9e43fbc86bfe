//! The rule model of DESIGN §3: a rule is a flat map of string fields, exactly as
//! the original stored them in Redis, with `rule_id` and `value` required.
//!
//! Parsing a rule checks what the streaming API would refuse (a track phrase over
//! 60 bytes, a non-numeric follow id, a malformed box), so a bad rule is reported
//! where it was written instead of breaking a connection later. Pure: no I/O.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use super::geometry::{DEFAULT_MAX_BOXES, Shape, is_polygon, parse_shape};
use crate::post::BBox;

/// Twitter v1.1 statuses/filter limits per connection ("Basic stream parameters").
pub mod limits {
    /// `track`: at most 400 phrases per connection.
    pub const TRACK_PHRASES: usize = 400;
    /// `track`: each phrase 1 to 60 bytes.
    pub const TRACK_PHRASE_BYTES: usize = 60;
    /// `follow`: at most 5,000 user ids.
    pub const FOLLOW_IDS: usize = 5000;
    /// `locations`: at most 25 boxes.
    pub const LOCATION_BOXES: usize = 25;
    /// X API v2 filtered stream: rules per app (Pro tier; lower tiers fewer,
    /// configured on the source).
    pub const X_V2_RULES: usize = 1000;
}

/// The three kinds of v1.1 filter parameter a rule can feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleType {
    Track,
    Follow,
    Locations,
    /// An X API v2 filtered-stream rule, sent as written (`x_v2`). Not matched
    /// locally: the stream's `matching_rules` attribute posts to it.
    #[serde(rename = "x_v2")]
    XV2,
}

impl RuleType {
    /// The three v1.1 filter parameters (what collectors are typed by).
    pub const ALL: [RuleType; 3] = [RuleType::Track, RuleType::Follow, RuleType::Locations];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::Track => "track",
            RuleType::Follow => "follow",
            RuleType::Locations => "locations",
            RuleType::XV2 => "x_v2",
        }
    }

    /// How many units (phrases, ids, boxes) one connection may carry.
    pub fn connection_limit(self) -> usize {
        match self {
            RuleType::Track => limits::TRACK_PHRASES,
            RuleType::Follow => limits::FOLLOW_IDS,
            RuleType::Locations => limits::LOCATION_BOXES,
            RuleType::XV2 => limits::X_V2_RULES,
        }
    }
}

impl fmt::Display for RuleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule type's name that is none of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected track, follow, locations or x_v2")]
pub struct UnknownRuleType(pub String);

/// The one parser of rule-type names (files, Redis keys, environment,
/// command line).
impl std::str::FromStr for RuleType {
    type Err = UnknownRuleType;

    fn from_str(s: &str) -> Result<RuleType, UnknownRuleType> {
        match s {
            "track" => Ok(RuleType::Track),
            "follow" => Ok(RuleType::Follow),
            "locations" => Ok(RuleType::Locations),
            "x_v2" => Ok(RuleType::XV2),
            _ => Err(UnknownRuleType(s.to_owned())),
        }
    }
}

/// A collector: its type and id (`[traptor] type` and `id`), written
/// `<type>:<id>` (`track:0`) in Redis keys, notices, heartbeats, leases and
/// on the command line, and as `traptor_type`/`traptor_id` in envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Collector {
    pub rule_type: RuleType,
    pub id: u32,
}

impl Collector {
    pub fn new(rule_type: RuleType, id: u32) -> Collector {
        Collector { rule_type, id }
    }
}

impl fmt::Display for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.rule_type, self.id)
    }
}

/// Why a `TYPE:ID` text is not a collector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected TYPE:ID, e.g. track:0")]
pub struct BadCollector(pub String);

impl std::str::FromStr for Collector {
    type Err = BadCollector;

    fn from_str(s: &str) -> Result<Collector, BadCollector> {
        let bad = || BadCollector(s.to_owned());
        let (t, id) = s.split_once(':').ok_or_else(bad)?;
        Ok(Collector { rule_type: t.parse().map_err(|_| bad())?, id: id.parse().map_err(|_| bad())? })
    }
}

/// What a rule selects, parsed from its `value` by its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// Terms of a phrase, lower-cased; all must match. `hashtag_only` for
    /// `orig_type = hashtag` rules, whose terms lose their leading `#`.
    Track { terms: Vec<String>, hashtag_only: bool },
    /// A numeric Twitter user id, or a Bluesky DID (`did:…`).
    Follow { user_id: String },
    /// One or more boxes (`sw_lng,sw_lat,ne_lng,ne_lat`, repeated).
    Locations { boxes: Vec<BBox> },
    /// A polygon or several (GeoJSON or WKT), holes allowed.
    Polygon { shape: Arc<Shape> },
    /// An X v2 rule, opaque here.
    Verbatim,
}

/// One rule: its fields as stored, plus what they mean.
///
/// Stored compactly (a million rules must fit in a few hundred MB): the
/// fields are kept once, as one compact JSON object whose values are all
/// strings, in stored order — which is also most of the rule's
/// `collection_rules` entry in every post it matches ([`Rule::write_entry`]
/// copies it). `rule_id`, `value` and `tag` are spans of that text.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `{"name":"value",...}`, escaped as serde_json escapes.
    json: Box<str>,
    /// The string literals (quotes included) of `rule_id`, `value`, `tag`.
    rule_id: Lit,
    value: Lit,
    tag: Option<Lit>,
    /// Unescaped `rule_id`, `value`, `tag`, when a literal holds an escape.
    plain: Option<Box<Plain>>,
    /// The whole `collection_rules` entry, when the fields themselves carry
    /// `rule_tag` or `rule_value` (which the entry overwrites), or when the
    /// rule is a polygon (named by digest there, not copied).
    entry: Option<Box<str>>,
    rule_type: RuleType,
    criterion: Criterion,
}

/// A byte range of [`Rule::json`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lit {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, PartialEq)]
struct Plain {
    rule_id: String,
    value: String,
    tag: Option<String>,
}

/// Why a rule was refused. Each names the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `value` is empty")]
    EmptyValue,
    #[error("field `rule_id` is empty")]
    EmptyRuleId,
    #[error("track term {0:?} has no letter or digit, so no post can ever match it")]
    NeverMatches(String),
    #[error("the rule is {bytes} bytes; at most {max} are allowed (max_rule_bytes)")]
    TooLarge { bytes: usize, max: usize },
    #[error("field `rule_type` is {0:?}; expected track, follow, locations or x_v2")]
    UnknownType(String),
    #[error("track value is {bytes} bytes; the API allows at most {} bytes per phrase", limits::TRACK_PHRASE_BYTES)]
    TrackTooLong { bytes: usize },
    #[error("track value contains a comma, which separates phrases in the API; write one rule per phrase")]
    TrackComma,
    #[error("follow value {0:?} is not a numeric user id (or a Bluesky DID)")]
    FollowNotNumeric(String),
    #[error("locations value {value:?}: {reason}")]
    BadBox { value: String, reason: String },
    #[error("locations polygon: {0}")]
    BadPolygon(String),
    #[error("field `{0}` must be a string, number or boolean, not an object or array")]
    NotScalar(String),
    #[error("a rule must be a JSON object")]
    NotAnObject,
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("field `{field}` is {value:?}: {reason}")]
    BadLimit { field: &'static str, value: String, reason: &'static str },
}

/// `rate_limit`: posts per second attributed to a rule at most; a finite
/// number above 0.
pub fn parse_rate_limit(v: &str) -> Result<f64, RuleError> {
    match v.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e9 => Ok(r),
        _ => Err(RuleError::BadLimit {
            field: "rate_limit",
            value: v.to_owned(),
            reason: "expected posts per second, a number above 0 (at most 1e9)",
        }),
    }
}

/// `sample`: the share of a rule's posts attributed to it, above 0 and at
/// most 1 (deterministic on the post id).
pub fn parse_sample(v: &str) -> Result<f64, RuleError> {
    match v.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 1.0 => Ok(s),
        _ => Err(RuleError::BadLimit {
            field: "sample",
            value: v.to_owned(),
            reason: "expected a share above 0 and at most 1",
        }),
    }
}

impl Rule {
    /// Build a rule from its fields. `default_type` applies when the rule has no
    /// `rule_type` (rules stored under a collector's key inherit its type).
    pub fn from_fields(fields: Vec<(String, String)>, default_type: RuleType) -> Result<Rule, RuleError> {
        Rule::from_pairs(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())), default_type)
    }

    /// [`Rule::from_fields`] from borrowed pairs (names must be distinct;
    /// the first of a repeated name is the one read).
    pub fn from_pairs<'a>(
        pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        default_type: RuleType,
    ) -> Result<Rule, RuleError> {
        let get = |k: &str| pairs.clone().find(|(f, _)| *f == k).map(|(_, v)| v);
        let rule_id = get("rule_id").ok_or(RuleError::Missing("rule_id"))?;
        if rule_id.trim().is_empty() {
            return Err(RuleError::EmptyRuleId);
        }
        let value = get("value").ok_or(RuleError::Missing("value"))?;
        if value.trim().is_empty() {
            return Err(RuleError::EmptyValue);
        }
        let rule_type = match get("rule_type") {
            None | Some("") => default_type,
            Some(t) => t.parse().map_err(|_| RuleError::UnknownType(t.to_owned()))?,
        };
        // Checked here, read when the matcher is compiled (Rule::limits).
        if let Some(v) = get("rate_limit").filter(|v| !v.is_empty()) {
            parse_rate_limit(v)?;
        }
        if let Some(v) = get("sample").filter(|v| !v.is_empty()) {
            parse_sample(v)?;
        }
        let hashtag_only = get("orig_type") == Some("hashtag");
        let max_boxes = match get("max_boxes").filter(|v| !v.is_empty()) {
            Some(v) => parse_max_boxes(v)?,
            None => DEFAULT_MAX_BOXES,
        };
        let criterion = parse_criterion(rule_type, value, hashtag_only, max_boxes)?;
        let tag = get("tag");

        let mut json = String::with_capacity(pairs.clone().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>() + 2);
        json.push('{');
        let (mut id_lit, mut value_lit, mut tag_lit) = (None, None, None);
        let mut overwritten = false;
        for (i, (k, v)) in pairs.clone().enumerate() {
            if i > 0 {
                json.push(',');
            }
            write_json_str(&mut json, k);
            json.push(':');
            let start = json.len() as u32;
            write_json_str(&mut json, v);
            let lit = Some(Lit { start, end: json.len() as u32 });
            match k {
                "rule_id" => id_lit = id_lit.or(lit),
                "value" => value_lit = value_lit.or(lit),
                "tag" => tag_lit = tag_lit.or(lit),
                "rule_tag" | "rule_value" => overwritten = true,
                _ => {}
            }
        }
        json.push('}');
        let (Some(rule_id_lit), Some(value_lit)) = (id_lit, value_lit) else {
            return Err(RuleError::Missing("rule_id"));
        };
        let lits = [Some(rule_id_lit), Some(value_lit), tag_lit];
        let escaped = lits.iter().flatten().any(|l| json[l.start as usize..l.end as usize].contains('\\'));
        let plain = escaped.then(|| {
            Box::new(Plain { rule_id: rule_id.to_owned(), value: value.to_owned(), tag: tag.map(str::to_owned) })
        });
        // A polygon's text can be many kilobytes: a post's entry names it by
        // digest instead (the rule store holds the geometry).
        let shown = match &criterion {
            Criterion::Polygon { shape } => Some(super::geometry::reference(value, shape)),
            _ => None,
        };
        let entry = entry_of(pairs.clone(), tag, value, shown.as_deref(), overwritten);
        Ok(Rule {
            json: json.into_boxed_str(),
            rule_id: rule_id_lit,
            value: value_lit,
            tag: tag_lit,
            plain,
            entry,
            rule_type,
            criterion,
        })
    }

    /// Build a rule from a JSON object (one line of a rules file). Numbers and
    /// booleans become their text, as Redis would store them; `null` fields
    /// are left out.
    pub fn from_json(
        obj: &serde_json::Map<String, serde_json::Value>,
        default_type: RuleType,
    ) -> Result<Rule, RuleError> {
        let mut fields = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => return Err(RuleError::NotScalar(k.clone())),
            };
            fields.push((k.clone(), s));
        }
        Rule::from_fields(fields, default_type)
    }

    /// [`Rule::from_json`] straight from the text of one JSON object, without
    /// building a tree: strings without escapes are borrowed from `line`.
    pub fn from_json_text(line: &str, default_type: RuleType) -> Result<Rule, RuleError> {
        let pairs = json_pairs(line)?;
        Rule::from_pairs(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())), default_type)
    }

    pub fn rule_id(&self) -> &str {
        match &self.plain {
            Some(p) => &p.rule_id,
            None => self.inner(self.rule_id),
        }
    }
    pub fn value(&self) -> &str {
        match &self.plain {
            Some(p) => &p.value,
            None => self.inner(self.value),
        }
    }
    pub fn tag(&self) -> Option<&str> {
        match &self.plain {
            Some(p) => p.tag.as_deref(),
            None => self.tag.map(|l| self.inner(l)),
        }
    }
    pub fn rule_type(&self) -> RuleType {
        self.rule_type
    }
    pub fn criterion(&self) -> &Criterion {
        &self.criterion
    }
    /// Every field as stored, in stored order (built on each call: for
    /// writing a rule back, not for the hot path).
    pub fn fields(&self) -> Vec<(String, String)> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&self.json).unwrap_or_default();
        debug_assert!(!map.is_empty(), "a rule's own JSON parses");
        map.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned())).collect()
    }
    /// The fields as one compact JSON object, values as strings, in stored
    /// order: two rules have the same fields exactly when these are equal.
    /// The rule's own `rate_limit` and `sample` (checked when it was read).
    /// Cold: for compiling, and cheap for rules without either.
    pub fn limits(&self) -> (Option<f64>, Option<f64>) {
        if !self.json.contains("\"rate_limit\"") && !self.json.contains("\"sample\"") {
            return (None, None);
        }
        let fields = self.fields();
        let get = |k: &str| fields.iter().find(|(f, v)| f == k && !v.is_empty()).map(|(_, v)| v.as_str());
        (get("rate_limit").and_then(|v| parse_rate_limit(v).ok()), get("sample").and_then(|v| parse_sample(v).ok()))
    }

    pub fn fields_json(&self) -> &str {
        &self.json
    }
    /// Append the rule's `collection_rules` entry (DESIGN §5): its fields,
    /// then `rule_tag` (the tag or null) and `rule_value`.
    pub fn write_entry(&self, out: &mut String) {
        if let Some(e) = &self.entry {
            out.push_str(e);
            return;
        }
        out.push_str(&self.json[..self.json.len() - 1]);
        out.push_str(",\"rule_tag\":");
        match self.tag {
            Some(l) => out.push_str(self.lit(l)),
            None => out.push_str("null"),
        }
        out.push_str(",\"rule_value\":");
        out.push_str(self.lit(self.value));
        out.push('}');
    }
    /// How many units (phrases, ids, boxes) this rule uses on a connection.
    pub fn units(&self) -> usize {
        match &self.criterion {
            Criterion::Locations { boxes } => boxes.len(),
            Criterion::Polygon { shape } => shape.cover().boxes.len(),
            _ => 1,
        }
    }

    fn lit(&self, l: Lit) -> &str {
        &self.json[l.start as usize..l.end as usize]
    }
    fn inner(&self, l: Lit) -> &str {
        &self.json[l.start as usize + 1..l.end as usize - 1]
    }
}

/// The `collection_rules` entry kept apart from the fields (`None`: the
/// fields as stored, with `rule_tag` and `rule_value`): when the fields carry
/// `rule_tag`/`rule_value` themselves, or when `shown` stands for the value.
fn entry_of<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    tag: Option<&str>,
    value: &str,
    shown: Option<&str>,
    overwritten: bool,
) -> Option<Box<str>> {
    let shown_value = shown.unwrap_or(value);
    if overwritten {
        let mut obj = serde_json::Map::new();
        for (k, v) in pairs {
            let v = if k == "value" { shown_value } else { v };
            obj.entry(k).or_insert_with(|| serde_json::Value::String(v.to_owned()));
        }
        obj.insert("rule_tag".into(), tag.map_or(serde_json::Value::Null, |t| serde_json::Value::String(t.into())));
        obj.insert("rule_value".into(), serde_json::Value::String(shown_value.to_owned()));
        Some(serde_json::Value::Object(obj).to_string().into_boxed_str())
    } else {
        shown.map(|r| {
            let mut e = String::new();
            e.push('{');
            for (i, (k, v)) in pairs.enumerate() {
                if i > 0 {
                    e.push(',');
                }
                write_json_str(&mut e, k);
                e.push(':');
                write_json_str(&mut e, if k == "value" { r } else { v });
            }
            e.push_str(",\"rule_tag\":");
            match tag {
                Some(t) => write_json_str(&mut e, t),
                None => e.push_str("null"),
            }
            e.push_str(",\"rule_value\":");
            write_json_str(&mut e, r);
            e.push('}');
            e.into_boxed_str()
        })
    }
}

/// Write `s` as a JSON string literal, escaped exactly as serde_json does
/// (`\"`, `\\`, `\b \f \n \r \t`, other control characters as `\u00XX`).
fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(esc);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out.push('"');
}

/// A field's name and value as text.
type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The members of one flat JSON object as text: strings as themselves,
/// numbers and booleans as their JSON text, `null` left out; a repeated name
/// keeps its first place and its last value (as a parsed map would).
fn json_pairs(line: &str) -> Result<Vec<Pair<'_>>, RuleError> {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_str(line);
    let not_scalar = std::cell::RefCell::new(None);
    let pairs = de.deserialize_map(PairsVisitor { not_scalar: &not_scalar }).map_err(|e| {
        if let Some(k) = not_scalar.take() {
            RuleError::NotScalar(k)
        } else if !line.trim_start().starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(line).is_ok() {
            RuleError::NotAnObject
        } else {
            RuleError::Json(e.to_string())
        }
    })?;
    de.end().map_err(|e| RuleError::Json(e.to_string()))?;
    Ok(pairs)
}

/// Collects the members; names the first member that is not a scalar.
struct PairsVisitor<'a> {
    not_scalar: &'a std::cell::RefCell<Option<String>>,
}

impl<'de> serde::de::Visitor<'de> for PairsVisitor<'_> {
    type Value = Vec<(Cow<'de, str>, Cow<'de, str>)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Self::Value = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Text(k)) = map.next_key::<Text<'de>>()? {
            let raw: &'de serde_json::value::RawValue = map.next_value()?;
            let Ok(v) = scalar_text(raw.get()) else {
                *self.not_scalar.borrow_mut() = Some(k.into_owned());
                return Err(serde::de::Error::custom("not a scalar"));
            };
            match (out.iter_mut().find(|(name, _)| *name == k), v) {
                (Some(slot), Some(v)) => slot.1 = v,
                (Some(_), None) => out.retain(|(name, _)| *name != k),
                (None, Some(v)) => out.push((k, v)),
                (None, None) => {}
            }
        }
        Ok(out)
    }
}

/// The text a scalar JSON value stands for; `None` for null, `Err` for an
/// object or array.
fn scalar_text(raw: &str) -> Result<Option<Cow<'_, str>>, ()> {
    match raw.as_bytes().first() {
        Some(b'"') if !raw.contains('\\') => Ok(Some(Cow::Borrowed(&raw[1..raw.len() - 1]))),
        Some(b'"') => serde_json::from_str::<String>(raw).map(|s| Some(Cow::Owned(s))).map_err(|_| ()),
        Some(b'n') => Ok(None),
        Some(b't' | b'f') => Ok(Some(Cow::Borrowed(raw))),
        Some(b'{' | b'[') | None => Err(()),
        // A number: as serde_json writes it back (1.50 → 1.5), as before.
        Some(_) => {
            serde_json::from_str::<serde_json::Number>(raw).map(|n| Some(Cow::Owned(n.to_string()))).map_err(|_| ())
        }
    }
}

/// A map key, borrowed from the input when it has no escape.
struct Text<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `max_boxes`: how many boxes a polygon's cover may use on a v1.1
/// connection, 1 to 25.
pub fn parse_max_boxes(v: &str) -> Result<usize, RuleError> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=limits::LOCATION_BOXES).contains(&n) => Ok(n),
        _ => Err(RuleError::BadLimit {
            field: "max_boxes",
            value: v.to_owned(),
            reason: "expected a whole number of boxes from 1 to 25",
        }),
    }
}

fn parse_criterion(
    rule_type: RuleType,
    value: &str,
    hashtag_only: bool,
    max_boxes: usize,
) -> Result<Criterion, RuleError> {
    match rule_type {
        RuleType::Track => {
            let trimmed = value.trim();
            if trimmed.len() > limits::TRACK_PHRASE_BYTES {
                return Err(RuleError::TrackTooLong { bytes: trimmed.len() });
            }
            if trimmed.contains(',') {
                return Err(RuleError::TrackComma);
            }
            let terms: Vec<String> = trimmed
                .split_whitespace()
                .map(|t| {
                    let t = t.to_lowercase();
                    if hashtag_only { t.trim_start_matches(['#', '＃']).to_owned() } else { t }
                })
                .filter(|t| !t.is_empty())
                .collect();
            if terms.is_empty() {
                return Err(RuleError::EmptyValue);
            }
            // A token never consists of punctuation, symbols or invisible
            // characters only (DESIGN §4: words lose them at their edges and
            // split at them), so such a term could never match.
            if let Some(t) = terms.iter().find(|t| !t.chars().any(char::is_alphanumeric)) {
                return Err(RuleError::NeverMatches(t.clone()));
            }
            Ok(Criterion::Track { terms, hashtag_only })
        }
        RuleType::Follow => {
            let v = value.trim();
            let did = v.starts_with("did:") && v.len() > 4 && !v.contains(char::is_whitespace);
            match v.parse::<u64>() {
                Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(Criterion::Follow { user_id: n.to_string() }),
                _ if did => Ok(Criterion::Follow { user_id: v.to_owned() }),
                _ => Err(RuleError::FollowNotNumeric(value.to_owned())),
            }
        }
        RuleType::Locations if is_polygon(value) => parse_shape(value, max_boxes)
            .map(|shape| Criterion::Polygon { shape: Arc::new(shape) })
            .map_err(|e| RuleError::BadPolygon(e.0)),
        RuleType::Locations => parse_boxes(value).map(|boxes| Criterion::Locations { boxes }),
        RuleType::XV2 => Ok(Criterion::Verbatim),
    }
}

/// Parse `sw_lng,sw_lat,ne_lng,ne_lat` (repeated for several boxes).
pub fn parse_boxes(value: &str) -> Result<Vec<BBox>, RuleError> {
    let bad = |reason: String| RuleError::BadBox { value: value.to_owned(), reason };
    let nums: Vec<f64> = value
        .split(',')
        .map(|s| s.trim().parse::<f64>().map_err(|_| bad(format!("{:?} is not a number", s.trim()))))
        .collect::<Result<_, _>>()?;
    if nums.is_empty() || !nums.len().is_multiple_of(4) {
        return Err(bad(format!("expected 4 numbers per box (sw_lng,sw_lat,ne_lng,ne_lat), got {}", nums.len())));
    }
    nums.chunks(4)
        .map(|c| {
            let b = BBox { west: c[0], south: c[1], east: c[2], north: c[3] };
            if !c.iter().all(|n| n.is_finite()) {
                return Err(bad("coordinates must be finite".into()));
            }
            if !(-180.0..=180.0).contains(&b.west) || !(-180.0..=180.0).contains(&b.east) {
                return Err(bad("longitude outside -180..180".into()));
            }
            if !(-90.0..=90.0).contains(&b.south) || !(-90.0..=90.0).contains(&b.north) {
                return Err(bad("latitude outside -90..90".into()));
            }
            if b.west >= b.east || b.south >= b.north {
                return Err(bad("south-west corner must be below and left of north-east corner".into()));
            }
            Ok(b)
        })
        .collect()
}

/// Rules of one type beyond what one connection can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    pub rule_type: RuleType,
    pub units: usize,
    pub limit: usize,
    /// How many rules are past the limit.
    pub beyond_count: usize,
    /// Ids of the first of them, in order (at most [`BEYOND_IDS_KEPT`]: a
    /// million follow rules in one file must not copy a million ids to say so).
    pub beyond: Vec<String>,
}

/// How many ids of rules past a limit a [`LimitExceeded`] keeps.
pub const BEYOND_IDS_KEPT: usize = 100;

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rules use {} units; one connection carries {} ({} rule(s) beyond the limit, first {:?})",
            self.rule_type,
            self.units,
            self.limit,
            self.beyond_count,
            self.beyond.first().map(String::as_str).unwrap_or("")
        )
    }
}

/// Check per-connection limits (DESIGN §3). Rules past a limit are reported,
/// never dropped: the matcher still uses them; a planner moves them elsewhere.
pub fn check_limits(rules: &[Rule]) -> Vec<LimitExceeded> {
    let mut out = Vec::new();
    for t in RuleType::ALL {
        let limit = t.connection_limit();
        let (mut units, mut beyond_count) = (0, 0);
        let mut beyond = Vec::new();
        for r in rules.iter().filter(|r| r.rule_type() == t) {
            units += r.units();
            if units > limit {
                beyond_count += 1;
                if beyond.len() < BEYOND_IDS_KEPT {
                    beyond.push(r.rule_id().to_owned());
                }
            }
        }
        if units > limit {
            out.push(LimitExceeded { rule_type: t, units, limit, beyond_count, beyond });
        }
    }
    out
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
