//! On-disk cache of compiled components.
//!
//! Compiling a component is the expensive step (a 20 MB Python component takes
//! seconds; deserialising its compiled form takes milliseconds). The cache key
//! is the SHA-256 of the component bytes plus the wasmtime version and the
//! engine's compatibility hash, so a new component, a new wasmtime or different
//! engine settings never reuse a stale artefact. Files are written to a
//! temporary name and renamed, and a sidecar holds the SHA-256 of the compiled
//! bytes, checked before use: a torn or corrupted file is recompiled, never
//! loaded. A cache that cannot be written only costs time (logged once).

use std::hash::{Hash, Hasher};
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::PluginError;

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let engine_hash = h.finish();
    format!("{}-{}-{engine_hash:016x}", &hex_sha256(bytes)[..32], env!("CARGO_PKG_VERSION"))
}

/// Compile `bytes` (read from `path`), using and filling the cache in `dir`.
/// Returns the component and whether it came from the cache.
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    path: &Path,
    dir: Option<&Path>,
) -> Result<(Component, bool), PluginError> {
    let compile = || {
        Component::new(engine, bytes)
            .map_err(|e| PluginError::Compile { path: path.to_owned(), message: format!("{e:#}") })
    };
    let Some(dir) = dir else { return compile().map(|c| (c, false)) };
    let k = key(engine, bytes);
    let file = dir.join(format!("{k}.cwasm"));
    let sum = dir.join(format!("{k}.sha256"));
    if let (Ok(compiled), Ok(expected)) = (std::fs::read(&file), std::fs::read_to_string(&sum)) {
        if hex_sha256(&compiled) == expected.trim() {
            // SAFETY: `deserialize` trusts its input to be what `serialize`
            // produced. These bytes were written by `serialize` below into the
            // user's own cache directory, under a name derived from the
            // component's hash and this engine's settings, and their checksum
            // matches the one recorded when they were written.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize(engine, &compiled) };
            match loaded {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "compiled plugin cache entry unusable; recompiling")
                }
            }
        } else {
            tracing::warn!(file = %file.display(), "compiled plugin cache entry corrupted; recompiling");
        }
    }
    let component = compile()?;
    if let Err(e) = store(&component, dir, &k) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the compiled-plugin cache; plugins will be recompiled at every start");
    }
    Ok((component, false))
}

fn store(component: &Component, dir: &Path, k: &str) -> std::io::Result<()> {
    let compiled = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{k}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &compiled)?;
    std::fs::write(dir.join(format!("{k}.sha256")), hex_sha256(&compiled))?;
    std::fs::rename(&tmp, dir.join(format!("{k}.cwasm")))
}
