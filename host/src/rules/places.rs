//! `rules import --geojson FILE --property NAME`: one `locations` rule per
//! feature of a GeoJSON `FeatureCollection` (a country, a city boundary),
//! named by one of its properties. Pure: text in, rules out.

use serde_json::Value;

use super::{Rule, RuleType};

/// Why a GeoJSON file gave no rules at all.
#[derive(Debug, thiserror::Error)]
pub enum PlacesError {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("expected a GeoJSON FeatureCollection (an object with `features`), or a single Feature")]
    NotFeatures,
}

/// The rules made, and the features skipped with why.
#[derive(Debug, Default)]
pub struct Places {
    pub rules: Vec<Rule>,
    pub skipped: Vec<String>,
}

/// One rule per Polygon/MultiPolygon feature: `rule_id` `geo-<slug of the
/// property>` (made unique), `value` the geometry as compact GeoJSON,
/// `rule_type` locations, `orig_type` geo, `tag` (`tag`, else the
/// property's value) and the property itself as `name`.
pub fn from_geojson(
    text: &str,
    property: &str,
    tag: Option<&str>,
    max_boxes: Option<usize>,
) -> Result<Places, PlacesError> {
    let doc: Value = serde_json::from_str(text)?;
    let features: Vec<&Value> = match doc.get("type").and_then(Value::as_str) {
        Some("FeatureCollection") => {
            doc.get("features").and_then(Value::as_array).ok_or(PlacesError::NotFeatures)?.iter().collect()
        }
        Some("Feature") => vec![&doc],
        _ => return Err(PlacesError::NotFeatures),
    };
    let mut out = Places::default();
    let mut ids = std::collections::HashSet::new();
    for (i, f) in features.iter().enumerate() {
        let name = match f.get("properties").and_then(|p| p.get(property)) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(v @ Value::Number(_)) => v.to_string(),
            _ => {
                out.skipped.push(format!("feature {i}: no property {property:?} (a string or number); skipped"));
                continue;
            }
        };
        let geometry = match f.get("geometry") {
            Some(g) if matches!(g.get("type").and_then(Value::as_str), Some("Polygon" | "MultiPolygon")) => g,
            _ => {
                out.skipped
                    .push(format!("feature {i} ({name}): the geometry is not a Polygon or MultiPolygon; skipped"));
                continue;
            }
        };
        let base = format!("geo-{}", slug(&name));
        let mut id = base.clone();
        let mut n = 2;
        while !ids.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        let mut fields = vec![
            ("rule_id".to_owned(), id),
            ("value".to_owned(), geometry.to_string()),
            ("rule_type".to_owned(), RuleType::Locations.to_string()),
            ("orig_type".to_owned(), "geo".to_owned()),
            ("tag".to_owned(), tag.map_or_else(|| name.clone(), str::to_owned)),
            ("name".to_owned(), name.clone()),
        ];
        if let Some(m) = max_boxes {
            fields.push(("max_boxes".to_owned(), m.to_string()));
        }
        match Rule::from_fields(fields, RuleType::Locations) {
            Ok(r) => out.rules.push(r),
            Err(e) => out.skipped.push(format!("feature {i} ({name}): {e}; skipped")),
        }
    }
    Ok(out)
}

/// Lower-case letters and digits, other runs as one `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t = out.trim_matches('-');
    if t.is_empty() { "place".to_owned() } else { t.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Criterion;

    #[test]
    fn one_rule_per_feature_named_by_the_property() {
        let text = r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","properties":{"NAME":"Côte d'Ivoire"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}},
            {"type":"Feature","properties":{"NAME":"Côte d'Ivoire"},"geometry":{"type":"MultiPolygon","coordinates":[[[[5,5],[6,5],[6,6],[5,5]]]]}},
            {"type":"Feature","properties":{"NAME":"Nowhere"},"geometry":{"type":"Point","coordinates":[0,0]}},
            {"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}},
            {"type":"Feature","properties":{"NAME":"Bow tie"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[2,2],[2,0],[0,2],[0,0]]]}}
        ]}"#;
        let p = from_geojson(text, "NAME", None, Some(4)).expect("a collection");
        let ids: Vec<&str> = p.rules.iter().map(Rule::rule_id).collect();
        assert_eq!(ids, ["geo-côte-d-ivoire", "geo-côte-d-ivoire-2"]);
        assert_eq!(p.rules[0].tag(), Some("Côte d'Ivoire"));
        assert!(matches!(p.rules[1].criterion(), Criterion::Polygon { .. }));
        assert!(p.rules[0].fields_json().contains(r#""max_boxes":"4""#));
        assert_eq!(p.skipped.len(), 3, "{:?}", p.skipped);
        assert!(p.skipped[0].contains("feature 2 (Nowhere)") && p.skipped[0].contains("not a Polygon"));
        assert!(p.skipped[1].contains("feature 3: no property \"NAME\""));
        assert!(p.skipped[2].contains("feature 4 (Bow tie)") && p.skipped[2].contains("self-intersection"));
    }

    #[test]
    fn not_a_collection_is_an_error() {
        assert!(matches!(from_geojson(r#"{"type":"Polygon"}"#, "n", None, None), Err(PlacesError::NotFeatures)));
        assert!(matches!(from_geojson("{", "n", None, None), Err(PlacesError::Json(_))));
    }
}
