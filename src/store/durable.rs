//! `DurableStore`: the embedded store kept on disk (`--data-dir`): statistics and
//! Idempotency-Key records in memory, every write in a write-ahead log first (group
//! commit), and snapshots that let old log segments go. Memory only ever holds what the
//! log holds: an entry is applied after it is written (and, with `--fsync always`,
//! fsynced), in log order, so memory is always what a replay would build.
//!
//! The data dir holds `LOCK` (an exclusive lock while a process uses it),
//! `wal-<n>.log` segments, `snapshot-<n>.snap` files (the store after every segment
//! before `n`), and, after `--recover truncate`, damaged files set aside as `*.corrupt`.
//! The formats are in `codec`, start-up in `recovery`, the log in `wal`.

mod codec;
mod map;
mod recovery;
mod snapshot;
mod wal;

use std::{
    fs::{File, OpenOptions, TryLockError},
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use self::{
    codec::Completed,
    map::SensorMap,
    wal::{CommitterSettings, Log, Pending, Rotation, Shared},
};
use super::{Claim, ClaimToken, Claims, Completion, StoreError, idempotency::unix_ms};
use crate::{
    config::{Config, FsyncMode, RecoverMode},
    domain::{Batch, SensorId, Summary},
    metrics::Metrics,
};

/// What the durable store needs from the configuration.
#[derive(Debug, Clone)]
pub struct DurableSettings {
    /// `--data-dir`.
    pub dir: PathBuf,
    /// `--fsync`.
    pub fsync: FsyncMode,
    /// `--fsync-interval`.
    pub fsync_interval: Duration,
    /// `--snapshot-interval`.
    pub snapshot_interval: Duration,
    /// `--recover truncate`.
    pub truncate: bool,
    /// How long an Idempotency-Key claim lasts: the request timeout.
    pub pending_ttl: Duration,
    /// `--idempotency-ttl`.
    pub idempotency_ttl: Duration,
    /// `--max-sensors`.
    pub max_sensors: Option<u64>,
}

impl DurableSettings {
    /// The durable settings of `config`, `None` without a data dir.
    pub fn from_config(config: &Config) -> Option<Self> {
        Some(Self {
            dir: config.data_dir()?.to_owned(),
            fsync: config.fsync,
            fsync_interval: config.fsync_interval,
            snapshot_interval: config.snapshot_interval,
            truncate: config.recover == Some(RecoverMode::Truncate),
            pending_ttl: config.request_timeout,
            idempotency_ttl: config.idempotency_ttl,
            max_sensors: config.max_sensors.map(std::num::NonZeroU64::get),
        })
    }
}

/// The embedded store on disk. Not ready until [`DurableStore::recover`] has read the
/// data dir back.
pub struct DurableStore {
    settings: DurableSettings,
    map: Arc<SensorMap>,
    claims: Arc<Claims>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    running: OnceLock<Running>,
    stopped: AtomicBool,
    /// Held by the snapshot being taken; holds the `applied` count of the last snapshot.
    last_snapshot: tokio::sync::Mutex<Option<u64>>,
    /// Holds the data dir's lock for the life of the store.
    _lock: File,
}

struct Running {
    log: Arc<Log>,
    /// The fsync thread.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStore")
            .field("dir", &self.settings.dir)
            .field("fsync", &self.settings.fsync)
            .finish_non_exhaustive()
    }
}

