//! SIGHUP: reload the rules at once (instead of the default: the process
//! ends), and read the pipeline file again. When only `[[stages]]` changed,
//! the stages are rebuilt (plugins compiled or taken from the cache, each
//! config checked by its `init`) and swapped between batches: no post is lost
//! or repeated and the source's connection stays up. Any other change is
//! reported as needing a restart (logged, counted) and nothing changes.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::LoadedConfig;
use crate::pipeline::StageSet;
use crate::plugins::stages;
use crate::telemetry::Metrics;

/// `plugin promote` and the admin listener's promote: the stage's shadow
/// candidate becomes its plugin in the pipeline file (see
/// [`crate::plugins::shadow::promoted_text`]). The new file is written
/// beside the old one and checked, the lock (when there is one) is worked
/// out for the promoted stage only (the others keep their pins), and only
/// then is the file replaced — its permissions kept, through a symbolic
/// link to the file it names — and the lock written. One promotion at a
/// time. Returns the promoted plugin.
pub fn promote_stage(path: &std::path::Path, stage: &str) -> Result<String, String> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let shown = path.display();
    LoadedConfig::load(path).map_err(|e| e.to_string())?;
    let real = std::fs::canonicalize(path).map_err(|e| format!("{shown}: {e}"))?;
    let text = std::fs::read_to_string(&real).map_err(|e| format!("{shown}: {e}"))?;
    let (new_text, plugin) =
        crate::plugins::shadow::promoted_text(&text, stage).map_err(|e| format!("{shown}: {e}"))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let file_name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = real.with_file_name(format!(".{file_name}.promote-{}-{nanos}", std::process::id()));
    let result = write_promoted(path, &real, &tmp, &new_text, stage);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    tracing::info!(stage, plugin = %plugin, pipeline = %shown, "promoted");
    Ok(plugin)
}

/// [`promote_stage`]'s writing: `tmp` checked, the lock worked out, then both in place.
fn write_promoted(
    path: &std::path::Path,
    real: &std::path::Path,
    tmp: &std::path::Path,
    text: &str,
    stage: &str,
) -> Result<(), String> {
    use crate::plugins::oci::Lock;
    std::fs::write(tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    if let Ok(m) = std::fs::metadata(real) {
        let _ = std::fs::set_permissions(tmp, m.permissions());
    }
    let cfg = LoadedConfig::load(tmp).map_err(|e| format!("the promoted file would not load: {e}"))?;
    let lock = match Lock::read_for(path).map_err(|e| e.to_string())? {
        Some((mut lock, lock_path)) => {
            let c = &cfg.config;
            let promoted: Vec<_> = c.stages.iter().filter(|s| s.name == stage).cloned().collect();
            let fresh = stages::lock_stages(&promoted, c.pipeline.plugin_cache_dir.clone())
                .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
            for new in fresh.stages {
                match lock.stages.iter_mut().find(|s| s.name == new.name) {
                    Some(old) => *old = new,
                    None => lock.stages.push(new),
                }
            }
            Some((lock, lock_path))
        }
        None => None,
    };
    std::fs::rename(tmp, real).map_err(|e| format!("cannot replace {}: {e}", real.display()))?;
    if let Some((lock, lock_path)) = lock {
        lock.write(&lock_path).map_err(|e| e.to_string())?;
        tracing::info!(file = %lock_path.display(), "lock written again (the promoted stage's pin)");
    }
    Ok(())
}

/// What a SIGHUP acts on.
#[derive(Debug)]
pub(super) struct Hangup {
    /// Wakes the rules store.
    pub reload: Arc<Notify>,
    pub path: PathBuf,
    /// The file as it runs (environment substituted).
    pub text: String,
    pub stages: Arc<ArcSwap<StageSet>>,
    pub metrics: Arc<Metrics>,
    /// Rings as a SIGHUP does (the admin listener's promote).
    pub trigger: Arc<Notify>,
}

/// What changed between two versions of the pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Nothing,
    OnlyStages,
    /// Something a running pipeline cannot take (sources, sinks, rules …).
    NeedsRestart,
}

