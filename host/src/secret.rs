//! Secrets (API keys, tokens, passwords): read from the environment or a file
//! named in the pipeline, never written in it, never printed.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// A secret value. `Debug` and `Display` print `*****`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(*****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// Where a secret comes from: `{ env = "NAME" }` or `{ file = "path" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretRef {
    Env { env: String },
    File { file: PathBuf },
}

impl SecretRef {
    /// Read the secret; the error names the variable or file, never the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env { env } => std::env::var(env)
                .map(Secret)
                .map_err(|_| format!("environment variable {env} is not set (or not valid UTF-8)")),
            SecretRef::File { file } => std::fs::read_to_string(file)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| format!("cannot read secret file {}: {e}", file.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_and_resolved_from_file() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "***** Secret(*****)");
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("token");
        std::fs::write(&p, "abc\n").expect("write");
        assert_eq!(SecretRef::File { file: p }.resolve().expect("read").expose(), "abc");
        let e = SecretRef::Env { env: "TRAPTOR_SURELY_UNSET_VAR".into() }.resolve().expect_err("unset");
        assert!(e.contains("TRAPTOR_SURELY_UNSET_VAR"));
    }
}
