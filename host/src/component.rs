//! What every component's configuration shares (sources, sinks, rule stores,
//! stages): the problems a pure check reports, each naming its key; path
//! resolution against the pipeline file's directory; and [`registry!`], which
//! turns one list of `Variant(module::XxxConfig)` lines into the serde enum of
//! a component family and the one `match` that hands out the component.
//!
//! A component file holds its `XxxConfig` (serde, `deny_unknown_fields`, `///`
//! on each field), implements its family's trait (`check`, `resolve_paths`,
//! `build`), and is listed by one line in its family's registry. Depends on
//! nothing in the crate but [`crate::secret`].

use std::fmt;
use std::path::{Path, PathBuf};

use crate::secret::SecretRef;

/// The slowest rate a source may be paced to (one record in 1,000 s).
pub const MIN_RATE: f64 = 0.001;
/// The fastest pacing (above it, pacing is pointless: use 0).
pub const MAX_RATE: f64 = 10_000_000.0;

/// One thing wrong with a pipeline file, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `stages[1].name` or `rules.path`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Collects [`Problem`]s under a key prefix (`source`, `sink`, `stages[2]`),
/// so a component names its own keys and the pipeline file places them.
#[derive(Debug)]
pub struct Problems<'a> {
    prefix: String,
    out: &'a mut Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(prefix: impl Into<String>, out: &'a mut Vec<Problem>) -> Problems<'a> {
        Problems { prefix: prefix.into(), out }
    }

    /// `key` (relative to the prefix) is wrong because of `message`.
    pub fn add(&mut self, key: &str, message: impl Into<String>) {
        let key = if self.prefix.is_empty() { key.to_owned() } else { format!("{}.{key}", self.prefix) };
        self.out.push(Problem { key, message: message.into() });
    }

    /// A whole number within `min..=max` (every numeric key has a range:
    /// values past it panic, hang or exhaust memory somewhere).
    pub fn range(&mut self, key: &str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.add(key, format!("must be between {min} and {max} (got {value})"));
        }
    }

    /// A rate in records per second: 0 (no pacing) or within
    /// [`MIN_RATE`]..=[`MAX_RATE`].
    pub fn rate(&mut self, key: &str, value: f64) {
        if !(value == 0.0 || (MIN_RATE..=MAX_RATE).contains(&value)) {
            self.add(
                key,
                format!("must be 0 (no pacing) or between {MIN_RATE} and {MAX_RATE} per second, got {value}"),
            );
        }
    }

    /// A URL that must use one of `schemes` (`"https"`, `"wss"` …).
    pub fn url(&mut self, key: &str, value: &str, schemes: &[&str]) {
        if !schemes.iter().any(|s| value.strip_prefix(s).is_some_and(|rest| rest.starts_with("://"))) {
            let list: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            self.add(key, format!("{value:?} must start with {}", list.join(" or ")));
        }
    }

    /// A multiplier of reconnect waits, meant for tests (0 to 1).
    pub fn backoff_scale(&mut self, key: &str, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.add(key, "must be between 0 and 1");
        }
    }
}

/// Makes relative paths absolute against the pipeline file's directory, so a
/// pipeline runs the same from any working directory.
#[derive(Debug, Clone)]
pub struct BaseDir(PathBuf);

impl BaseDir {
    pub fn new(dir: impl Into<PathBuf>) -> BaseDir {
        BaseDir(dir.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn fix(&self, p: &mut PathBuf) {
        if p.is_relative() {
            *p = self.0.join(&*p);
        }
    }

    /// A secret read from a file: its path is relative to the pipeline file too.
    pub fn fix_secret(&self, s: &mut SecretRef) {
        if let SecretRef::File { file } = s {
            self.fix(file);
        }
    }
}

/// `#[serde(default = "yes")]`.
pub(crate) fn yes() -> bool {
    true
}

/// `#[serde(default = "one")]` for reconnect-wait multipliers.
pub(crate) fn one() -> f64 {
    1.0
}

/// Where a collector keeps its state unless told otherwise:
/// `$XDG_STATE_HOME/traptor`, else `~/.local/state/traptor`.
pub fn state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("traptor"))
}

/// One list of components → their serde enum (`type = "…"` selects the
/// variant, unknown types and keys are errors), its `type_name`, and the one
/// `match` that gives out the component behind a variant, as `&dyn` and
/// `&mut dyn` of the family's trait. Adding a component is one line in the
/// list: `Variant = "type" (module::XxxConfig),`.
macro_rules! registry {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: dyn $trait:path {
            $( $(#[$vmeta:meta])* $variant:ident = $tag:literal ($config:ty), )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(tag = "type")]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $tag)] $variant($config), )+
        }

        impl $name {
            /// The `type` key's value.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $( $name::$variant(_) => $tag, )+
                }
            }

            /// The component behind this variant.
            pub fn component(&self) -> &dyn $trait {
                match self {
                    $( $name::$variant(c) => c, )+
                }
            }

            /// The component, to resolve its paths.
            pub fn component_mut(&mut self) -> &mut dyn $trait {
                match self {
                    $( $name::$variant(c) => c, )+
                }
            }
        }
    };
}
pub(crate) use registry;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_carry_the_prefix_and_say_why() {
        let mut out = Vec::new();
        let mut p = Problems::new("source", &mut out);
        p.range("stall_timeout_secs", 0, 1, 3600);
        p.range("fine", 5, 1, 3600);
        p.url("base_url", "ftp://x", &["http", "https"]);
        p.url("ok", "https://x", &["http", "https"]);
        p.rate("rate", f64::NAN);
        p.rate("tiny", 1e-300);
        p.rate("off", 0.0);
        p.range("channel_batches", 100_000_000, 1, 1024);
        p.backoff_scale("backoff_scale", 2.0);
        let keys: Vec<&str> = out.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "source.stall_timeout_secs",
                "source.base_url",
                "source.rate",
                "source.tiny",
                "source.channel_batches",
                "source.backoff_scale"
            ]
        );
        assert_eq!(out[4].message, "must be between 1 and 1024 (got 100000000)");
        assert_eq!(out[0].message, "must be between 1 and 3600 (got 0)");
        assert_eq!(out[1].message, "\"ftp://x\" must start with http:// or https://");
    }

    #[test]
    fn relative_paths_and_secret_files_are_resolved() {
        let base = BaseDir::new("/etc/traptor");
        let mut p = PathBuf::from("rules.jsonl");
        base.fix(&mut p);
        assert_eq!(p, PathBuf::from("/etc/traptor/rules.jsonl"));
        let mut abs = PathBuf::from("/var/x");
        base.fix(&mut abs);
        assert_eq!(abs, PathBuf::from("/var/x"));
        let mut s = SecretRef::File { file: "token".into() };
        base.fix_secret(&mut s);
        assert_eq!(s, SecretRef::File { file: "/etc/traptor/token".into() });
    }
}
