//! # traptor-sdk: write a traptor stage in Rust
//!
//! A stage is a WebAssembly component that receives batches of posts and
//! answers, for each post, with an [`Outcome`]: keep it, add fields to it
//! (they land under `traptor.enrichments.<stage name>`), drop it, or report an
//! error. The ABI is the WIT package `traptor:plugin` ([`ABI_VERSION`], this
//! crate's `wit/` folder); this crate hides it behind one trait and one macro.
//!
//! ## A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "shouting"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! traptor-sdk = { path = "../traptor/sdk" }   # or { git = "…" }
//! serde = { version = "1", features = ["derive"] }
//! schemars = "1"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//! use traptor_sdk::{Description, Enrichment, Fields, Outcome, Post, Stage, StageKind, export_stage};
//!
//! /// Flags posts written in capitals.
//! pub struct Shouting {
//!     min_letters: usize,
//! }
//!
//! /// The stage's `config` table: written once, checked by the SDK (an
//! /// unknown or mistyped key refuses the pipeline), and described to the
//! /// host as a JSON Schema (`traptor-host plugin inspect`).
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! pub struct ShoutingConfig {
//!     /// Posts with fewer letters are never shouting.
//!     #[serde(default = "five")]
//!     min_letters: usize,
//! }
//!
//! fn five() -> usize {
//!     5
//! }
//!
//! impl Stage for Shouting {
//!     type Config = ShoutingConfig;
//!
//!     fn describe() -> Description {
//!         Description::new("shouting", env!("CARGO_PKG_VERSION"), StageKind::Enricher)
//!             .summary("Flags posts written in capital letters")
//!             // The host sends only the fields a stage reads.
//!             .reads(Fields::TEXT)
//!     }
//!
//!     fn init(config: ShoutingConfig) -> Result<Self, String> {
//!         Ok(Shouting { min_letters: config.min_letters })
//!     }
//!
//!     fn process(&mut self, post: &Post) -> Outcome {
//!         let letters: Vec<char> = post.text().chars().filter(|c| c.is_alphabetic()).collect();
//!         let upper = letters.iter().filter(|c| c.is_uppercase()).count();
//!         let shouting = letters.len() >= self.min_letters && upper == letters.len();
//!         Enrichment::new().field("shouting", shouting).into()
//!     }
//! }
//!
//! export_stage!(Shouting);
//!
//! // The plugin's own tests run natively with `cargo test`:
//! use traptor_sdk::testing::{PostBuilder, run};
//! let out = run::<Shouting>(r#"{"min_letters": 3}"#, &[PostBuilder::new("1", "HELLO WORLD").build()]).unwrap();
//! assert_eq!(out[0], Enrichment::new().field("shouting", true).into());
//! // A typo in the pipeline's config is refused, naming the key.
//! let err = run::<Shouting>(r#"{"min_leters": 3}"#, &[]).unwrap_err();
//! assert!(err.contains("unknown config key `min_leters`"), "{err}");
//! // A field read but not declared fails loudly, here before in production.
//! struct Sloppy;
//! impl Stage for Sloppy {
//!     type Config = traptor_sdk::Config;
//!     fn describe() -> Description {
//!         Description::new("sloppy", "1.0.0", StageKind::Filter).reads(Fields::TEXT)
//!     }
//!     fn init(_: traptor_sdk::Config) -> Result<Self, String> {
//!         Ok(Sloppy)
//!     }
//!     fn process(&mut self, post: &Post) -> Outcome {
//!         if post.lang() == Some("en") { Outcome::Keep } else { Outcome::Drop("not English".into()) }
//!     }
//! }
//! let read = std::panic::catch_unwind(|| run::<Sloppy>("{}", &[PostBuilder::new("1", "hi").build()]));
//! assert!(read.is_err());
//! // The schema the host shows is derived from the struct.
//! let d = traptor_sdk::runtime::describe::<Shouting>();
//! assert!(d.config_schema.contains("min_letters") && d.config_schema.contains("never shouting"));
//! ```

// The generated bindings name this crate by its external name.
extern crate self as traptor_sdk;

#[doc(hidden)]
#[allow(unsafe_code, missing_debug_implementations, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__traptor_export_plugin",
        default_bindings_module: "traptor_sdk::bindings",
        runtime_path: "traptor_sdk::__wit_bindgen::rt",
        additional_derives: [PartialEq],
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::traptor::plugin::host::Level;
pub use bindings::traptor::plugin::types::{Description, Fields, Point, StageKind};
pub use schemars;
pub use serde_json;

mod config;
mod host;
mod outcome;
mod post;
#[doc(hidden)]
pub mod runtime;
pub mod testing;

pub use config::Config;
pub use outcome::{Enrichment, Field, Outcome};
pub use post::{Batch, MatchedRule, Post, Strings};

/// The ABI version this SDK implements: the version of the WIT package
/// `traptor:plugin`, read from `wit/plugin.wit` (in this crate) when it is built.
/// That `package` line is the one place the version is written; the host
/// takes it from here.
pub const ABI_VERSION: &str = wit_package_version(include_str!("../wit/plugin.wit"));

/// The version in a WIT document's `package <name>@<version>;` line,
/// evaluated at compile time (a WIT file without one fails the build).
#[doc(hidden)]
pub const fn wit_package_version(wit: &str) -> &str {
    const PACKAGE: &[u8] = b"package ";
    let b = wit.as_bytes();
    let mut i = 0;
    // The first line that starts with `package `.
    while i + PACKAGE.len() <= b.len() {
        let line_start = i == 0 || b[i - 1] == b'\n';
        let mut j = 0;
        while j < PACKAGE.len() && b[i + j] == PACKAGE[j] {
            j += 1;
        }
        if line_start && j == PACKAGE.len() {
            let mut at = i + j;
            while at < b.len() && b[at] != b'@' && b[at] != b';' {
                at += 1;
            }
            let mut end = at;
            while end < b.len() && b[end] != b';' {
                end += 1;
            }
            assert!(at < end && end < b.len(), "the WIT package line has no @version");
            let (_, rest) = b.split_at(at + 1);
            let (version, _) = rest.split_at(end - at - 1);
            return match core::str::from_utf8(version) {
                Ok(v) => v,
                Err(_) => panic!("the WIT package version is not UTF-8"),
            };
        }
        i += 1;
    }
    panic!("no `package` line in the WIT document")
}

/// What a plugin author implements.
pub trait Stage: Sized + 'static {
    /// The configuration (the pipeline's `config` table), written once as a
    /// struct: `#[derive(Deserialize, JsonSchema)]` with
    /// `#[serde(deny_unknown_fields)]` (a typo in a pipeline file is then
    /// refused, naming the key). The schema `describe` reports is derived
    /// from it. [`Config`] takes any table, for stages that read it freely.
    type Config: serde::de::DeserializeOwned + schemars::JsonSchema;

    /// Name, version, kind and summary (the configuration schema is added
    /// from [`Stage::Config`]).
    fn describe() -> Description;

    /// Build the stage from its configuration. An `Err` refuses it (a
    /// missing or mistyped key is refused before this is called); say which
    /// key is wrong and why.
    fn init(config: Self::Config) -> Result<Self, String>;

    /// The fields this configured stage reads: by default all that
    /// [`Stage::describe`] declares. Narrow it when a configuration needs
    /// fewer (the host then sends less); more than the description declares
    /// is ignored.
    fn reads(&self) -> Fields {
        Self::describe().reads
    }

    /// Decide the outcome of one post.
    fn process(&mut self, post: &Post<'_>) -> Outcome;

    /// Decide the outcomes of a batch (one per post, in order). The default
    /// calls [`Stage::process`] for each post.
    fn process_batch(&mut self, batch: &Batch<'_>) -> Vec<Outcome> {
        batch.posts().map(|p| self.process(&p)).collect()
    }
}

impl Description {
    /// A description with an empty summary that reads no field (add them
    /// with [`Description::reads`]); the export fills the schema in from the
    /// stage's `Config` type.
    pub fn new(name: &str, version: &str, kind: StageKind) -> Description {
        Description {
            name: name.to_owned(),
            version: version.to_owned(),
            kind,
            summary: String::new(),
            config_schema: r#"{"type":"object"}"#.to_owned(),
            reads: Fields::empty(),
        }
    }
    /// The fields the stage reads (`Fields::TEXT | Fields::HASHTAGS`): the
    /// host sends only those; reading another one panics, naming it.
    pub fn reads(mut self, fields: Fields) -> Description {
        self.reads |= fields;
        self
    }
    pub fn summary(mut self, s: &str) -> Description {
        self.summary = s.to_owned();
        self
    }
    /// Ask for each post's original JSON ([`Post::raw`]); the same as
    /// `.reads(Fields::RAW)`.
    pub fn wants_raw(mut self, yes: bool) -> Description {
        if yes {
            self.reads |= Fields::RAW;
        } else {
            self.reads &= !Fields::RAW;
        }
        self
    }
}

/// Log through the host, attributed to this stage.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    host::log(level, message, &fields);
}

