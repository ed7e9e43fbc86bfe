//! Matcher tests: the upstream fixtures, one test per bullet of DESIGN §4, and a
//! property test against a naive token-set reference.

use std::collections::HashSet;
use std::path::PathBuf;

use proptest::prelude::*;

use super::tokens::{Haystack, SegKind, segment_tokens};
use super::*;
use crate::post::{Message, v1};
use crate::rules::{RuleType, file};

fn upstream(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/upstream-traptor").join(name)
}

fn rule(id: &str, rule_type: &str, value: &str, extra: &[(&str, &str)]) -> Rule {
    let mut fields = vec![
        ("rule_id".to_string(), id.to_string()),
        ("value".to_string(), value.to_string()),
        ("rule_type".to_string(), rule_type.to_string()),
    ];
    fields.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Rule::from_fields(fields, RuleType::Track).expect("valid rule")
}

fn matched_ids(m: &Matcher, json: &str) -> Vec<String> {
    let Message::Post(post) = v1::decode(json.as_bytes()).expect("decodes") else { panic!("not a post: {json}") };
    let mut out = Vec::new();
    m.match_post(&post, &mut Scratch::default(), &mut out);
    out.iter().map(|&i| m.rule(i).rule_id().to_owned()).collect()
}

fn track(values: &[&str]) -> Matcher {
    Matcher::new(values.iter().enumerate().map(|(i, v)| rule(&i.to_string(), "track", v, &[])).collect::<Vec<_>>())
}

/// Which of `values` match a post with this text (and optional entities JSON).
fn hits(values: &[&str], text: &str, entities: &str) -> Vec<String> {
    let m = track(values);
    let json = format!(
        r#"{{"id_str":"1","text":{},"entities":{}}}"#,
        serde_json::to_string(text).expect("json"),
        if entities.is_empty() { "{}" } else { entities }
    );
    matched_ids(&m, &json).into_iter().map(|i| values[i.parse::<usize>().expect("idx")].to_owned()).collect()
}

// ---- upstream fixtures -------------------------------------------------------

fn fixture_pair(rules: &str, tweet: &str) -> Vec<String> {
    let snap = file::load(&upstream(rules), RuleType::Track).expect("rules load");
    let m = Matcher::new(snap.rules);
    let raw = std::fs::read_to_string(upstream(tweet)).expect("tweet");
    matched_ids(&m, &raw)
}

#[test]
fn upstream_track_pair() {
    assert_eq!(fixture_pair("track_rules.json", "track_tweet.json"), vec!["12347"]);
}

#[test]
fn upstream_follow_pair() {
    assert_eq!(fixture_pair("follow_rules.json", "follow_tweet.json"), vec!["12345"]);
}

#[test]
fn upstream_locations_pair() {
    assert_eq!(fixture_pair("locations_rules.json", "locations_tweet.json"), vec!["12346"]);
}

#[test]
fn upstream_extended_tweets() {
    for t in ["classic.json", "classic_hidden.json", "extended_hidden.json"] {
        let t = format!("extended_tweets/{t}");
        assert_eq!(fixture_pair("extended_tweets/track_rules.json", &t), vec!["12347"], "{t}");
        assert_eq!(fixture_pair("extended_tweets/follow_rules.json", &t), vec!["12345"], "{t}");
    }
}

#[test]
fn upstream_no_match_tweet_matches_nothing() {
    let mut rules = Vec::new();
    for f in ["track_rules.json", "follow_rules.json", "locations_rules.json"] {
        rules.extend(file::load(&upstream(f), RuleType::Track).expect("load").rules.iter().cloned());
    }
    let m = Matcher::new(rules);
    let raw = std::fs::read_to_string(upstream("no_match_tweet.json")).expect("tweet");
    assert_eq!(matched_ids(&m, &raw), Vec::<String>::new());
}

// ---- DESIGN §4, track ----------------------------------------------------------

#[test]
fn phrase_is_and_of_terms_in_any_order() {
    assert_eq!(hits(&["happy birthday"], "birthday wishes, happy day", ""), vec!["happy birthday"]);
    assert!(hits(&["happy birthday"], "happy day", "").is_empty());
}

#[test]
fn case_insensitive_without_accent_folding() {
    assert_eq!(hits(&["twitter"], "TWITTER rocks", ""), vec!["twitter"]);
    assert_eq!(hits(&["touché"], "TOUCHÉ!", ""), vec!["touché"]);
    assert!(hits(&["touche"], "touché", "").is_empty());
}

