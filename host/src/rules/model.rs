//! The rule model of DESIGN §3: a rule is a flat map of string fields, exactly as
//! the original stored them in Redis, with `rule_id` and `value` required.
//!
//! Parsing a rule checks what the streaming API would refuse (a track phrase over
//! 60 bytes, a non-numeric follow id, a malformed box), so a bad rule is reported
//! where it was written instead of breaking a connection later. Pure: no I/O.

use std::fmt;

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

    pub fn parse(s: &str) -> Option<RuleType> {
        match s {
            "track" => Some(RuleType::Track),
            "follow" => Some(RuleType::Follow),
            "locations" => Some(RuleType::Locations),
            "x_v2" => Some(RuleType::XV2),
            _ => None,
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
    /// An X v2 rule, opaque here.
    Verbatim,
}

/// One rule: its fields as stored, plus what they mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    fields: Vec<(String, String)>,
    rule_id: String,
    value: String,
    tag: Option<String>,
    rule_type: RuleType,
    criterion: Criterion,
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
    #[error("field `{0}` must be a string, number or boolean, not an object or array")]
    NotScalar(String),
}

impl Rule {
    /// Build a rule from its fields. `default_type` applies when the rule has no
    /// `rule_type` (rules stored under a collector's key inherit its type).
    pub fn from_fields(fields: Vec<(String, String)>, default_type: RuleType) -> Result<Rule, RuleError> {
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        let rule_id = get("rule_id").ok_or(RuleError::Missing("rule_id"))?.to_owned();
        if rule_id.trim().is_empty() {
            return Err(RuleError::EmptyRuleId);
        }
        let value = get("value").ok_or(RuleError::Missing("value"))?.to_owned();
        if value.trim().is_empty() {
            return Err(RuleError::EmptyValue);
        }
        let rule_type = match get("rule_type") {
            None | Some("") => default_type,
            Some(t) => RuleType::parse(t).ok_or_else(|| RuleError::UnknownType(t.to_owned()))?,
        };
        let hashtag_only = get("orig_type") == Some("hashtag");
        let criterion = parse_criterion(rule_type, &value, hashtag_only)?;
        let tag = get("tag").map(str::to_owned);
        Ok(Rule { fields, rule_id, value, tag, rule_type, criterion })
    }

    /// Build a rule from a JSON object (one line of a rules file). Numbers and
    /// booleans become their text, as Redis would store them.
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

    pub fn rule_id(&self) -> &str {
        &self.rule_id
    }
    pub fn value(&self) -> &str {
        &self.value
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn rule_type(&self) -> RuleType {
        self.rule_type
    }
    pub fn criterion(&self) -> &Criterion {
        &self.criterion
    }
    /// Every field as stored, in stored order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }
    /// How many connection units this rule uses (boxes count one each).
    pub fn units(&self) -> usize {
        match &self.criterion {
            Criterion::Locations { boxes } => boxes.len(),
            _ => 1,
        }
    }
}

fn parse_criterion(rule_type: RuleType, value: &str, hashtag_only: bool) -> Result<Criterion, RuleError> {
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
    /// Ids of the rules past the limit, in order.
    pub beyond: Vec<String>,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rules use {} units; one connection carries {} ({} rule(s) beyond the limit, first {:?})",
            self.rule_type,
            self.units,
            self.limit,
            self.beyond.len(),
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
        let mut units = 0;
        let mut beyond = Vec::new();
        for r in rules.iter().filter(|r| r.rule_type() == t) {
            units += r.units();
            if units > limit {
                beyond.push(r.rule_id().to_owned());
            }
        }
        if units > limit {
            out.push(LimitExceeded { rule_type: t, units, limit, beyond });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pairs: &[(&str, &str)]) -> Result<Rule, RuleError> {
        Rule::from_fields(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), RuleType::Track)
    }

