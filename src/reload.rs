//! Reloading settings that live in files (API keys, TLS certificates) without a restart
//! and without dropping connections: on SIGHUP, on [`Reloader::reload`] (what SIGHUP
//! does, callable in-process), and when a file's contents change.
//!
//! Changes are found by reading the files every `--reload-interval` and comparing a
//! SHA-256 of their contents with the last one seen, rather than by inotify (`notify`):
//! Kubernetes updates a mounted Secret by swapping a symlink in the volume's directory,
//! which a watch on the file itself never hears about, editors replace files by rename,
//! and bind mounts from another host do not deliver events at all. Reading a few
//! kilobytes once a second costs nothing measurable, sees every one of those, and needs
//! no dependency. A version that fails to load is reported once (not every second) and
//! the previous one stays in force.

use std::{
    fmt,
    future::Future,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files did not change since the last attempt (polling only).
    Unchanged,
    /// The new version is in force; what it holds, for the log.
    Reloaded(String),
    /// The new version cannot be used (why); the previous one stays in force.
    Failed(String),
}

/// Something that can be reloaded from its files.
pub trait Reload: Send + Sync {
    /// A bounded name for logs and the reload metric (`api_keys`, `tls`).
    fn what(&self) -> &'static str;

    /// Loads the files again: always when `force` (SIGHUP), only when their contents
    /// changed otherwise. Never leaves a half-loaded state in force.
    fn reload(&self, force: bool) -> ReloadOutcome;
}

/// A set of files read together, remembering a digest of what was read last.
pub struct WatchedFiles {
    paths: Vec<PathBuf>,
    last: Mutex<Option<[u8; 32]>>,
}

impl fmt::Debug for WatchedFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.paths).finish()
    }
}

impl WatchedFiles {
    /// Files at `paths`, not read yet.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            last: Mutex::new(None),
        }
    }

    /// The files.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads every file (following symlinks) and remembers what it saw.
    ///
    /// # Errors
    /// The first file that cannot be read.
    pub fn read_all(&self) -> std::io::Result<Vec<Vec<u8>>> {
        let (version, contents) = self.snapshot();
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(version);
        contents
    }

    /// Like [`WatchedFiles::read_all`] when `force` or when anything changed since the
    /// last read (a file that cannot be read counts as a change once); `None` otherwise.
    pub fn read(&self, force: bool) -> Option<std::io::Result<Vec<Vec<u8>>>> {
        let (version, contents) = self.snapshot();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *last == Some(version) {
            return None;
        }
        *last = Some(version);
        Some(contents)
    }

    fn snapshot(&self) -> ([u8; 32], std::io::Result<Vec<Vec<u8>>>) {
        let mut hasher = Sha256::new();
        let mut contents = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            match std::fs::read(path) {
                Ok(bytes) => {
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(&bytes);
                    contents.push(bytes);
                }
                Err(e) => {
                    let mut failed = Sha256::new();
                    failed.update(path.as_os_str().as_encoded_bytes());
                    failed.update(e.to_string());
                    return (failed.finalize().into(), Err(with_path(path, e)));
                }
            }
        }
        (hasher.finalize().into(), Ok(contents))
    }
}

fn with_path(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Asks the reload task to reload everything now, as SIGHUP does. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Reloader {
    requested: Arc<Notify>,
    done: Arc<Notify>,
    running: Arc<AtomicBool>,
}

impl Reloader {
    /// Reloads everything (forced) and returns once the reload task has done it. Returns
    /// at once when no reload task runs (nothing to reload was configured).
    pub async fn reload(&self) {
        if !self.running.load(Ordering::Acquire) {
            return;
        }
        let done = self.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        self.requested.notify_one();
        done.await;
    }
}

/// Reloads `items` on SIGHUP, on [`Reloader::reload`], and every `interval` when their
/// files changed (`interval` zero: only on demand), until `stop`. Logs each outcome and
/// counts it in the reload metric.
///
/// The SIGHUP handler is installed, and the reloader marked as served, before this
/// returns (not when the future is first polled), so a SIGHUP or a reload request sent
/// as soon as the server reports ready is never lost (an uncaught SIGHUP would end the
/// process).
pub fn run(
    items: Vec<Arc<dyn Reload>>,
    interval: Duration,
    reloader: Reloader,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send {
    reloader.running.store(true, Ordering::Release);
    let running = Running(Arc::clone(&reloader.running));
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; files are still reloaded when they change");
            None
        }
    };
    async move {
        let _running = running;
        let period = if interval.is_zero() {
            Duration::from_secs(3600)
        } else {
            interval
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup_received = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup_received = std::future::pending::<Option<()>>();
            let force = tokio::select! {
                () = stop.cancelled() => return,
                _ = hangup_received => {
                    tracing::info!("SIGHUP received: reloading API keys and TLS certificates");
                    true
                }
                () = reloader.requested.notified() => true,
                _ = tick.tick(), if !interval.is_zero() => false,
            };
            for item in &items {
                // File reads and parsing are blocking work, but small (a keys file, two
                // PEM files); handing them to another thread would cost more than it saves.
                let outcome = item.reload(force);
                report(item.what(), &outcome, &metrics);
            }
            if force {
                reloader.done.notify_waiters();
            }
        }
    }
}

/// Clears the running flag when the reload task ends, however it ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn report(what: &'static str, outcome: &ReloadOutcome, metrics: &Metrics) {
    match outcome {
        ReloadOutcome::Unchanged => {}
        ReloadOutcome::Reloaded(summary) => {
            metrics.reload(what, true);
            tracing::info!(what, "reloaded {summary}");
        }
        ReloadOutcome::Failed(why) => {
            metrics.reload(what, false);
            tracing::error!(what, error = %why, "reload failed; the previous version stays in force");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_once_and_an_unreadable_file_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "one").unwrap();
        let files = WatchedFiles::new(vec![path.clone()]);
        assert_eq!(files.read_all().unwrap(), vec![b"one".to_vec()]);
        assert!(files.read(false).is_none(), "unchanged");
        assert!(files.read(true).is_some(), "forced");

        std::fs::write(&path, "two").unwrap();
        assert_eq!(files.read(false).unwrap().unwrap(), vec![b"two".to_vec()]);
        assert!(files.read(false).is_none());

        std::fs::remove_file(&path).unwrap();
        let err = files.read(false).unwrap().unwrap_err();
        assert!(err.to_string().contains("keys"), "{err}");
        assert!(files.read(false).is_none(), "the same failure is reported once");

        std::fs::write(&path, "two").unwrap();
        assert!(files.read(false).is_some(), "back: a change again");
    }
}
