//! The write-ahead log: segment files, and the committer thread that owns them and is the
//! only writer of the durable store's memory.
//!
//! Requests hand their encoded entry to the committer over a channel and wait. The
//! committer takes everything queued, writes it as one frame (one `write`), and with
//! `--fsync always` calls `fdatasync` before it applies the entries to memory and answers:
//! the requests that arrived while one fsync ran share the next one (group commit). With
//! `--fsync interval` it applies and answers after the `write` and fsyncs on a timer.
//!
//! A failed `write` is undone (the file is cut back to its last frame) and every request
//! of the group gets 503 with nothing applied. A failed `fsync` is fatal for the segment
//! (after one, the kernel may have dropped the pages and cleared the error, so a retry
//! proves nothing): the segment is closed and the next write opens a new one, whose header
//! records how many bytes of the old one are known to be on disk; recovery ignores the
//! rest. New segments are tried at most once a second while the disk refuses.

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use super::{
    codec::{self, Completed, Header, Kind, SEGMENT_MAGIC, Sink},
    map::{Cow, SensorMap},
};
use crate::{
    config::FsyncMode,
    domain::Delta,
    metrics::Metrics,
    store::{ClaimToken, Claims, StoreError},
    telemetry::LogSampler,
};

/// A group stops taking queued entries past this many bytes (one large entry goes alone).
const MAX_GROUP_BYTES: usize = 8 << 20;
/// How often a new segment may be tried after the disk refused one.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// The path of log segment `number` in `dir`.
pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("wal-{number:020}.log"))
}

/// Makes a new, renamed or removed file of `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment being written.
#[derive(Debug)]
struct Segment {
    file: File,
    number: u64,
    /// Bytes written, all of them whole frames.
    len: u64,
    /// Bytes known to be on disk (the last successful fsync).
    durable: u64,
}

impl Segment {
    /// Creates segment `number` whose predecessor has `prev_len` valid bytes; durable
    /// (file and directory fsynced) when this returns.
    fn create(dir: &Path, number: u64, prev_len: u64) -> io::Result<Self> {
        let path = segment_path(dir, number);
        let mut file = OpenOptions::new().append(true).create_new(true).open(&path)?;
        let header = codec::encode_header(
            SEGMENT_MAGIC,
            Header {
                number,
                extra: prev_len,
            },
        );
        let written = file.write_all(&header).and_then(|()| file.sync_all());
        if let Err(e) = written.and_then(|()| sync_dir(dir)) {
            // Half-made: remove it so the number can be tried again.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Self {
            file,
            number,
            len: codec::HEADER_LEN as u64,
            durable: codec::HEADER_LEN as u64,
        })
    }
}

/// A message to the committer.
pub(super) enum Msg {
    /// One encoded log entry (a batch or a delete) to make durable, then apply.
    Entry {
        bytes: Vec<u8>,
        /// The Idempotency-Key claim to give back when the write fails.
        claim: Option<(Box<str>, ClaimToken)>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Start a snapshot: close the segment, open the next, begin copy-on-write.
    Rotate(oneshot::Sender<io::Result<Rotation>>),
    /// End the snapshot: hand over the before-images, stop copy-on-write.
    EndSnapshot(oneshot::Sender<std::collections::HashMap<Box<str>, Delta>>),
    /// Fsync what is written and stop.
    Stop,
}

/// Where a snapshot cuts the log.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rotation {
    /// The first segment after the cut: the snapshot covers every segment before it.
    pub(super) segment: u64,
    /// The snapshot's copy-on-write generation.
    pub(super) generation: u64,
}

/// What the committer needs to start.
pub(super) struct CommitterSettings {
    pub(super) dir: PathBuf,
    pub(super) fsync: FsyncMode,
    pub(super) fsync_interval: Duration,
    /// The segment to create first, and how many bytes of the one before it are valid.
    pub(super) first_segment: u64,
    pub(super) prev_len: u64,
    /// `--max-sensors`: a batch that would make the store track more is refused whole.
    pub(super) max_sensors: Option<u64>,
}

/// Shared with the store handle: what the committer reports and obeys from outside.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Entries applied since start (a snapshot is skipped when nothing changed).
    pub(super) applied: AtomicU64,
    /// Tests: every log write fails as if the disk refused it.
    pub(super) fail_writes: AtomicBool,
}