/// Compare two pipeline files as TOML (comments and layout do not count).
pub(super) fn change(before: &str, after: &str) -> Change {
    let (Ok(mut a), Ok(mut b)) = (before.parse::<toml::Table>(), after.parse::<toml::Table>()) else {
        return Change::NeedsRestart;
    };
    let (sa, sb) = (a.remove("stages"), b.remove("stages"));
    match (a == b, sa == sb) {
        (false, _) => Change::NeedsRestart,
        (true, true) => Change::Nothing,
        (true, false) => Change::OnlyStages,
    }
}

/// SIGHUP, listened for from the start of a run (so that from then on it no
/// longer ends the process), acted on once the pipeline runs.
#[cfg(unix)]
pub(super) struct Listener(Option<tokio::signal::unix::Signal>);
#[cfg(not(unix))]
pub(super) struct Listener;

impl Listener {
    pub(super) fn new() -> Listener {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(s) => Listener(Some(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP");
                    Listener(None)
                }
            }
        }
        #[cfg(not(unix))]
        Listener
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Listener(SIGHUP)")
    }
}

pub(super) async fn on_hangup(listener: Listener, mut h: Hangup, stop: CancellationToken) {
    #[cfg(unix)]
    {
        let Listener(Some(mut hup)) = listener else { return };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
                () = h.trigger.notified() => tracing::info!("the admin listener asked for a reload (as SIGHUP)"),
            }
            tracing::info!("SIGHUP: reloading the rules");
            h.reload.notify_one();
            reread(&mut h).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (listener, h);
        stop.cancelled().await;
    }
}

/// Read the pipeline file again and apply what can be applied.
async fn reread(h: &mut Hangup) {
    let now = match LoadedConfig::load(&h.path) {
        Ok(now) => now,
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP: the pipeline file no longer loads (the running one stays)");
            return;
        }
    };
    match change(&h.text, &now.text) {
        Change::Nothing => {}
        Change::NeedsRestart => {
            Metrics::add(&h.metrics.changes_needing_restart, 1);
            tracing::warn!(
                pipeline = %h.path.display(),
                "the pipeline file changed beyond [[stages]]; only rules and stages reload on SIGHUP: restart to apply it"
            );
        }
        Change::OnlyStages => {
            let (configs, cache) = (now.config.stages.clone(), now.config.pipeline.plugin_cache_dir.clone());
            let path = h.path.clone();
            let built = tokio::task::spawn_blocking(move || stages::load_all(&configs, cache, &path)).await;
            match built {
                Ok(Ok(new)) => {
                    let old = h.stages.load_full();
                    let names: Vec<String> = new.iter().map(|s| s.name.to_string()).collect();
                    super::log_stages(
                        &old.stages.iter().map(|s| (s.name.to_string(), s.metrics.snapshot())).collect::<Vec<_>>(),
                    );
                    h.stages.store(Arc::new(StageSet::new(old.generation + 1, new)));
                    h.text = now.text;
                    tracing::info!(stages = ?names, "SIGHUP: stages rebuilt; they apply from the next batch");
                }
                Ok(Err(errors)) => {
                    for e in &errors {
                        tracing::error!(error = %e, "SIGHUP: a stage cannot be built");
                    }
                    tracing::warn!("SIGHUP: the running stages stay");
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: building the stages failed; the running ones stay"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_to_the_stages_can_be_applied() {
        let base = "[source]\ntype = \"synthetic\"\n\n[[stages]]\nname = \"s\"\nplugin = \"a.wasm\"\n";
        assert_eq!(change(base, &format!("# a comment\n{base}")), Change::Nothing);
        assert_eq!(change(base, &base.replace("a.wasm", "b.wasm")), Change::OnlyStages);
        assert_eq!(change(base, &format!("{base}config = {{ k = 1 }}\n")), Change::OnlyStages);
        assert_eq!(change(base, &base.replace("synthetic", "replay")), Change::NeedsRestart);
        assert_eq!(change(base, &base.replace("synthetic", "replay").replace("a.wasm", "b")), Change::NeedsRestart);
        assert_eq!(change(base, "not toml ["), Change::NeedsRestart);
    }
}
