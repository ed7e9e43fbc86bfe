//! The stage's configuration, as handed over by the host (JSON of the
//! pipeline's `config` table).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Any configuration table, with typed accessors whose errors name the key:
/// the `Stage::Config` of a stage that reads its table freely (a typed
/// struct is better: it refuses typos and documents itself in the schema).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Config(serde_json::Map<String, Value>);

impl Config {
    /// Parse the JSON text the host passes to `init`.
    pub fn parse(json: &str) -> Result<Config, String> {
        if json.trim().is_empty() {
            return Ok(Config::default());
        }
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(m)) => Ok(Config(m)),
            Ok(other) => Err(format!("configuration must be a table, got {other}")),
            Err(e) => Err(format!("configuration is not valid JSON: {e}")),
        }
    }

    /// The raw value of `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// `key`, required, converted to `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T, String> {
        let v = self.0.get(key).ok_or_else(|| format!("config key `{key}` is required"))?;
        serde_json::from_value(v.clone()).map_err(|e| format!("config key `{key}`: {e}"))
    }

    /// `key` converted to `T`, or `default` when absent.
    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(_) => self.get(key),
        }
    }

    /// Fail on keys outside `known` (catch typos in pipeline files).
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), String> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(format!("unknown config key `{k}` (known: {})", known.join(", "))),
            None => Ok(()),
        }
    }

    /// The whole object.
    pub fn as_map(&self) -> &serde_json::Map<String, Value> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_access_names_the_key() {
        let c = Config::parse(r#"{"n": 3, "langs": ["en"]}"#).expect("parses");
        assert_eq!(c.get::<u32>("n"), Ok(3));
        assert_eq!(c.get_or::<u32>("m", 7), Ok(7));
        assert!(c.get::<String>("n").expect_err("wrong type").contains("`n`"));
        assert!(c.get::<u32>("x").expect_err("missing").contains("`x` is required"));
        assert!(c.deny_unknown(&["n"]).expect_err("unknown").contains("`langs`"));
        assert!(Config::parse("[1]").is_err());
        assert_eq!(Config::parse("").expect("empty"), Config::default());
    }
}