impl DurableStore {
    /// Creates the data dir when missing and locks it; reads nothing yet.
    ///
    /// # Errors
    /// When the directory cannot be created or written, or another process holds it.
    pub fn open(settings: DurableSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let dir = &settings.dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("the data dir {} is not writable", dir.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "the data dir {} is in use by another sensor-stats process",
                dir.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        Ok(Self {
            claims: Arc::new(Claims::new(settings.pending_ttl, settings.idempotency_ttl)),
            settings,
            map: Arc::new(SensorMap::default()),
            metrics,
            shared: Arc::new(Shared::default()),
            running: OnceLock::new(),
            stopped: AtomicBool::new(false),
            last_snapshot: tokio::sync::Mutex::new(None),
            _lock: lock,
        })
    }

    /// Reads the data dir back (snapshot, then log), opens a new log segment and starts
    /// the fsync thread. Blocking: run it off the async workers.
    ///
    /// # Errors
    /// Damage in the data dir (unless `--recover truncate`) or any I/O error; the message
    /// names the file and the byte offset.
    pub fn recover(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let dir = &self.settings.dir;
        let found = recovery::recover(dir, self.settings.truncate, &self.map, &self.claims)?;
        let log = Log::new(
            CommitterSettings {
                dir: dir.clone(),
                fsync: self.settings.fsync,
                fsync_interval: self.settings.fsync_interval,
                first_segment: found.next_segment,
                prev_len: found.prev_len,
                max_sensors: self.settings.max_sensors,
            },
            Arc::clone(&self.map),
            Arc::clone(&self.claims),
            Arc::clone(&self.metrics),
            Arc::clone(&self.shared),
        )
        .with_context(|| format!("cannot create a log segment in {}", dir.display()))?;
        let log = Arc::new(log);
        let thread = std::thread::Builder::new()
            .name("sensor-stats-wal".into())
            .spawn({
                let log = Arc::clone(&log);
                move || log.run()
            })
            .context("cannot start the log thread")?;
        let elapsed = started.elapsed();
        self.metrics.replay(elapsed);
        if let Ok(mut last) = self.last_snapshot.try_lock() {
            // What was replayed is only in the log: then the next snapshot should take it.
            *last = Some(if found.entries > 0 { u64::MAX } else { 0 });
        }
        tracing::info!(
            dir = %dir.display(),
            snapshot = found.snapshot,
            snapshot_sensors = found.sensors_from_snapshot,
            segments = found.segments,
            records = found.frames,
            entries = found.entries,
            sensors = self.map.len(),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            fsync = ?self.settings.fsync,
            "data dir read back: replayed {} log records ({} batches and deletes) in {:.1} ms",
            found.frames,
            found.entries,
            elapsed.as_secs_f64() * 1e3
        );
        let _ = self.running.set(Running {
            log,
            thread: Mutex::new(Some(thread)),
        });
        Ok(())
    }

    /// Whether the data dir has been read back and the store is not stopped.
    pub fn is_ready(&self) -> bool {
        self.running.get().is_some() && !self.stopped.load(Ordering::Acquire)
    }

    fn log(&self) -> Result<&Arc<Log>, StoreError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is shutting down".into()));
        }
        self.running
            .get()
            .map(|r| &r.log)
            .ok_or_else(|| StoreError::Unavailable("starting up: the data dir is being read back".into()))
    }

    /// Writes an entry to the log on this worker and waits until it is applied: at once
    /// with `--fsync interval`, after the fsync that covers it with `--fsync always`.
    async fn commit(&self, bytes: Vec<u8>, claim: Option<(Box<str>, ClaimToken)>) -> Result<(), StoreError> {
        let log = self.log()?;
        let (reply, answer) = oneshot::channel();
        log.submit(Pending { bytes, claim, reply });
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Interrupted("the log writer stopped".into())))
    }

    pub(super) async fn record_batch(
        &self,
        batch: &Batch<'_>,
        completion: Option<Completion<'_>>,
    ) -> Result<(), StoreError> {
        self.log()?;
        let mut bytes = Vec::new();
        let claim = match completion {
            None => {
                codec::encode_batch(&mut bytes, batch, None);
                None
            }
            Some(c) => {
                if !self.claims.begin_commit(c.key, c.token) {
                    return Err(StoreError::ClaimLost);
                }
                let record = Completed {
                    key: c.key,
                    fingerprint: c.fingerprint,
                    at_ms: unix_ms(),
                };
                codec::encode_batch(&mut bytes, batch, Some(record));
                Some((Box::from(c.key), c.token.clone()))
            }
        };
        self.commit(bytes, claim).await
    }

    pub(super) async fn delete(&self, sensor: SensorId<'_>) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(3 + sensor.as_str().len());
        codec::encode_delete(&mut bytes, sensor.as_str());
        self.commit(bytes, None).await
    }

    pub(super) fn get(&self, sensor: SensorId<'_>) -> Result<Summary, StoreError> {
        self.log()?;
        Ok(self.map.get(sensor.as_str()).unwrap_or_default())
    }

    pub(super) fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        // Before the records are read back, a completed key would look free.
        self.log()?;
        Ok(self.claims.claim(key))
    }

    pub(super) fn release(&self, key: &str, token: &ClaimToken) {
        self.claims.release(key, token);
    }

    pub(super) fn sensors_tracked(&self) -> usize {
        self.map.len()
    }

    /// Writes a snapshot now when anything changed since the last one (`force`: even if
    /// not), then deletes what it makes unnecessary. Failures are logged; the log keeps
    /// everything until a snapshot succeeds.
    pub async fn snapshot(&self, force: bool) {
        let mut last = self.last_snapshot.lock().await;
        let applied = self.shared.applied.load(Ordering::Relaxed);
        if !force && *last == Some(applied) {
            return;
        }
        let Ok(log) = self.log() else {
            return;
        };
        let started = Instant::now();
        let rotated = tokio::task::spawn_blocking({
            let log = Arc::clone(log);
            move || log.rotate()
        });
        let rotation: Rotation = match rotated.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.metrics.snapshot_failed();
                tracing::error!(error = %e, "snapshot not taken: cannot open the next log segment");
                return;
            }
            Err(_) => return,
        };
        let dir = self.settings.dir.clone();
        let map = Arc::clone(&self.map);
        let claims = Arc::clone(&self.claims);
        let log = Arc::clone(log);
        let written = tokio::task::spawn_blocking(move || {
            let end = || log.end_snapshot();
            let written = snapshot::write(
                &dir,
                rotation.segment,
                rotation.generation,
                unix_ms(),
                &map,
                &claims,
                end,
            );
            let removed = if written.is_ok() {
                snapshot::retain(&dir, rotation.segment)
            } else {
                Vec::new()
            };
            (written, removed.len())
        })
        .await;
        let elapsed = started.elapsed();
        match written {
            Ok((Ok(w), removed)) => {
                *last = Some(applied);
                self.metrics.snapshot_written(elapsed, w.bytes);
                tracing::info!(
                    snapshot = rotation.segment,
                    sensors = w.sensors,
                    idempotency_records = w.records,
                    bytes = w.bytes,
                    duration_ms = elapsed.as_secs_f64() * 1e3,
                    files_removed = removed,
                    "snapshot written"
                );
            }
            Ok((Err(e), _)) => {
                self.metrics.snapshot_failed();
                tracing::error!(
                    error = %e,
                    snapshot = rotation.segment,
                    "snapshot failed; the log keeps everything until one succeeds"
                );
            }
            Err(e) => {
                self.metrics.snapshot_failed();
                tracing::error!(error = %e, "snapshot task failed");
            }
        }
    }

    /// Upkeep until `stop`: a snapshot every `--snapshot-interval`, expired idempotency
    /// records freed every 10 s.
    pub(super) async fn run_upkeep(self: Arc<Self>, stop: CancellationToken) {
        let mut purge = tokio::time::interval(Duration::from_secs(10));
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let period = self.settings.snapshot_interval;
        let mut snapshots = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = purge.tick() => self.claims.purge(),
                _ = snapshots.tick() => self.snapshot(false).await,
            }
        }
    }

    /// After the drain: a last snapshot (when anything changed), then the log
    /// fsyncs and stops. Requests after this get 503.
    pub async fn shutdown(&self) {
        let Some(running) = self.running.get() else {
            return;
        };
        self.snapshot(false).await;
        self.stopped.store(true, Ordering::Release);
        let log = Arc::clone(&running.log);
        let thread = running.thread.lock().expect("not poisoned").take();
        let _ = tokio::task::spawn_blocking(move || {
            log.stop();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        })
        .await;
    }

    /// Tests only: make every log write fail as a full or broken disk would (`true`), or
    /// stop doing so.
    #[doc(hidden)]
    pub fn fail_writes_for_tests(&self, fail: bool) {
        self.shared.fail_writes.store(fail, Ordering::Relaxed);
    }

    /// Tests only: make every write of zeros ahead of a direct log segment's end fail
    /// (`true`), or stop doing so.
    #[doc(hidden)]
    pub fn fail_zero_writes_for_tests(&self, fail: bool) {
        self.shared.fail_zero_writes.store(fail, Ordering::Relaxed);
    }
}
