//! Automatic reloads: a watch on the policy directory, debounced, with a
//! periodic poll as a backstop.
//!
//! The watch is on the directory, not on the files. A Kubernetes ConfigMap
//! volume holds `..data`, a symlink to a timestamped folder, and the files
//! are symlinks through it; an update writes a new folder and renames a new
//! `..data` over the old one. A watch on a file's inode never hears of that;
//! the rename in the directory is an event here. The watcher does not parse
//! events: any of them means "look again", and [`App::reload_as`] with
//! [`ReloadKind::IfChanged`] compares a hash of the files, so an event that
//! changed nothing (or a poll) costs one directory read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::{App, ReloadKind};
use crate::config::ReloadSettings;

/// Starts watching `dir` for `app`. The task ends when it is aborted.
pub fn spawn(app: Arc<App>, dir: PathBuf, settings: ReloadSettings) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // One pending wake-up is enough: events that arrive while one waits
        // are the same news.
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let _watcher = if settings.watch {
            start_watcher(&dir, tx)
        } else {
            None
        };
        let poll = settings.poll_interval;
        let mut ticker = (!poll.is_zero()).then(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            tokio::select! {
                Some(()) = rx.recv() => debounce(&mut rx, settings.debounce).await,
                _ = tick(&mut ticker) => {}
                else => return,
            }
            // Errors are logged and counted by `reload_as`; the old snapshot
            // keeps serving.
            let _ = app.reload_as(ReloadKind::IfChanged).await;
        }
    })
}

/// Waits until no event has arrived for `quiet`.
async fn debounce(rx: &mut mpsc::Receiver<()>, quiet: Duration) {
    loop {
        match tokio::time::timeout(quiet, rx.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) | Err(_) => return,
        }
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The inotify watch; `None` (with a warning) when the system refuses one,
/// in which case the poll alone notices changes.
fn start_watcher(dir: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        // Access events (a reload reading the files) are not changes.
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot watch the policy directory ({e}); relying on the poll");
            None
        }
    }
}
