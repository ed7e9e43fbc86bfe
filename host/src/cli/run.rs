//! `traptor-host [run] --pipeline FILE` and `validate`.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::{RunFlags, fail, runtime};
use crate::app::{self, RunOptions};
use crate::config::{IdentityOverride, LoadedConfig};
use crate::exit::Exit;

/// Run the pipeline until it ends or a signal stops it.
pub(super) fn run(pipeline: PathBuf, flags: RunFlags) -> Exit {
    let cfg = match LoadedConfig::load_with(&pipeline, flags.identity.overrides()) {
        Ok(c) => c,
        Err(e) => return fail(e, Exit::Config),
    };
    if !cfg.config.traptor.id.is_auto() {
        crate::telemetry::tag_logs(cfg.config.traptor.collector());
    }
    let Some(rt) = runtime(true) else { return Exit::Unavailable };
    let opts = RunOptions { test_mode: flags.test, admin: flags.admin };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        app::install_signal_handlers(shutdown.clone());
        loop {
            match app::run(cfg.clone(), opts.clone(), shutdown.clone()).await {
                Ok(_) => return Exit::Success,
                // `id = "auto"`: the lease went while Redis was away; stand by again.
                Err(e @ app::AppError::LeaseLost(_)) if !shutdown.is_cancelled() => {
                    tracing::warn!(error = %e, "standing by for an id again");
                }
                Err(e) => return fail(&e, e.exit()),
            }
        }
    })
}

/// Check a pipeline without running it; print what was found.
pub(super) fn validate(pipeline: &Path, identity: IdentityOverride, print: bool) -> Exit {
    let Some(rt) = runtime(false) else { return Exit::Unavailable };
    let v = rt.block_on(app::validate(pipeline, identity));
    if print && let Some(text) = &v.resolved {
        println!("{text}");
    }
    for n in &v.notes {
        println!("ok: {n}");
    }
    for w in &v.warnings {
        println!("warning: {w}");
    }
    for e in &v.errors {
        println!("error: {e}");
    }
    if v.errors.is_empty() {
        println!("valid: {}", pipeline.display());
    } else {
        println!("invalid: {} ({} error(s))", pipeline.display(), v.errors.len());
    }
    v.exit()
}
