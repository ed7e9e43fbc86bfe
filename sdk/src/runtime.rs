//! Glue between the exported WIT functions and a [`Stage`]. Not for direct use.
//!
//! The component is single-threaded, so the stage instance lives in a
//! thread-local. The host imports are in [`crate::host`].

use std::any::Any;
use std::cell::RefCell;

use crate::{Description, Outcome, Post, Stage};

thread_local! {
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// `describe` export: the stage's description with the JSON Schema of its
/// `Config` type.
pub fn describe<T: Stage>() -> Description {
    let mut d = T::describe();
    d.config_schema =
        serde_json::to_string(&schemars::schema_for!(T::Config)).unwrap_or_else(|_| r#"{"type":"object"}"#.to_owned());
    d
}

/// `init` export: build the stage from its JSON configuration.
pub fn init<T: Stage>(config: &str) -> Result<(), String> {
    let json = if config.trim().is_empty() { "{}" } else { config };
    let config: T::Config = serde_json::from_str(json).map_err(|e| config_error(&e))?;
    let stage = T::init(config)?;
    STATE.with(|s| *s.borrow_mut() = Some(Box::new(stage)));
    Ok(())
}

/// `process` export: one outcome per post.
pub fn process<T: Stage>(batch: Vec<Post>) -> Vec<Outcome> {
    STATE.with(|s| {
        let mut guard = s.borrow_mut();
        match guard.as_mut().and_then(|b| b.downcast_mut::<T>()) {
            Some(stage) => {
                let mut out = stage.process_batch(&batch);
                // Keep the ABI promise even if an override miscounts.
                out.resize_with(batch.len(), || Outcome::Error("stage returned too few outcomes".into()));
                out.truncate(batch.len());
                out
            }
            None => batch.iter().map(|_| Outcome::Error("stage used before init".into())).collect(),
        }
    })
}

/// Forget the stage (tests).
pub fn reset() {
    STATE.with(|s| *s.borrow_mut() = None);
}

/// serde's message, in the words of a pipeline file: the key at fault, no
/// JSON positions (the host wrote that JSON, not the user).
fn config_error(e: &serde_json::Error) -> String {
    let m = e.to_string();
    let m = m.split(" at line ").next().unwrap_or(&m);
    if let Some(k) = m.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        return format!("config key `{k}` is required");
    }
    if let Some(rest) = m.strip_prefix("unknown field `")
        && let Some((k, expected)) = rest.split_once('`')
    {
        return format!("unknown config key `{k}`{}", expected.replacen(", expected", "; expected", 1));
    }
    if let Some(rest) = m.strip_prefix("invalid type: ").or_else(|| m.strip_prefix("invalid value: ")) {
        return format!("configuration: {rest}");
    }
    format!("configuration: {m}")
}

#[cfg(test)]
mod tests {
    use super::config_error;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct C {
        languages: Vec<String>,
        #[serde(default)]
        keep: bool,
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = |j: &str| config_error(&serde_json::from_str::<C>(j).expect_err(j));
        assert_eq!(e("{}"), "config key `languages` is required");
        assert_eq!(
            e(r#"{"languages":[],"langauges":1}"#),
            "unknown config key `langauges`; expected `languages` or `keep`"
        );
        assert!(
            e(r#"{"languages":"en"}"#).starts_with("configuration: string \"en\", expected a sequence"),
            "{}",
            e(r#"{"languages":"en"}"#)
        );
    }
}
