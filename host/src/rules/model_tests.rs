//! Tests of `model.rs`.

use super::*;

#[test]
fn rule_types_and_collectors_read_back_what_they_write() {
    for t in [RuleType::Track, RuleType::Follow, RuleType::Locations, RuleType::XV2] {
        assert_eq!(t.as_str().parse::<RuleType>(), Ok(t));
        let who = Collector::new(t, 12);
        assert_eq!(who.to_string().parse::<Collector>(), Ok(who));
    }
    assert_eq!("track:0".parse::<Collector>(), Ok(Collector::new(RuleType::Track, 0)));
    for bad in ["tracks:0", "track", "track:", "track:-1", ":3", "track:1:2"] {
        let e = bad.parse::<Collector>().expect_err(bad);
        assert!(e.to_string().contains("expected TYPE:ID"), "{bad}: {e}");
    }
    assert!("Track".parse::<RuleType>().expect_err("case matters").to_string().contains("expected track"));
}

fn rule(pairs: &[(&str, &str)]) -> Result<Rule, RuleError> {
    Rule::from_fields(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), RuleType::Track)
}

/// The `collection_rules` entry as it was built before rules were stored
/// compactly: a serde_json map of the fields, then `rule_tag`, `rule_value`.
fn entry_through_a_map(r: &Rule) -> String {
    let mut obj = serde_json::Map::new();
    for (k, v) in r.fields() {
        obj.insert(k, serde_json::Value::String(v));
    }
    obj.insert("rule_tag".into(), r.tag().map_or(serde_json::Value::Null, |t| t.into()));
    obj.insert("rule_value".into(), r.value().into());
    serde_json::Value::Object(obj).to_string()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]
    /// Compact storage changes nothing a user sees: the fields read back,
    /// the entry copied into posts, and a rule read from a file's text
    /// (without a tree) equals the rule read from the parsed object.
    #[test]
    fn compact_rules_read_back_exactly(
        extra in proptest::collection::vec(
            (proptest::sample::select(vec!["tag", "description", "rule_tag", "rule_value", "appid", "dé\"k"]),
             proptest::prelude::any::<String>()),
            0..5),
        value in "[a-zA-Z\"\\\u{1}\u{7f}é ]{0,12}[a-z]",
        id in proptest::prelude::any::<String>(),
    ) {
        let mut fields = vec![("rule_id".to_string(), format!("x{id}")), ("value".to_string(), value)];
        for (k, v) in extra {
            if !fields.iter().any(|(f, _)| f == k) {
                fields.push((k.to_string(), v));
            }
        }
        let Ok(r) = Rule::from_fields(fields.clone(), RuleType::Track) else { return Ok(()) };
        proptest::prop_assert_eq!(&r.fields(), &fields);
        proptest::prop_assert_eq!(r.rule_id(), fields[0].1.as_str());
        proptest::prop_assert_eq!(r.value(), fields[1].1.as_str());
        proptest::prop_assert_eq!(r.tag(), fields.iter().find(|(k, _)| k == "tag").map(|(_, v)| v.as_str()));
        let mut entry = String::new();
        r.write_entry(&mut entry);
        proptest::prop_assert_eq!(&entry, &entry_through_a_map(&r));
        let obj: serde_json::Map<String, serde_json::Value> =
            fields.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let text = serde_json::Value::Object(obj.clone()).to_string();
        proptest::prop_assert_eq!(&Rule::from_json_text(&text, RuleType::Track), &Rule::from_json(&obj, RuleType::Track));
        proptest::prop_assert_eq!(r.fields_json(), text.as_str());
    }
}

#[test]
fn rules_from_text_take_scalars_and_name_what_they_refuse() {
    let r = Rule::from_json_text(
        r#"{"rule_id": 12, "value": "a", "n": 1.50, "b": true, "gone": null, "tag": "x", "tag": "y"}"#,
        RuleType::Track,
    )
    .expect("valid");
    assert_eq!(r.rule_id(), "12");
    assert_eq!(r.tag(), Some("y"), "the last of a repeated name, as a parsed map keeps it");
    assert_eq!(r.fields_json(), r#"{"rule_id":"12","value":"a","n":"1.5","b":"true","tag":"y"}"#);
    let t = RuleType::Track;
    assert_eq!(Rule::from_json_text(r#"{"rule_id":"1","value":"a","x":{}}"#, t), Err(RuleError::NotScalar("x".into())));
    assert_eq!(Rule::from_json_text(r#"[1]"#, t), Err(RuleError::NotAnObject));
    assert_eq!(Rule::from_json_text(r#""s""#, t), Err(RuleError::NotAnObject));
    assert!(matches!(Rule::from_json_text(r#"{"rule_id":"1""#, t), Err(RuleError::Json(_))));
    assert!(matches!(Rule::from_json_text(r#"{"rule_id":"1","value":"a"} x"#, t), Err(RuleError::Json(_))));
    assert_eq!(Rule::from_json_text(r#"{"value":"a"}"#, t), Err(RuleError::Missing("rule_id")));
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
    assert_eq!(r.criterion(), &Criterion::Track { terms: vec!["sliding".into(), "door".into()], hashtag_only: true });
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
    assert_eq!(v[0].beyond_count, 2);
    let many: Vec<Rule> =
        (0..1000).map(|i| rule(&[("rule_id", &i.to_string()), ("value", "x")]).expect("valid")).collect();
    let v = check_limits(&many);
    assert_eq!((v[0].beyond_count, v[0].beyond.len()), (600, BEYOND_IDS_KEPT));
    assert!(v[0].to_string().contains("600 rule(s) beyond the limit, first \"400\""), "{}", v[0]);
}
