//! Glue between the exported WIT functions and a [`Stage`]. Not for direct use.
//!
//! The component is single-threaded, so the stage instance lives in a
//! thread-local. The host imports are in [`crate::host`].

use std::any::Any;
use std::cell::RefCell;

use crate::{Config, Outcome, Post, Stage};

thread_local! {
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// `init` export: build the stage from its JSON configuration.
pub fn init<T: Stage>(config: &str) -> Result<(), String> {
    let config = Config::parse(config)?;
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