/// The committer thread's state.
pub(super) struct Committer {
    settings: CommitterSettings,
    segment: Option<Segment>,
    /// The last closed segment's number and durable length, for the next one's header.
    closed: (u64, u64),
    next_number: u64,
    last_reopen: Option<Instant>,
    last_sync: Instant,
    map: Arc<SensorMap>,
    claims: Arc<Claims>,
    cow: Cow,
    generation: u64,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    errors: LogSampler,
    frame: Vec<u8>,
    group: Vec<Pending>,
}

struct Pending {
    bytes: Vec<u8>,
    claim: Option<(Box<str>, ClaimToken)>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl Committer {
    /// Creates the first segment and the committer over it.
    ///
    /// # Errors
    /// When the segment cannot be created.
    pub(super) fn new(
        settings: CommitterSettings,
        map: Arc<SensorMap>,
        claims: Arc<Claims>,
        metrics: Arc<Metrics>,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let segment = Segment::create(&settings.dir, settings.first_segment, settings.prev_len)?;
        Ok(Self {
            next_number: settings.first_segment + 1,
            closed: (settings.first_segment.saturating_sub(1), settings.prev_len),
            segment: Some(segment),
            settings,
            last_reopen: None,
            last_sync: Instant::now(),
            map,
            claims,
            cow: Cow::default(),
            generation: 0,
            metrics,
            shared,
            errors: LogSampler::new(Duration::from_secs(1)),
            frame: Vec::new(),
            group: Vec::new(),
        })
    }

    /// Serves `queue` until [`Msg::Stop`] or until every sender is gone.
    pub(super) fn run(mut self, queue: mpsc::Receiver<Msg>) {
        loop {
            let Some(first) = self.wait(&queue) else {
                break;
            };
            let mut next = Some(first);
            let mut bytes = 0;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Entry {
                        bytes: b,
                        claim,
                        reply,
                    } => {
                        bytes += b.len();
                        self.group.push(Pending {
                            bytes: b,
                            claim,
                            reply,
                        });
                    }
                    control => {
                        self.commit();
                        if !self.control(control) {
                            self.sync_if_dirty();
                            return;
                        }
                    }
                }
                if bytes < MAX_GROUP_BYTES {
                    next = queue.try_recv().ok();
                }
            }
            self.commit();
        }
        self.sync_if_dirty();
    }

    /// The next message; in interval mode, fsyncs when the interval passes meanwhile.
    fn wait(&mut self, queue: &mpsc::Receiver<Msg>) -> Option<Msg> {
        loop {
            if self.settings.fsync == FsyncMode::Interval && self.dirty() {
                let left = self
                    .settings
                    .fsync_interval
                    .saturating_sub(self.last_sync.elapsed());
                match queue.recv_timeout(left) {
                    Ok(msg) => return Some(msg),
                    Err(mpsc::RecvTimeoutError::Timeout) => self.sync_if_dirty(),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                }
            } else {
                return queue.recv().ok();
            }
        }
    }

    fn dirty(&self) -> bool {
        self.segment.as_ref().is_some_and(|s| s.durable < s.len)
    }

    /// Handles a control message; false to stop.
    fn control(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Entry { .. } => unreachable!("entries are grouped by the caller"),
            Msg::Rotate(reply) => {
                let _ = reply.send(self.rotate());
                true
            }
            Msg::EndSnapshot(reply) => {
                self.cow.generation = 0;
                let _ = reply.send(std::mem::take(&mut self.cow.before));
                true
            }
            Msg::Stop => false,
        }
    }

    fn rotate(&mut self) -> io::Result<Rotation> {
        if let Some(segment) = &mut self.segment
            && segment.durable < segment.len
        {
            let synced = timed_sync(&segment.file, &self.metrics);
            if let Err(e) = synced {
                self.poison(&e);
                return Err(e);
            }
            segment.durable = segment.len;
        }
        let prev_len = match &self.segment {
            Some(s) => s.durable,
            None => self.closed.1,
        };
        let next = Segment::create(&self.settings.dir, self.next_number, prev_len)?;
        if let Some(old) = self.segment.replace(next) {
            self.closed = (old.number, old.durable);
        }
        self.next_number += 1;
        self.last_sync = Instant::now();
        self.generation += 1;
        self.cow.generation = self.generation;
        self.cow.before.clear();
        Ok(Rotation {
            segment: self.next_number - 1,
            generation: self.generation,
        })
    }

    fn sync_if_dirty(&mut self) {
        let Some(segment) = &mut self.segment else {
            return;
        };
        if segment.durable < segment.len {
            match timed_sync(&segment.file, &self.metrics) {
                Ok(()) => segment.durable = segment.len,
                Err(e) => self.poison(&e),
            }
        }
        self.last_sync = Instant::now();
    }

    /// Closes the segment after a failed fsync: its pages may be gone, it is not used again.
    fn poison(&mut self, e: &io::Error) {
        if let Some(old) = self.segment.take() {
            self.closed = (old.number, old.durable);
            self.metrics.durable_write_error();
            tracing::error!(
                error = %e,
                segment = %segment_path(&self.settings.dir, old.number).display(),
                durable_bytes = old.durable,
                "fsync of the log failed: this segment is closed for good (its unsynced pages \
                 may be lost); writes continue in a new segment"
            );
        }
    }

    /// Opens a new segment after a failure, at most once per [`REOPEN_EVERY`].
    fn reopen(&mut self) -> Result<(), String> {
        if self.last_reopen.is_some_and(|at| at.elapsed() < REOPEN_EVERY) {
            return Err("the log cannot be written (retrying once a second)".to_owned());
        }
        self.last_reopen = Some(Instant::now());
        match Segment::create(&self.settings.dir, self.next_number, self.closed.1) {
            Ok(segment) => {
                tracing::info!(segment = segment.number, "log writable again: new segment opened");
                self.segment = Some(segment);
                self.next_number += 1;
                Ok(())
            }
            Err(e) => Err(format!("cannot open a new log segment: {e}")),
        }
    }

    /// Writes the group as one frame, makes it durable, applies it and answers.
    fn commit(&mut self) {
        if self.group.is_empty() {
            return;
        }
        if let Some(max) = self.settings.max_sensors {
            self.enforce_cap(max);
            if self.group.is_empty() {
                return;
            }
        }
        self.metrics.flush(self.group.len());
        if self.segment.is_none()
            && let Err(message) = self.reopen()
        {
            return self.fail(&message, false);
        }
        self.frame.clear();
        self.frame.resize(codec::FRAME_HEADER_LEN, 0);
        for p in &self.group {
            self.frame.extend_from_slice(&p.bytes);
        }
        let header = codec::frame_header(&self.frame[codec::FRAME_HEADER_LEN..]);
        self.frame[..codec::FRAME_HEADER_LEN].copy_from_slice(&header);

        let fail_writes = self.shared.fail_writes.load(Ordering::Relaxed);
        let segment = self.segment.as_mut().expect("opened above");
        let written = if fail_writes {
            Err(io::Error::other("write refused (injected failure)"))
        } else {
            segment.file.write_all(&self.frame)
        };
        if let Err(e) = written {
            // Cut back whatever part of the frame reached the file.
            let undone = segment
                .file
                .set_len(segment.len)
                .and_then(|()| segment.file.sync_data());
            if let Err(undo) = undone {
                self.poison(&undo);
            }
            return self.fail(&format!("the log cannot be written: {e}"), false);
        }
        segment.len += self.frame.len() as u64;
        self.metrics.wal_bytes(self.frame.len());
        match self.settings.fsync {
            FsyncMode::Always => {
                if let Err(e) = timed_sync(&segment.file, &self.metrics) {
                    self.poison(&e);
                    return self.fail(&format!("the log could not be fsynced: {e}"), true);
                }
                segment.durable = segment.len;
                self.last_sync = Instant::now();
            }
            FsyncMode::Interval => {
                if self.last_sync.elapsed() >= self.settings.fsync_interval {
                    self.sync_if_dirty();
                }
            }
        }
        let mut apply = Apply {
            map: &self.map,
            claims: &self.claims,
            cow: &mut self.cow,
            entries: 0,
        };
        for p in self.group.drain(..) {
            if let Err(e) = codec::decode_entries(&p.bytes, Kind::Log, &mut apply) {
                // Entries are encoded by this process: this is a bug, not bad input.
                tracing::error!(error = %e, "an entry this process encoded does not decode");
            }
            let _ = p.reply.send(Ok(()));
        }
        self.shared.applied.fetch_add(apply.entries, Ordering::Relaxed);
    }

    /// Refuses (507) the batches of the group that would make the store track more than
    /// `max` sensors, counting in log order what the entries before them add and delete;
    /// the rest stay in the group. Only the committer adds sensors, so this is exact.
    fn enforce_cap(&mut self, max: u64) {
        let mut added: HashSet<Box<str>> = HashSet::new();
        let mut removed: HashSet<Box<str>> = HashSet::new();
        let mut tracked = self.map.len() as u64;
        for p in std::mem::take(&mut self.group) {
            let mut names = Names::default();
            // Entries are encoded by this process; one that does not decode goes on as is.
            let _ = codec::decode_entries(&p.bytes, Kind::Log, &mut names);
            let exists = |s: &str| added.contains(s) || (self.map.contains(s) && !removed.contains(s));
            if let Some(sensor) = names.deleted {
                if exists(&sensor) {
                    tracked -= 1;
                    added.remove(&sensor);
                    removed.insert(sensor);
                }
                self.group.push(p);
                continue;
            }
            let new: Vec<Box<str>> = names.sensors.into_iter().filter(|s| !exists(s)).collect();
            if tracked + new.len() as u64 > max {
                if let Some((key, token)) = &p.claim {
                    self.claims.abort(key, token);
                }
                let _ = p.reply.send(Err(StoreError::SensorCap(max)));
                continue;
            }
            tracked += new.len() as u64;
            for sensor in new {
                removed.remove(&sensor);
                added.insert(sensor);
            }
            self.group.push(p);
        }
    }

    /// Answers every request of the group with a 503, gives back their claims, and logs
    /// (at most once a second).
    fn fail(&mut self, message: &str, maybe_written: bool) {
        self.metrics.durable_write_error();
        if let Some(suppressed) = self.errors.admit() {
            tracing::error!(
                error = message,
                requests = self.group.len(),
                suppressed_since_last = suppressed,
                "log write failed: requests answered 503, nothing applied in memory"
            );
        }
        for p in self.group.drain(..) {
            if let Some((key, token)) = &p.claim {
                self.claims.abort(key, token);
            }
            let error = if maybe_written {
                StoreError::Interrupted(message.to_owned())
            } else {
                StoreError::Unavailable(message.to_owned())
            };
            let _ = p.reply.send(Err(error));
        }
    }
}

