use super::*;
use crate::rules::RuleType;

fn rule(t: &str, v: &str, extra: &[(&str, &str)]) -> Rule {
    let mut f = vec![("rule_id".into(), "1".into()), ("value".into(), v.into()), ("rule_type".into(), t.into())];
    f.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Rule::from_fields(f, RuleType::Track).expect("valid")
}

/// A city-sized polygon becomes 25-mile boxes that cover it; a country
/// is refused for v2 with the reason and what to use instead.
#[test]
fn polygons_become_bounding_boxes_or_a_clear_refusal() {
    // About 40 × 35 miles around San Francisco Bay, an L.
    let sf = "POLYGON((-122.6 37.3, -121.9 37.3, -121.9 37.5, -122.3 37.5, -122.3 37.8, -122.6 37.8, -122.6 37.3))";
    let v = to_v2(&rule("locations", sf, &[])).expect("fits");
    let boxes: Vec<[f64; 4]> = v
        .split("bounding_box:[")
        .skip(1)
        .map(|b| {
            let n: Vec<f64> =
                b.split(']').next().unwrap_or("").split(' ').map(|x| x.parse().expect("number")).collect();
            [n[0], n[1], n[2], n[3]]
        })
        .collect();
    assert!(boxes.len() > 1 && v.starts_with('(') && v.contains(" OR "), "{v}");
    for [w, s, e, n] in &boxes {
        let width = (e - w) * MILES_PER_DEGREE * ((s + n) / 2.0f64).to_radians().cos();
        assert!(width <= MAX_BOX_SIDE_MILES && (n - s) * MILES_PER_DEGREE <= MAX_BOX_SIDE_MILES, "{v}");
    }
    for (x, y) in [(-122.6, 37.3), (-121.9, 37.5), (-122.3, 37.8), (-122.45, 37.75), (-122.0, 37.4)] {
        assert!(
            boxes.iter().any(|[w, s, e, n]| *w <= x && x <= *e && *s <= y && y <= *n),
            "({x}, {y}) not covered: {v}"
        );
    }
    let chile = "POLYGON((-75 -55, -66 -55, -67 -17, -70 -17, -75 -55))";
    let e = to_v2(&rule("locations", chile, &[])).expect_err("far too large for 25-mile boxes");
    assert!(e.contains("25 miles") && e.contains("v1.1"), "{e}");
}

#[test]
fn translation_by_type() {
    assert_eq!(to_v2(&rule("track", "Happy Birthday", &[])), Ok("happy birthday".into()));
    assert_eq!(to_v2(&rule("track", "#Sliding door", &[("orig_type", "hashtag")])), Ok("#sliding #door".into()));
    assert_eq!(to_v2(&rule("track", "-minus", &[])), Ok("\"-minus\"".into()));
    assert_eq!(
        to_v2(&rule("follow", "17919972", &[])),
        Ok("from:17919972 OR retweets_of:17919972 OR to:17919972".into())
    );
    assert!(to_v2(&rule("follow", "did:plc:x", &[])).is_err());
    assert_eq!(
        to_v2(&rule("locations", "-122.42,37.77,-122.40,37.79", &[])),
        Ok("bounding_box:[-122.42 37.77 -122.4 37.79]".into())
    );
    let e = to_v2(&rule("locations", "-122.75,36.8,-121.75,37.8", &[])).expect_err("too big");
    assert!(e.contains("25 miles"), "{e}");
    assert_eq!(to_v2(&rule("x_v2", "cats has:media -is:retweet", &[])), Ok("cats has:media -is:retweet".into()));
}

#[test]
fn lines_are_classified() {
    assert!(matches!(classify(b""), Line::KeepAlive));
    assert!(matches!(classify(br#"{"data":{"id":"5","text":"x"}}"#), Line::Post(id) if id == "5"));
    let op = br#"{"errors":[{"title":"operational-disconnect","disconnect_type":"UpstreamUncleanDisconnect","detail":"x","type":"https://api.twitter.com/2/problems/operational-disconnect"}]}"#;
    assert!(matches!(classify(op), Line::Errors { disconnect: Some(_) }));
    let other = br#"{"errors":[{"title":"Something else","detail":"y"}]}"#;
    assert!(matches!(classify(other), Line::Errors { disconnect: None }));
}

#[test]
fn backfill_covers_the_gap_in_whole_minutes_within_the_limit() {
    assert_eq!(backfill_for(0, 1_000, 500_000), None, "off");
    assert_eq!(backfill_for(3, 0, 500_000), Some(3), "no position: all of it");
    assert_eq!(backfill_for(5, 100_000, 101_000), Some(1), "a second's gap (+30 s margin) asks for a minute");
    assert_eq!(backfill_for(5, 100_000, 100_000 + 31_000), Some(2), "31 s + the margin: two minutes");
    assert_eq!(backfill_for(5, 100_000, 100_000 + 3_600_000), Some(5), "an hour: the limit");
    assert_eq!(backfill_for(5, 200_000, 100_000), Some(1), "a clock step back still asks");
}
