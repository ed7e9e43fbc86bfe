//! Glue between the exported WIT functions and a [`Stage`]. Not for direct use.
//!
//! The component is single-threaded, so the stage instance lives in a
//! thread-local. The host imports are in [`crate::host`].

use std::any::Any;
use std::cell::RefCell;

use crate::bindings::traptor::plugin::types as wit;
use crate::post::Batch;
use crate::{Description, Fields, Outcome, Stage};

pub use wit::{Batch as WitBatch, Results as WitResults};

struct State {
    stage: Box<dyn Any>,
    reads: Fields,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// `describe` export: the stage's description with the JSON Schema of its
/// `Config` type.
pub fn describe<T: Stage>() -> Description {
    let mut d = T::describe();
    d.config_schema =
        serde_json::to_string(&schemars::schema_for!(T::Config)).unwrap_or_else(|_| r#"{"type":"object"}"#.to_owned());
    d
}

/// `init` export: build the stage from its JSON configuration; answers the
/// fields this configuration reads.
pub fn init<T: Stage>(config: &str) -> Result<Fields, String> {
    let json = if config.trim().is_empty() { "{}" } else { config };
    let config: T::Config = serde_json::from_str(json).map_err(|e| config_error(&e))?;
    let stage = T::init(config)?;
    let reads = stage.reads() & T::describe().reads;
    STATE.with(|s| *s.borrow_mut() = Some(State { stage: Box::new(stage), reads }));
    Ok(reads)
}

/// `process` export: the changes to the batch (kept posts are not named).
pub fn process<T: Stage>(batch: wit::Batch) -> wit::Results {
    let mut results = wit::Results { data: Vec::new(), changes: Vec::new() };
    STATE.with(|s| {
        let mut guard = s.borrow_mut();
        let Some(state) = guard.as_mut() else {
            return fail_all(&mut results, batch.count as usize, "stage used before init");
        };
        let reads = state.reads;
        let Some(stage) = state.stage.downcast_mut::<T>() else {
            return fail_all(&mut results, batch.count as usize, "stage used before init");
        };
        let view = match Batch::new(&batch, reads) {
            Ok(v) => v,
            Err(e) => return fail_all(&mut results, batch.count as usize, &e),
        };
        let mut outcomes = stage.process_batch(&view);
        // Keep the ABI promise even if an override miscounts.
        let n = batch.count as usize;
        outcomes.resize_with(n, || Outcome::Error("stage returned too few outcomes".into()));
        for (i, o) in outcomes.into_iter().take(n).enumerate() {
            push(&mut results, i, o);
        }
    });
    results
}

fn fail_all(results: &mut wit::Results, posts: usize, why: &str) {
    for i in 0..posts {
        push(results, i, Outcome::Error(why.to_owned()));
    }
}

/// Append one outcome to the results: nothing for `Keep`; an enrichment as
/// the JSON object of its fields.
fn push(results: &mut wit::Results, post: usize, outcome: Outcome) {
    let data = &mut results.data;
    let start = data.len();
    let action = match outcome {
        Outcome::Keep => return,
        Outcome::Enrich(fields) => {
            data.push(b'{');
            for (n, f) in fields.iter().enumerate() {
                if n > 0 {
                    data.push(b',');
                }
                // A name is always a valid JSON string.
                let _ = serde_json::to_writer(&mut *data, &f.name);
                data.push(b':');
                data.extend_from_slice(f.value.trim().as_bytes());
            }
            data.push(b'}');
            wit::Action::Enrich
        }
        Outcome::Drop(reason) => {
            data.extend_from_slice(reason.as_bytes());
            wit::Action::Drop
        }
        Outcome::Error(e) => {
            data.extend_from_slice(e.as_bytes());
            wit::Action::Error
        }
    };
    let text = wit::Span { start: start as u32, len: (data.len() - start) as u32 };
    results.changes.push(wit::Change { post: post as u32, action, text });
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