#[test]
fn words_lose_leading_and_trailing_punctuation() {
    assert_eq!(hits(&["hello"], "well hello.", ""), vec!["hello"]);
    assert_eq!(hits(&["hello"], "\"hello\"", ""), vec!["hello"]);
}

#[test]
fn words_split_at_punctuation() {
    assert_eq!(hits(&["twitter"], "I like Twitter's new design", ""), vec!["twitter"]);
    assert_eq!(hits(&["twitter's"], "I like Twitter's new design", ""), vec!["twitter's"]);
    assert!(hits(&["twitter"], "TwitterTracker is here", "").is_empty());
}

#[test]
fn mentions_and_hashtags_are_whole_tokens() {
    let ents = r#"{"user_mentions":[{"screen_name":"twitter","indices":[0,8]}]}"#;
    assert_eq!(hits(&["twitter"], "@twitter hi", ents), vec!["twitter"]);
    let ents = r##"{"hashtags":[{"text":"twitter","indices":[0,8]}]}"##;
    assert_eq!(hits(&["twitter"], "#twitter hi", ents), vec!["twitter"]);
    let ents = r##"{"hashtags":[{"text":"newtwitter","indices":[0,11]}]}"##;
    assert!(hits(&["twitter"], "#newtwitter hi", ents).is_empty());
    let ents = r#"{"user_mentions":[{"screen_name":"Twitter","indices":[25,33]}]}"#;
    assert!(hits(&["twitter's"], "Someday I'd like to visit @Twitter's office", ents).is_empty());
    assert_eq!(hits(&["twitter"], "Someday I'd like to visit @Twitter's office", ents), vec!["twitter"]);
}

#[test]
fn urls_match_as_whole_and_by_pieces() {
    let ents = r#"{"urls":[{"url":"https://t.co/abc","expanded_url":"http://www.example.com/foobarbaz","display_url":"example.com/foobarbaz","indices":[5,21]}]}"#;
    let text = "look https://t.co/abc";
    assert_eq!(hits(&["example.com/foobarbaz"], text, ents), vec!["example.com/foobarbaz"]);
    assert!(hits(&["example.com"], text, ents).is_empty());
    assert_eq!(hits(&["example com"], text, ents), vec!["example com"]);
    // The t.co link in the text is not a word.
    assert!(hits(&["t.co/abc"], text, ents).is_empty());
    assert!(hits(&["abc"], text, ents).is_empty());
}

#[test]
fn twitter_documented_url_example() {
    let ents = r#"{"urls":[{"url":"https://t.co/x","expanded_url":"http://twitter.com","display_url":"twitter.com","indices":[0,14]}]}"#;
    assert_eq!(hits(&["twitter"], "https://t.co/x", ents), vec!["twitter"]);
}

#[test]
fn extended_full_text_is_used() {
    let m = track(&["ending"]);
    let json = r#"{"id_str":"1","text":"a long text…","truncated":true,"extended_tweet":{"full_text":"a long text with a happy ending","entities":{}}}"#;
    assert_eq!(matched_ids(&m, json), vec!["0"]);
}

#[test]
fn quoted_and_retweeted_text_count() {
    let m = track(&["quoted", "original"]);
    let json = r#"{"id_str":"1","text":"mine","quoted_status":{"id_str":"2","text":"the quoted words"}}"#;
    assert_eq!(matched_ids(&m, json), vec!["0"]);
    let json =
        r#"{"id_str":"1","text":"RT @a: the orig…","retweeted_status":{"id_str":"2","text":"the original words"}}"#;
    assert_eq!(matched_ids(&m, json), vec!["1"]);
}

#[test]
fn hashtag_rules_match_only_hashtags() {
    let rules = vec![
        rule("h", "track", "#summer", &[("orig_type", "hashtag")]),
        rule("h2", "track", "sliding door", &[("orig_type", "hashtag")]),
    ];
    let m = Matcher::new(rules);
    let json = r##"{"id_str":"1","text":"summer is here","entities":{}}"##;
    assert!(matched_ids(&m, json).is_empty());
    let json = r##"{"id_str":"1","text":"#Summer #sliding #door","entities":{"hashtags":[{"text":"Summer","indices":[0,7]},{"text":"sliding","indices":[8,16]},{"text":"door","indices":[17,22]}]}}"##;
    assert_eq!(matched_ids(&m, json), vec!["h", "h2"]);
}

#[test]
fn every_matching_rule_is_reported() {
    let rules = vec![
        rule("t1", "track", "happy", &[]),
        rule("t2", "track", "birthday", &[]),
        rule("t3", "track", "sad", &[]),
        rule("f1", "follow", "35969755", &[]),
    ];
    let m = Matcher::new(rules);
    let raw = std::fs::read_to_string(upstream("track_tweet.json")).expect("tweet");
    assert_eq!(matched_ids(&m, &raw), vec!["t1", "t2", "f1"]);
}