/// Add `delta` to the stage's counter `name`.
pub fn counter(name: &str, delta: u64) {
    host::counter(name, delta);
}

/// Export a [`Stage`] implementation as the component's `stage` interface.
/// Invoke once, at the crate root.
#[macro_export]
macro_rules! export_stage {
    ($t:ty) => {
        #[doc(hidden)]
        #[allow(dead_code)]
        pub struct __TraptorStageExport;

        impl $crate::bindings::exports::traptor::plugin::stage::Guest for __TraptorStageExport {
            fn describe() -> $crate::Description {
                $crate::runtime::describe::<$t>()
            }
            fn init(config: ::std::string::String) -> ::std::result::Result<$crate::Fields, ::std::string::String> {
                $crate::runtime::init::<$t>(&config)
            }
            fn process(batch: $crate::runtime::WitBatch) -> $crate::runtime::WitResults {
                $crate::runtime::process::<$t>(batch)
            }
        }

        // Only a wasm component exports the ABI symbols; natively (unit tests)
        // their names would not even link.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__traptor_export_plugin!(__TraptorStageExport with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::wit_package_version;

    #[test]
    fn the_abi_version_is_the_wit_package_version() {
        assert_eq!(wit_package_version("package traptor:plugin@0.1.0;\n"), "0.1.0");
        assert_eq!(
            wit_package_version(
                "/// the package a:b@9.9.9 is not this\n// comment\npackage a:b@1.2.3-rc.1;\ninterface x {}\n"
            ),
            "1.2.3-rc.1"
        );
        let wit = include_str!("../wit/plugin.wit");
        assert!(wit.lines().any(|l| l == format!("package traptor:plugin@{};", super::ABI_VERSION)), "{wit}");
    }
}
