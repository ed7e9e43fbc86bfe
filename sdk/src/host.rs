//! The host's imports (`traptor:plugin/host`: `log`, `counter`). In a
//! component they call the host; on native targets (a plugin author's
//! `cargo test`) they record on the calling thread, for
//! [`crate::testing`] to read back.

#[cfg(target_arch = "wasm32")]
use crate::Level;

#[cfg(target_arch = "wasm32")]
pub(crate) fn log(level: Level, message: &str, fields: &[(String, String)]) {
    crate::bindings::traptor::plugin::host::log(level, message, fields);
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn counter(name: &str, delta: u64) {
    crate::bindings::traptor::plugin::host::counter(name, delta);
}

pub use recorder::{LogRecord, counters, logs};
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use recorder::{counter, log};

/// Native stand-ins that remember each call (in a component nothing is
/// recorded and the readers return nothing).
mod recorder {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use crate::Level;

    /// One recorded log call: level, message, fields.
    pub type LogRecord = (Level, String, Vec<(String, String)>);

    thread_local! {
        static LOGS: RefCell<Vec<LogRecord>> = const { RefCell::new(Vec::new()) };
        static COUNTERS: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn log(level: Level, message: &str, fields: &[(String, String)]) {
        LOGS.with(|l| l.borrow_mut().push((level, message.to_owned(), fields.to_vec())));
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn counter(name: &str, delta: u64) {
        COUNTERS.with(|c| *c.borrow_mut().entry(name.to_owned()).or_default() += delta);
    }

    /// Log records made on this thread so far: (level, message, fields).
    pub fn logs() -> Vec<LogRecord> {
        LOGS.with(|l| l.borrow().clone())
    }

    /// Counters bumped on this thread so far.
    pub fn counters() -> BTreeMap<String, u64> {
        COUNTERS.with(|c| c.borrow().clone())
    }
}