// ---- DESIGN §4, follow ---------------------------------------------------------

#[test]
fn follow_matches_author_retweets_and_replies_not_mentions() {
    let m = Matcher::new(vec![rule("f", "follow", "42", &[])]);
    assert_eq!(matched_ids(&m, r#"{"id_str":"1","text":"x","user":{"id_str":"42"}}"#), vec!["f"]);
    // retweet by the user (the user is the retweet's author) — covered above;
    // retweet of the user's post:
    assert_eq!(
        matched_ids(
            &m,
            r#"{"id_str":"1","text":"RT","user":{"id_str":"7"},"retweeted_status":{"id_str":"2","text":"x","user":{"id_str":"42"}}}"#
        ),
        vec!["f"]
    );
    // reply to the user:
    assert_eq!(
        matched_ids(&m, r#"{"id_str":"1","text":"x","user":{"id_str":"7"},"in_reply_to_user_id_str":"42"}"#),
        vec!["f"]
    );
    // numeric ids only:
    assert_eq!(matched_ids(&m, r#"{"id_str":"1","text":"x","user":{"id":42}}"#), vec!["f"]);
    // a mention alone never:
    assert!(
        matched_ids(&m, r#"{"id_str":"1","text":"@bob","user":{"id_str":"7"},"entities":{"user_mentions":[{"screen_name":"bob","id_str":"42","indices":[0,4]}]}}"#)
            .is_empty()
    );
    // a quote of the user's post is not in the list either:
    assert!(
        matched_ids(&m, r#"{"id_str":"1","text":"x","user":{"id_str":"7"},"quoted_status":{"id_str":"2","text":"y","user":{"id_str":"42"}}}"#)
            .is_empty()
    );
}

// ---- DESIGN §4, locations ------------------------------------------------------

#[test]
fn locations_point_then_place_never_retweets() {
    let m = Matcher::new(vec![rule("sf", "locations", "-122.75,36.8,-121.75,37.8", &[])]);
    let inside = r#"{"id_str":"1","text":"x","coordinates":{"type":"Point","coordinates":[-122.4,37.7]}}"#;
    assert_eq!(matched_ids(&m, inside), vec!["sf"]);
    let outside = r#"{"id_str":"1","text":"x","coordinates":{"type":"Point","coordinates":[-73.9,40.7]}}"#;
    assert!(matched_ids(&m, outside).is_empty());
    // The point wins over an overlapping place.
    let point_out_place_in = r#"{"id_str":"1","text":"x","coordinates":{"type":"Point","coordinates":[-73.9,40.7]},"place":{"bounding_box":{"type":"Polygon","coordinates":[[[-122.5,37.5],[-122.5,38.0],[-122.0,38.0],[-122.0,37.5]]]}}}"#;
    assert!(matched_ids(&m, point_out_place_in).is_empty());
    // Without a point, an overlapping place box matches (partly outside is fine).
    let place = r#"{"id_str":"1","text":"x","place":{"bounding_box":{"type":"Polygon","coordinates":[[[-123.0,37.5],[-123.0,38.0],[-122.0,38.0],[-122.0,37.5]]]}}}"#;
    assert_eq!(matched_ids(&m, place), vec!["sf"]);
    let far_place = r#"{"id_str":"1","text":"x","place":{"bounding_box":{"type":"Polygon","coordinates":[[[10,10],[10,11],[11,11],[11,10]]]}}}"#;
    assert!(matched_ids(&m, far_place).is_empty());
    let retweet = r#"{"id_str":"1","text":"x","coordinates":{"type":"Point","coordinates":[-122.4,37.7]},"retweeted_status":{"id_str":"2","text":"y"}}"#;
    assert!(matched_ids(&m, retweet).is_empty());
}

// ---- property: Aho-Corasick matcher == naive token sets ------------------------

/// The reference: spell out every token, then test each phrase against the sets.
fn naive(rules: &[Rule], post: &PostView<'_>) -> Vec<RuleIdx> {
    let mut hay = Haystack::default();
    hay.fill(post);
    let mut all = HashSet::new();
    let mut hashtags = HashSet::new();
    for seg in &hay.segments {
        for t in segment_tokens(&hay.text, seg) {
            all.insert(t.to_owned());
            if seg.kind == (SegKind::Whole { hashtag: true }) {
                hashtags.insert(t.to_owned());
            }
        }
    }
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| match r.criterion() {
            Criterion::Track { terms, hashtag_only } => {
                let set = if *hashtag_only { &hashtags } else { &all };
                terms.iter().all(|t| set.contains(t))
            }
            _ => false,
        })
        .map(|(i, _)| i as RuleIdx)
        .collect()
}

fn piece() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "ab", "ba", "é", "É", "x1", "'", ".", "/", "_", "#", "-", "…", "😀", "\u{301}"])
        .prop_map(str::to_owned)
}

fn word() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 1..5).prop_map(|v| v.concat())
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec((word(), prop::sample::select(vec![" ", "  ", "\n", "\t"])), 0..12)
        .prop_map(|v| v.into_iter().map(|(w, s)| format!("{w}{s}")).collect())
}

fn phrase() -> impl Strategy<Value = (String, bool)> {
    (prop::collection::vec(word(), 1..4), prop::bool::weighted(0.2))
        .prop_map(|(terms, hashtag)| (terms.join(" "), hashtag))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn aho_corasick_equals_naive(
        body in text(),
        tags in prop::collection::vec(word(), 0..3),
        handles in prop::collection::vec(word(), 0..3),
        urls in prop::collection::vec(prop::collection::vec(word(), 1..4), 0..3),
        phrases in prop::collection::vec(phrase(), 1..12),
    ) {
        let rules: Vec<Rule> = phrases
            .iter()
            .enumerate()
            .filter_map(|(i, (v, hashtag))| {
                let mut fields = vec![("rule_id".to_string(), i.to_string()), ("value".to_string(), v.clone())];
                if *hashtag {
                    fields.push(("orig_type".into(), "hashtag".into()));
                }
                Rule::from_fields(fields, RuleType::Track).ok()
            })
            .collect();
        let entities = serde_json::json!({
            "hashtags": tags.iter().map(|t| serde_json::json!({"text": t})).collect::<Vec<_>>(),
            "user_mentions": handles.iter().map(|t| serde_json::json!({"screen_name": t})).collect::<Vec<_>>(),
            "urls": urls.iter().map(|parts| serde_json::json!({
                "url": "https://t.co/zz",
                "expanded_url": format!("https://www.{}/", parts.join(".")),
                "display_url": parts.join("/"),
            })).collect::<Vec<_>>(),
        });
        let json = serde_json::json!({"id_str": "1", "text": body, "entities": entities}).to_string();
        let Ok(Message::Post(post)) = v1::decode(json.as_bytes()) else { panic!("decode {json}") };
        let m = Matcher::new(rules.clone());
        let mut got = Vec::new();
        m.match_post(&post, &mut Scratch::default(), &mut got);
        prop_assert_eq!(got, naive(&rules, &post), "text {:?} rules {:?}", body, phrases);
    }
}

/// Polygons among the other rules: a point in the hole is not attributed
/// and flags `outside_polygon`; a rule the source attributed (X v2) is
/// checked against its polygon, other rules are not.
#[test]
fn polygon_rules_beside_boxes_and_source_attribution() {
    let m = Matcher::new(vec![
        rule("donut", "locations", "POLYGON((0 0, 10 0, 10 10, 0 10, 0 0), (4 4, 6 4, 6 6, 4 6, 4 4))", &[]),
        rule("box", "locations", "3,3,5,5", &[]),
        rule("kw", "track", "here", &[]),
    ]);
    let post = |x: f64, y: f64| {
        format!(r#"{{"id_str":"1","text":"here","coordinates":{{"type":"Point","coordinates":[{x},{y}]}}}}"#)
    };
    let flags = |json: &str| {
        let Message::Post(p) = v1::decode(json.as_bytes()).expect("decodes") else { panic!("not a post") };
        let mut s = Scratch::default();
        let mut out = Vec::new();
        m.match_post(&p, &mut s, &mut out);
        let ids: Vec<&str> = out.iter().map(|&i| m.rule(i).rule_id()).collect();
        let v2 = [0, 2].map(|i| m.outside_polygon_rule(i, &p));
        (ids.join(","), s.outside_polygon(), v2)
    };
    assert_eq!(flags(&post(2.0, 2.0)), ("donut,kw".into(), false, [false, false]));
    assert_eq!(flags(&post(4.5, 4.5)), ("box,kw".into(), true, [true, false]));
    assert_eq!(flags(&post(4.0, 5.0)), ("donut,box,kw".into(), false, [false, false]));
    assert_eq!(flags(&post(20.0, 20.0)), ("kw".into(), false, [true, false]));
}
