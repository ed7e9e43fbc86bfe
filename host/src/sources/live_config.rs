//! The keys every live source has (`stall_timeout_secs`, `dedup_window`,
//! `backoff_scale`), declared once in `live_source_config!`, and the driver
//! settings made from them.

use std::time::Duration;

use crate::component::Problems;

/// Default number of dedup keys remembered.
pub const DEFAULT_DEDUP_WINDOW: usize = 100_000;

/// The `dedup_window` default of the live sources (`live_source_config!`).
pub(crate) fn default_dedup_window() -> usize {
    DEFAULT_DEDUP_WINDOW
}

/// A live source's `[source]` struct: its own keys, then the three every
/// live source has, declared here once (each source says what its stall
/// timeout and dedup window mean and default to), with `live_settings()` and
/// `check_live()` from them. One per module: it defines the module's
/// `default_stall_timeout_secs()`.
///
/// ```ignore
/// live_source_config! {
///     /// `[source]` with `type = "…"`.
///     pub struct XConfig {
///         /// API root.
///         #[serde(default = "default_base")]
///         pub base_url: String,
///     }
///     stall_timeout_secs: "No data for this long: reconnect.", 90 s;
///     // Optional: without it, post ids and `default_dedup_window()`.
///     dedup_window: "Events remembered after a reconnect.", "default_dedup_window";
/// }
/// ```
macro_rules! live_source_config {
    // Without a `dedup_window` line: post ids, the default window.
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
        stall_timeout_secs: $stall_doc:literal, $stall_default:literal s;
    ) => {
        $crate::sources::live_config::live_source_config! {
            $(#[$meta])*
            pub struct $name { $($body)* }
            stall_timeout_secs: $stall_doc, $stall_default s;
            dedup_window: "Post ids remembered to drop redeliveries after a reconnect.",
                "crate::sources::live_config::default_dedup_window";
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty, )*
        }
        stall_timeout_secs: $stall_doc:literal, $stall_default:literal s;
        dedup_window: $dedup_doc:literal, $dedup_default:literal;
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            #[doc = $stall_doc]
            #[serde(default = "default_stall_timeout_secs")]
            pub stall_timeout_secs: u64,
            #[doc = $dedup_doc]
            #[serde(default = $dedup_default)]
            pub dedup_window: usize,
            /// Multiplies every reconnect wait (tests only; keep 1).
            #[serde(default = "crate::component::one")]
            pub backoff_scale: f64,
        }

        /// `stall_timeout_secs` unless set.
        fn default_stall_timeout_secs() -> u64 {
            $stall_default
        }

        impl $name {
            /// The driver's settings from the keys every live source has.
            fn live_settings(&self) -> $crate::sources::live_config::LiveSettings {
                $crate::sources::live_config::LiveSettings::new(self.stall_timeout_secs, self.dedup_window, self.backoff_scale)
            }

            /// The pure checks of the keys every live source has.
            fn check_live(&self, p: &mut $crate::component::Problems<'_>) {
                $crate::sources::live_config::LiveSettings::check(p, self.stall_timeout_secs, self.dedup_window, self.backoff_scale);
            }
        }
    };
}
pub(crate) use live_source_config;

/// The driver's settings, from the source's keys.
#[derive(Debug, Clone, Copy)]
pub struct LiveSettings {
    /// No data and no keep-alive for this long: reconnect.
    pub stall_timeout: Duration,
    /// Dedup keys remembered.
    pub dedup_window: usize,
    /// Multiplies every reconnect wait (tests only; 1 in production).
    pub backoff_scale: f64,
    /// A rule change reconnects at most this often after a connect.
    pub min_rule_reconnect: Duration,
    /// Full jitter on reconnect waits (off only where a test asserts exact waits).
    pub jitter: bool,
}

impl LiveSettings {
    pub fn new(stall_timeout_secs: u64, dedup_window: usize, backoff_scale: f64) -> LiveSettings {
        LiveSettings {
            stall_timeout: Duration::from_secs(stall_timeout_secs),
            dedup_window,
            backoff_scale,
            min_rule_reconnect: Duration::from_secs(10),
            jitter: true,
        }
    }

    /// The pure checks of the keys every live source has.
    pub fn check(problems: &mut Problems<'_>, stall_timeout_secs: u64, dedup_window: usize, backoff_scale: f64) {
        problems.range("stall_timeout_secs", stall_timeout_secs, 1, 3600);
        problems.range("dedup_window", dedup_window as u64, 1, 10_000_000);
        problems.backoff_scale("backoff_scale", backoff_scale);
    }
}
