//! Twitter's twitter-text conformance suite (`extract.yml`): every case of the
//! hashtags, mentions, urls and cashtags sections, with and without indices.
//! The test prints how many pass per section and fails if any does not.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

use crate::extract::{self, Entity};

#[derive(Deserialize)]
struct Suite {
    tests: BTreeMap<String, Vec<Case>>,
}

#[derive(Deserialize)]
struct Case {
    description: String,
    text: String,
    expected: Value,
}

fn suite() -> Suite {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/twitter-text/extract.yml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml::from_str(&text).expect("extract.yml parses")
}

fn values(v: &[Entity]) -> Value {
    Value::Sequence(v.iter().map(|e| Value::String(e.value.clone())).collect())
}

fn with_indices(v: &[Entity], key: &str) -> Value {
    Value::Sequence(
        v.iter()
            .map(|e| {
                let mut m = serde_yaml::Mapping::new();
                m.insert(key.into(), Value::String(e.value.clone()));
                m.insert("indices".into(), Value::Sequence(vec![(e.start as u64).into(), (e.end as u64).into()]));
                Value::Mapping(m)
            })
            .collect(),
    )
}

/// Compare ignoring key order inside mappings.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Sequence(x), Value::Sequence(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Value::Mapping(x), Value::Mapping(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[test]
fn twitter_text_conformance() {
    let suite = suite();
    let sections = [
        "hashtags",
        "hashtags_from_astral",
        "hashtags_with_indices",
        "mentions",
        "mentions_with_indices",
        "mentions_or_lists_with_indices",
        "urls",
        "urls_with_indices",
        "urls_with_directional_markers",
        "tco_urls_with_params",
        "cashtags",
        "cashtags_with_indices",
    ];
    let mut failures = Vec::new();
    let (mut total, mut passed) = (0, 0);
    for section in sections {
        let cases = suite.tests.get(section).unwrap_or_else(|| panic!("no section {section}"));
        let mut ok = 0;
        for case in cases {
            let chars: Vec<char> = case.text.chars().collect();
            let got = match section {
                "hashtags" | "hashtags_from_astral" => values(&extract::extract(&case.text).hashtags),
                "hashtags_with_indices" => with_indices(&extract::extract(&case.text).hashtags, "hashtag"),
                "mentions" => values(&extract::mentions(&chars)),
                "mentions_with_indices" => with_indices(&extract::mentions(&chars), "screen_name"),
                "mentions_or_lists_with_indices" => Value::Sequence(
                    extract::mentions_or_lists(&chars)
                        .iter()
                        .map(|m| {
                            let mut map = serde_yaml::Mapping::new();
                            map.insert("screen_name".into(), m.screen_name.clone().into());
                            map.insert("list_slug".into(), m.list_slug.clone().into());
                            map.insert(
                                "indices".into(),
                                Value::Sequence(vec![(m.start as u64).into(), (m.end as u64).into()]),
                            );
                            Value::Mapping(map)
                        })
                        .collect(),
                ),
                "urls" | "tco_urls_with_params" => values(&extract::urls(&chars)),
                "urls_with_indices" | "urls_with_directional_markers" => with_indices(&extract::urls(&chars), "url"),
                "cashtags" => values(&extract::cashtags(&chars)),
                "cashtags_with_indices" => with_indices(&extract::cashtags(&chars), "cashtag"),
                _ => unreachable!("listed above"),
            };
            let expected = if case.expected.is_null() { Value::Sequence(vec![]) } else { case.expected.clone() };
            if same(&got, &expected) {
                ok += 1;
            } else {
                failures.push(format!(
                    "[{section}] {}\n    text:     {:?}\n    expected: {}\n    got:      {}",
                    case.description,
                    case.text,
                    serde_yaml::to_string(&expected).unwrap_or_default().replace('\n', " "),
                    serde_yaml::to_string(&got).unwrap_or_default().replace('\n', " ")
                ));
            }
        }
        println!("{section:<32} {ok:>3}/{:<3}", cases.len());
        total += cases.len();
        passed += ok;
    }
    println!("twitter-text conformance: {passed}/{total} cases pass");
    assert!(failures.is_empty(), "{} of {total} cases fail:\n{}", failures.len(), failures.join("\n"));
}