    #[test]
    fn required_fields() {
        assert_eq!(rule(&[("value", "x")]), Err(RuleError::Missing("rule_id")));
        assert_eq!(rule(&[("rule_id", "1")]), Err(RuleError::Missing("value")));
        assert_eq!(rule(&[("rule_id", "1"), ("value", "  ")]), Err(RuleError::EmptyValue));
    }

    /// Issue 16, defect 8: an empty rule_id and terms that can never match
    /// (an emoji alone, a zero-width space) loaded silently.
    #[test]
    fn empty_ids_and_terms_that_never_match_are_refused() {
        assert_eq!(rule(&[("rule_id", ""), ("value", "x")]), Err(RuleError::EmptyRuleId));
        assert_eq!(rule(&[("rule_id", "1"), ("value", "😀")]), Err(RuleError::NeverMatches("😀".into())));
        assert_eq!(rule(&[("rule_id", "1"), ("value", "\u{200b}")]), Err(RuleError::NeverMatches("\u{200b}".into())));
        assert_eq!(rule(&[("rule_id", "1"), ("value", "happy --")]), Err(RuleError::NeverMatches("--".into())));
        assert!(rule(&[("rule_id", "1"), ("value", "😀 happy")]).is_err(), "every term must be able to match");
        assert!(rule(&[("rule_id", "1"), ("value", "café")]).is_ok());
        assert!(rule(&[("rule_id", "1"), ("value", "c++")]).is_ok(), "a term with a letter can match");
    }

    #[test]
    fn track_limits() {
        let long = "a".repeat(70);
        assert_eq!(rule(&[("rule_id", "1"), ("value", &long)]), Err(RuleError::TrackTooLong { bytes: 70 }));
        assert!(rule(&[("rule_id", "1"), ("value", &"a".repeat(60))]).is_ok());
        assert_eq!(rule(&[("rule_id", "1"), ("value", "a,b")]), Err(RuleError::TrackComma));
    }

    #[test]
    fn hashtag_terms_lose_their_sign() {
        let r = rule(&[("rule_id", "1"), ("value", "#Sliding door"), ("orig_type", "hashtag")]).expect("valid");
        assert_eq!(
            r.criterion(),
            &Criterion::Track { terms: vec!["sliding".into(), "door".into()], hashtag_only: true }
        );
    }

    #[test]
    fn follow_must_be_numeric() {
        let r = rule(&[("rule_id", "1"), ("value", "@jack"), ("rule_type", "follow")]);
        assert_eq!(r, Err(RuleError::FollowNotNumeric("@jack".into())));
        let r = rule(&[("rule_id", "1"), ("value", "-5"), ("rule_type", "follow")]);
        assert!(r.is_err());
        let r = rule(&[("rule_id", "1"), ("value", "17919972"), ("rule_type", "follow")]).expect("valid");
        assert_eq!(r.criterion(), &Criterion::Follow { user_id: "17919972".into() });
        let r = rule(&[("rule_id", "1"), ("value", "did:plc:abc"), ("rule_type", "follow")]).expect("a DID");
        assert_eq!(r.criterion(), &Criterion::Follow { user_id: "did:plc:abc".into() });
    }

    #[test]
    fn boxes_are_checked() {
        assert_eq!(parse_boxes("-122.75,36.8,-121.75,37.8").expect("valid").len(), 1);
        assert_eq!(parse_boxes("-122.75,36.8,-121.75,37.8,1,1,2,2").expect("valid").len(), 2);
        assert!(parse_boxes("1,2,3").is_err());
        assert!(parse_boxes("10,10,5,20").is_err());
        assert!(parse_boxes("0,0,200,10").is_err());
        assert!(parse_boxes("a,b,c,d").is_err());
    }

    #[test]
    fn limits_report_rules_beyond() {
        let rules: Vec<Rule> =
            (0..402).map(|i| rule(&[("rule_id", &i.to_string()), ("value", "x")]).expect("valid")).collect();
        let v = check_limits(&rules);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].beyond, vec!["400".to_string(), "401".to_string()]);
    }
}
