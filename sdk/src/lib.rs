//! traptor-sdk: the Rust plugin author's crate.
//!
//! Empty on purpose until the plugin ABI (`wit/`, issue "WASM plugin system")
//! lands: it exports nothing yet, so nothing can pretend to work.
