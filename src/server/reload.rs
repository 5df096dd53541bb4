//! Reload: SIGHUP or a change of the config file (debounced) compiles a new runtime beside the running
//! one and swaps it in atomically. A config that fails to load or compile is refused, logged and
//! counted, and the running one keeps serving. In-flight requests keep the runtime they started with.

use crate::events::{Event, Kind};
use crate::pipeline::Shared;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const DEBOUNCE: Duration = Duration::from_millis(300);

/// Reloads once from `path`. Returns the error text when refused.
pub fn reload(shared: &Shared, path: &Path) -> Result<(), String> {
    let old = shared.runtime.load_full();
    let result = crate::config::load_and_compile(path, &shared.lasting, Some(&old))
        .map_err(|e| e.to_string())
        .and_then(|new| new.reloadable_from(&old).map(|()| new));
    let digest = std::fs::read(path).ok().map(|b| {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b);
        crate::observe::privacy::hex(d.as_ref())
    });
    match result {
        Ok(new) => {
            new.start(&shared.lasting);
            let events = new.events.clone();
            shared.runtime.store(Arc::new(new));
            shared.lasting.metrics.reloads.inc();
            tracing::info!("configuration reloaded");
            events.emit(reload_event(Kind::ConfigReload, "reloaded", path, digest));
            Ok(())
        }
        Err(e) => {
            shared.lasting.metrics.reload_failures.inc();
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            let mut event = reload_event(Kind::ConfigReloadFailed, "refused", path, digest);
            event = event.attr("error", e.chars().take(512).collect::<String>());
            old.events.emit(event);
            Err(e)
        }
    }
}

/// A reload's event: the file and the SHA-256 of what was read (which version was tried).
fn reload_event(kind: Kind, reason: &'static str, path: &Path, digest: Option<String>) -> Event {
    let mut e = Event::new(kind, reason).attr("file", path.display().to_string());
    if let Some(d) = digest {
        e = e.attr("config_sha256", d);
    }
    e
}

/// Starts the SIGHUP handler and the file watcher.
pub fn spawn(shared: Arc<Shared>, path: Option<PathBuf>) {
    let Some(path) = path else { return };
    // `true` = SIGHUP (always reload: certificate files may have changed), `false` = file event.
    let (tx, mut rx) = mpsc::unbounded_channel::<bool>();
    let sighup_tx = tx.clone();
    // Installed here, before the listeners report their addresses: a SIGHUP that comes early must
    // reload, not end the process (the default action of SIGHUP).
    use tokio::signal::unix::{signal, SignalKind};
    let hup = signal(SignalKind::hangup());
    if let Err(e) = &hup {
        tracing::warn!(error = %e, "cannot install the SIGHUP handler; file changes still reload");
    }
    tokio::spawn(async move {
        let Ok(mut hup) = hup else { return };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received");
            let _ = sighup_tx.send(true);
        }
    });
    let watcher = watch_file(&path, tx);
    tokio::spawn(async move {
        let _watcher = watcher; // kept alive for as long as reloads are handled
        let mut last = tokio::fs::read(&path).await.ok();
        while let Some(first) = rx.recv().await {
            tokio::time::sleep(DEBOUNCE).await;
            let mut hup = first;
            while let Ok(h) = rx.try_recv() {
                hup |= h;
            }
            // Reading and compiling (files, certificates, the key store) block: off the runtime's
            // threads, which with `workers: 1` is the one thread serving every connection.
            let (shared2, path2, seen) = (shared.clone(), path.clone(), last.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                let now = std::fs::read(&path2).ok();
                if !hup && now.is_some() && now == seen {
                    tracing::debug!("config file unchanged; reload skipped");
                    return None;
                }
                reload(&shared2, &path2).is_ok().then_some(now)
            })
            .await;
            if let Ok(Some(now)) = outcome {
                last = now;
            }
        }
    });
}

fn watch_file(path: &Path, tx: mpsc::UnboundedSender<bool>) -> Option<notify::RecommendedWatcher> {
    // Watch the directory: editors and config managers replace files by renaming over them.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    let name = path.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(ev) = event {
            if ev.paths.iter().any(|p| p.file_name() == Some(name.as_os_str())) && !ev.kind.is_access() {
                let _ = tx.send(false);
            }
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "config file watching unavailable; SIGHUP still reloads"))
    .ok()?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!(error = %e, "config file watching unavailable; SIGHUP still reloads"))
        .ok()?;
    Some(watcher)
}