fn timed_sync(file: &File, metrics: &Metrics) -> io::Result<()> {
    let start = Instant::now();
    let result = file.sync_data();
    metrics.wal_fsync(start.elapsed());
    result
}

/// The sensors an entry adds to, or the one it deletes.
#[derive(Default)]
struct Names {
    sensors: Vec<Box<str>>,
    deleted: Option<Box<str>>,
}

impl Sink for Names {
    fn delta(&mut self, sensor: &str, _: &Delta) {
        self.sensors.push(Box::from(sensor));
    }

    fn delete(&mut self, sensor: &str) {
        self.deleted = Some(Box::from(sensor));
    }

    fn completed(&mut self, _: Completed<'_>) {}
}

/// Applies decoded log entries to memory: the committer's sink, and recovery's.
pub(super) struct Apply<'a> {
    pub(super) map: &'a SensorMap,
    pub(super) claims: &'a Claims,
    pub(super) cow: &'a mut Cow,
    /// Batches and deletes applied.
    pub(super) entries: u64,
}

impl Sink for Apply<'_> {
    fn delta(&mut self, sensor: &str, delta: &Delta) {
        self.map.add(sensor, delta, self.cow);
    }

    fn delete(&mut self, sensor: &str) {
        self.map.remove(sensor, self.cow);
        self.entries += 1;
    }

    fn completed(&mut self, c: Completed<'_>) {
        self.claims.finish(c.key, c.fingerprint, c.at_ms);
    }

    fn batch_end(&mut self) {
        self.entries += 1;
    }
}
