//! The write-ahead log: segment files, the lock that makes one writer of the log and of
//! the durable store's memory at a time, and the fsync thread.
//!
//! A request writes its entry on its own worker: under the log's lock it appends one frame
//! (no hand-off to another thread). With `--fsync interval` it then applies
//! the entry to memory and is answered at once; the fsync thread fsyncs every
//! `--fsync-interval`. With `--fsync always` the entry waits in the log's queue: the fsync
//! thread fsyncs whatever is written, outside the lock (writers keep appending meanwhile),
//! then applies the entries that fsync covers in log order and answers them. The entries
//! written while one fsync runs share the next one (group commit), and the thread wakes
//! its waiters once per fsync. Either way memory is applied in log order, only after the
//! entry is in the log, and with `always` only after it is on disk.
//!
//! A segment's blocks are prepared ahead of the writes. With `--fsync always` on ext4 and
//! XFS they are written with zeros ([`ZERO_AHEAD`] at a time) and each group is one
//! synced direct write of whole blocks ([`Direct`]): its sync has no metadata to record,
//! only the device's cache to flush. Elsewhere they are reserved ([`PREALLOCATE`] at a
//! time, `fallocate(2)`): a frame written inside them leaves the file's size alone, so
//! with `--fsync always` the `fdatasync` that follows a group's `pwrite` has no size to
//! commit (measured on ext4: a third less time and CPU per fsync), and with `--fsync
//! interval` a frame is copied into the reserved part of the file mapped in memory, with
//! no system call per request (the page cache holds it as it would a `write`'s, so a
//! crash of the process loses nothing), on the filesystems where such a write cannot fail
//! for want of space ([`maps_safely`]); elsewhere a frame is one `pwrite`. The prepared
//! rest of a segment reads as zeros, which recovery takes as the end of the log.
//! Preparing is best effort: where the filesystem refuses (full, or no `fallocate`), the
//! segment grows by its writes.
//!
//! With `--fsync interval`, pages written between two fsyncs may reach the disk in any
//! order, so after an OS crash or a power loss a segment can hold zeros with valid frames
//! after them. So an interval segment carries synced marks: its first frame says the
//! header is on disk, and after an fsync that covered anything past the last mark's
//! value, a new mark gives the length it covered. Recovery takes the largest mark's value
//! as what was on disk: damage past it is the loss of the last interval (documented), and
//! damage before it is corruption.
//!
//! A failed `write` is undone (the file is cut back to its last frame) and its request
//! gets 503 with nothing applied. A failed `fsync` is fatal for the segment (after one,
//! the kernel may have dropped the pages and cleared the error, so a retry proves
//! nothing): the segment is closed, every entry waiting for that fsync gets 503 with
//! nothing applied, and the next write opens a new segment, whose header records how many
//! bytes of the old one are known to be on disk; recovery ignores the rest. New segments
//! are tried at most once a second while the disk refuses.

use std::{
    collections::{HashMap, HashSet},
    fs::{File, OpenOptions},
    io::{self, IoSlice},
    ops::Range,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
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

/// The length of a frame holding one synced mark (header, tag, u64).
const MARK_FRAME_LEN: u64 = codec::FRAME_HEADER_LEN as u64 + 9;
/// A group stops taking queued entries past this many bytes (one large entry goes alone).
const MAX_GROUP_BYTES: usize = 8 << 20;
/// A segment's blocks are reserved this much at a time.
pub(super) const PREALLOCATE: u64 = 16 << 20;
/// How often a new segment may be tried after the disk refused one.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// `--fsync always` on ext4 and XFS: groups are written in whole blocks of this size (a
/// multiple of any device's logical block), at offsets and from memory aligned to it.
const BLOCK: usize = 4096;
/// Direct segments zero their blocks this far ahead of the log's end, this much at a time.
const ZERO_AHEAD: u64 = 2 << 20;
/// How many blocks one direct write takes at most (`IOV_MAX` is 1024 on Linux).
const BLOCKS_PER_WRITE: usize = 1024;

/// One block of a direct write, aligned as `O_DIRECT` needs.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Block")
    }
}

/// Zeros to write ahead of a direct segment's end, aligned as `O_DIRECT` needs.
#[repr(C, align(4096))]
struct Zeros([u8; 64 << 10]);

static ZEROS: Zeros = Zeros([0; 64 << 10]);

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
    /// `--fsync interval`: frames are copied into a mapped window of the reserved blocks,
    /// and the segment carries synced marks.
    interval: bool,
    /// The mapped part of the file (`--fsync interval`); `None` until a frame needs it.
    window: Option<Window>,
    /// Not mapped (the filesystem is not known to map safely, or mapping failed once):
    /// frames are written with `pwrite`.
    unmappable: bool,
    /// Where the last synced mark ends, and the length it gives: an fsync that covered
    /// nothing but that mark needs no new one (an idle log stops fsyncing).
    marked: u64,
    mark_value: u64,
    /// Shared with the fsync thread, which syncs it without holding the log's lock.
    file: Arc<File>,
    number: u64,
    /// Bytes written, all of them whole frames.
    len: u64,
    /// Bytes known to be on disk (the last successful fsync).
    durable: u64,
    /// The file's reserved size; frames written below it do not change the file's size.
    allocated: u64,
    /// Blocks are reserved ahead of the writes; off for the rest of the segment once the
    /// filesystem refused.
    preallocate: bool,
    /// `--fsync always` on ext4 and XFS: groups are written with `O_DIRECT` and
    /// `RWF_DSYNC` into blocks zeroed ahead (see [`Direct`]).
    direct: Option<Direct>,
}

/// A segment whose groups are written directly to the disk: each group is one
/// `pwritev2(RWF_DSYNC)` of whole blocks through an `O_DIRECT` descriptor, starting with
/// the segment's last partial block again (its bytes do not change, so a torn write of it
/// leaves them as they were). Its blocks are written with zeros ahead of the log's end
/// ([`ZERO_AHEAD`] at a time), so a group's write lands in allocated, written blocks and
/// its sync has no metadata to write, only the device's cache to flush: measured with a C
/// probe on this VM's ext4, 1 kB groups took 123 µs instead of 150 µs with `pwrite` +
/// `fdatasync` into `fallocate`d blocks (whose first write must record the extent as
/// written), 16 kB groups 118 µs instead of 252 µs, and no page cache is involved.
#[derive(Debug)]
struct Direct {
    /// The segment's file opened again with `O_DIRECT`.
    file: Arc<File>,
    /// The bytes of the segment's last partial block (`len % BLOCK` of them).
    tail: Vec<u8>,
    /// The blocks of the last write, kept for the next.
    blocks: Vec<Block>,
    /// Blocks are zeroed ahead of the writes; off for the rest of the segment once a zero
    /// write failed (the groups then extend the file, each sync recording its new size).
    zeroing: bool,
}

impl Direct {
    /// Opens `path` for direct writes when its filesystem is known to take them as this
    /// log writes them (ext4 and XFS); `None` otherwise, or when the open fails.
    fn open(path: &Path, file: &File, head: &[u8]) -> Option<Self> {
        if !is_ext4_or_xfs(file) {
            return None;
        }
        let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, rustix::fs::Mode::empty()) {
            Ok(fd) => Some(Self {
                file: Arc::new(File::from(fd)),
                tail: head[head.len() - head.len() % BLOCK..].to_vec(),
                blocks: Vec::new(),
                zeroing: true,
            }),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot open the log segment for direct writes: it is written with pwrite and fdatasync");
                None
            }
        }
    }
}

impl Segment {
    /// Creates segment `number` whose predecessor has `prev_len` valid bytes, with its
    /// first blocks reserved (and, for `--fsync interval`, a first synced mark for the
    /// header); durable (file and directory fsynced) when this returns.
    fn create(dir: &Path, number: u64, prev_len: u64, fsync: FsyncMode) -> io::Result<Self> {
        let path = segment_path(dir, number);
        // Readable too: a shared writable map needs it.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let header = codec::encode_header(
            SEGMENT_MAGIC,
            Header {
                number,
                extra: prev_len,
            },
        );
        let mut head = header.to_vec();
        let interval = fsync == FsyncMode::Interval;
        if interval {
            head.extend_from_slice(&mark_frame(codec::HEADER_LEN as u64));
        }
        let len = head.len() as u64;
        let direct = if interval {
            None
        } else {
            Direct::open(&path, &file, &head)
        };
        let mut segment = Self {
            interval,
            window: None,
            unmappable: !(interval && maps_safely(&file)),
            marked: len,
            mark_value: codec::HEADER_LEN as u64,
            file: Arc::new(file),
            number,
            len,
            durable: len,
            allocated: 0,
            // Direct segments zero their blocks ahead instead.
            preallocate: direct.is_none(),
            direct,
        };
        segment.reserve(len + 1);
        let written = segment
            .file
            .write_all_at(&head, 0)
            .and_then(|()| segment.file.sync_all());
        if let Err(e) = written.and_then(|()| sync_dir(dir)) {
            // Half-made: remove it so the number can be tried again.
            drop(segment);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(segment)
    }

    /// Reserves blocks up to at least `end`, [`PREALLOCATE`] at a time, when the segment
    /// preallocates. When the filesystem refuses, the segment stops preallocating (the
    /// frames are appended instead, and a full disk shows as a failed write).
    fn reserve(&mut self, end: u64) {
        if !self.preallocate || end <= self.allocated {
            return;
        }
        let to = end.div_ceil(PREALLOCATE) * PREALLOCATE;
        let reserved = rustix::fs::fallocate(
            &*self.file,
            rustix::fs::FallocateFlags::empty(),
            self.allocated,
            to - self.allocated,
        );
        match reserved {
            Ok(()) => self.allocated = to,
            Err(e) => {
                self.preallocate = false;
                tracing::debug!(
                    segment = self.number,
                    error = %e,
                    "cannot reserve log blocks ahead: this segment grows by appending"
                );
            }
        }
    }

    /// Writes `frame` at `at`: `--fsync interval` copies it into the mapped reserved
    /// blocks when it can, otherwise one `pwrite` (as [`write_frame`] writes the groups of
    /// `--fsync always`).
    fn write(&mut self, frame: &[u8], at: u64) -> io::Result<()> {
        if self.interval {
            self.reserve(at + frame.len() as u64);
            if let Some(target) = self.mapped(at, frame.len()) {
                target.copy_from_slice(frame);
                return Ok(());
            }
        }
        self.file.write_all_at(frame, at)
    }

    /// The mapped bytes `at..at + len`; maps the reserved file from the page of `at` to
    /// its reserved end when the window does not hold them. `None` when they are not
    /// reserved or the file cannot be mapped.
    #[allow(unsafe_code)]
    fn mapped(&mut self, at: u64, len: usize) -> Option<&mut [u8]> {
        let end = at + len as u64;
        let held = self
            .window
            .as_ref()
            .is_some_and(|w| w.offset <= at && end <= w.offset + w.map.len() as u64);
        if !held {
            self.window = None;
            if self.unmappable || end > self.allocated {
                return None;
            }
            let page = rustix::param::page_size() as u64;
            let offset = at - at % page;
            let len = usize::try_from(self.allocated - offset).ok()?;
            // SAFETY: the mapped bytes are this segment's reserved blocks, which only this
            // process writes (the data dir's `LOCK`) and which are never read through the
            // map; the file is cut below them only by [`Segment::cut_back`], which drops
            // the window first, so no access goes past the end of the file. (Another
            // program cutting a live segment would get this process killed by SIGBUS, as
            // it would any program that maps its files; the README says to leave a live
            // data dir alone.)
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(offset)
                    .len(len)
                    .map_mut(&*self.file)
            };
            match map {
                Ok(map) => self.window = Some(Window { map, offset }),
                Err(e) => {
                    self.unmappable = true;
                    tracing::warn!(
                        segment = self.number,
                        error = %e,
                        "cannot map the log segment: it is written with pwrite instead"
                    );
                    return None;
                }
            }
        }
        let window = self.window.as_mut()?;
        let from = usize::try_from(at - window.offset).ok()?;
        Some(&mut window.map[from..from + len])
    }

    /// Takes back what a group's direct write borrowed, with the new last partial block
    /// when the group was written; stops zeroing after a failed zero write, and stops
    /// writing directly when the direct write was refused as invalid.
    fn give_back_direct(&mut self, lent: DirectWrite, outcome: &Outcome, frame_len: usize) {
        let Some(direct) = self.direct.as_mut() else {
            return;
        };
        if let Some(e) = &outcome.direct_refused {
            tracing::warn!(segment = self.number, error = %e, "direct write to the log refused: this segment is written with pwrite and fdatasync");
            self.direct = None;
            self.preallocate = true;
            return;
        }
        direct.zeroing &= !outcome.zero_failed;
        let DirectWrite { tail, blocks, .. } = lent;
        direct.tail = tail;
        if outcome.written.is_ok() {
            let tail_len = (direct.tail.len() + frame_len) % BLOCK;
            direct.tail.clear();
            if let Some(last) = blocks.last() {
                direct.tail.extend_from_slice(&last.0[..tail_len]);
            }
        }
        // Kept for the next group, unless an exceptionally large one grew them.
        if blocks.capacity() <= 2 * MAX_GROUP_BYTES / BLOCK {
            direct.blocks = blocks;
        }
    }

    /// A settled segment being closed: cuts its file to what it holds (its durable
    /// length) so that the blocks reserved past it are given back, best effort (recovery
    /// reads zeros there as the end of the log all the same).
    fn give_back_reserved(mut self) {
        self.window = None;
        if self.allocated > self.durable
            && let Err(e) = self.file.set_len(self.durable)
        {
            tracing::debug!(segment = self.number, error = %e, "cannot give back reserved log blocks");
        }
    }

    /// Cuts the file back to `start` (after a failed write) and gives back the blocks
    /// reserved past it.
    fn cut_back(&mut self, start: u64) -> io::Result<()> {
        self.window = None;
        self.allocated = self.allocated.min(start);
        self.file.set_len(start).and_then(|()| self.file.sync_data())
    }
}

/// `--fsync interval`: the part of a segment's file mapped for writing.
#[derive(Debug)]
struct Window {
    map: memmap2::MmapMut,
    /// Where in the file the map starts (a multiple of the page size).
    offset: u64,
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
    /// Tests: every zero write ahead of a direct segment's end fails.
    pub(super) fail_zero_writes: AtomicBool,
}

/// An entry to write, and who waits for it.
pub(super) struct Pending {
    pub(super) bytes: Vec<u8>,
    /// The Idempotency-Key claim to give back when the write fails.
    pub(super) claim: Option<(Box<str>, ClaimToken)>,
    pub(super) reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The log: the committer's state behind one lock, and the fsync thread's wake-ups.
pub(super) struct Log {
    state: Mutex<Committer>,
    /// The fsync thread waits here for entries (`always`) or for its timer (`interval`).
    work: Condvar,
    /// A rotation or the stop waits here for the group the fsync thread is writing.
    idle: Condvar,
}

/// The state behind the log's lock: the segment, the entries waiting for the fsync
/// thread, and everything needed to apply entries to memory.
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
    /// `--fsync always`: entries waiting for the fsync thread to take them, in log order.
    queued: Vec<Pending>,
    /// The frame buffer, kept between writes (with `--fsync always` lent to each group).
    spare_frame: Vec<u8>,
    /// `--fsync interval`: entries and bytes written since the last fsync began, published
    /// to the metrics once per fsync instead of per request.
    unsynced: Unsynced,
    /// Rotations and stops waiting to settle the log: the fsync thread takes no new
    /// group meanwhile (under sustained load it would otherwise always have one).
    settle_wanted: usize,
    /// The fsync thread is writing and fsyncing a group outside the lock.
    in_flight: bool,
    /// `--max-sensors`: what the entries not yet applied will add and remove.
    cap: CapCount,
    /// The fsync thread sleeps until the next entry arrives.
    thread_waiting: bool,
    /// Entries are refused (the store is stopping).
    stopped: bool,
    /// The fsync thread is to exit.
    exit: bool,
}

/// Interval mode: what was written since the last fsync began.
#[derive(Debug, Default)]
struct Unsynced {
    entries: usize,
    bytes: usize,
}

/// The sensors the store will track once the entries not yet applied are.
#[derive(Default)]
struct CapCount {
    added: HashSet<Box<str>>,
    removed: HashSet<Box<str>>,
    tracked: u64,
}

/// A group taken by the fsync thread: its entries, their frame, and where it goes.
struct Group {
    entries: Vec<Pending>,
    frame: Vec<u8>,
    file: Arc<File>,
    /// The segment's length before the frame.
    start: u64,
    /// A direct segment's: what the write needs, lent by the segment.
    direct: Option<DirectWrite>,
    fail_writes: bool,
    metrics: Arc<Metrics>,
}

/// What a group's direct write borrows from its segment.
struct DirectWrite {
    file: Arc<File>,
    /// The segment's last partial block before the group.
    tail: Vec<u8>,
    blocks: Vec<Block>,
    /// Blocks to zero past the group's last one, before writing it.
    zero: Option<Range<u64>>,
    /// Tests: the zero write fails.
    fail_zero: bool,
}

/// What became of a group's `write` and `fsync` (`None`: not tried after a failed write;
/// a direct write is both).
struct Outcome {
    written: io::Result<()>,
    synced: Option<io::Result<()>>,
    /// The zero write ahead failed: the segment stops zeroing.
    zero_failed: bool,
    /// The direct write was refused as invalid: the group was written with `pwrite` and
    /// `fdatasync`, as the segment's next groups are.
    direct_refused: Option<io::Error>,
}

impl Group {
    /// Builds the frame of the entries, writes it (one `pwrite`) and fsyncs it, or on a
    /// direct segment writes it synced in whole blocks; needs no lock.
    fn write_and_sync(&mut self) -> Outcome {
        build_frame(&mut self.frame, self.entries.iter().map(|p| p.bytes.as_slice()));
        let mut outcome = Outcome {
            written: Ok(()),
            synced: None,
            zero_failed: false,
            direct_refused: None,
        };
        if let Some(direct) = &mut self.direct {
            if let Some(zero) = direct.zero.clone()
                && let Err(e) = injected(direct.fail_zero).and_then(|()| write_zeros(&direct.file, zero))
            {
                tracing::debug!(error = %e, "cannot zero log blocks ahead: this segment grows by its writes");
                outcome.zero_failed = true;
            }
            fill_blocks(&mut direct.blocks, &direct.tail, &self.frame);
            let at = self.start - direct.tail.len() as u64;
            let started = Instant::now();
            let written =
                injected(self.fail_writes).and_then(|()| write_blocks(&direct.file, &direct.blocks, at));
            match written {
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => outcome.direct_refused = Some(e),
                written => {
                    if written.is_ok() {
                        self.metrics.wal_fsync(started.elapsed());
                    }
                    outcome.written = written;
                    return outcome;
                }
            }
        }
        outcome.written = write_frame(&self.file, &self.frame, self.start, self.fail_writes);
        outcome.synced = outcome
            .written
            .is_ok()
            .then(|| timed_sync(&self.file, &self.metrics));
        outcome
    }
}

/// Lays `tail` then `frame` out in whole blocks, the rest of the last block zeros.
fn fill_blocks(blocks: &mut Vec<Block>, tail: &[u8], frame: &[u8]) {
    let len = tail.len() + frame.len();
    blocks.clear();
    blocks.resize(len.div_ceil(BLOCK), Block([0; BLOCK]));
    let (mut block, mut at) = (0, 0);
    for mut part in [tail, frame] {
        while !part.is_empty() {
            let n = (BLOCK - at).min(part.len());
            blocks[block].0[at..at + n].copy_from_slice(&part[..n]);
            part = &part[n..];
            at += n;
            if at == BLOCK {
                (block, at) = (block + 1, 0);
            }
        }
    }
}

impl Log {
    /// Creates the first segment and the log over it.
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
        let segment = Segment::create(
            &settings.dir,
            settings.first_segment,
            settings.prev_len,
            settings.fsync,
        )?;
        let committer = Committer {
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
            queued: Vec::new(),
            spare_frame: Vec::new(),
            unsynced: Unsynced::default(),
            settle_wanted: 0,
            in_flight: false,
            cap: CapCount::default(),
            thread_waiting: false,
            stopped: false,
            exit: false,
        };
        Ok(Self {
            state: Mutex::new(committer),
            work: Condvar::new(),
            idle: Condvar::new(),
        })
    }

    /// The committer's state; `None` after a panic while it was held (memory may not
    /// match the log any more: nothing more is written).
    fn lock(&self) -> Option<MutexGuard<'_, Committer>> {
        self.state.lock().ok()
    }

    /// Takes an entry on the caller's thread. `--fsync interval`: writes it (one
    /// `write`), applies it and answers it before returning. `--fsync always`: appends it
    /// to the next group; the fsync thread answers it once it is written and fsynced.
    /// Refusals (shutting down, sensor cap, write error) are answered at once.
    pub(super) fn submit(&self, pending: Pending) {
        let mut this = match self.state.lock() {
            Ok(this) => this,
            Err(poisoned) => {
                let claims = Arc::clone(&poisoned.get_ref().claims);
                return refuse(pending, &claims, "the log writer has failed");
            }
        };
        if this.stopped {
            let claims = Arc::clone(&this.claims);
            return refuse(pending, &claims, "the store is shutting down");
        }
        match this.settings.fsync {
            FsyncMode::Interval => this.write_now(pending),
            FsyncMode::Always => {
                if this.enqueue(pending) && this.thread_waiting {
                    this.thread_waiting = false;
                    self.work.notify_one();
                }
            }
        }
    }

    /// Starts a snapshot: settles what is written (the group in flight, then the queued
    /// entries, fsynced and applied), closes the segment, opens the next and begins
    /// copy-on-write.
    pub(super) fn rotate(&self) -> io::Result<Rotation> {
        let failed = || io::Error::other("the log writer has failed");
        let this = self.lock().ok_or_else(failed)?;
        let mut this = self.settle(this).ok_or_else(failed)?;
        this.rotate()
    }

    /// Ends the snapshot: hands over the before-images and stops copy-on-write.
    pub(super) fn end_snapshot(&self) -> HashMap<Box<str>, Delta> {
        // The before-images are whole even after a panic elsewhere under the lock.
        let mut this = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        this.cow.generation = 0;
        std::mem::take(&mut this.cow.before)
    }

    /// Settles what is written (fsync, apply, answer), refuses later entries and tells
    /// the fsync thread to exit.
    pub(super) fn stop(&self) {
        if let Some(this) = self.lock()
            && let Some(mut this) = self.settle(this)
        {
            this.stopped = true;
            this.exit = true;
        }
        self.work.notify_all();
    }

    /// Waits for the group in flight, then writes, fsyncs and applies what is queued and
    /// fsyncs what interval mode wrote, all under the lock. `None`: the lock is poisoned.
    fn settle<'a>(&'a self, mut this: MutexGuard<'a, Committer>) -> Option<MutexGuard<'a, Committer>> {
        this.settle_wanted += 1;
        while this.in_flight {
            this = self.idle.wait(this).ok()?;
        }
        while let Some(mut group) = this.take_group() {
            let outcome = group.write_and_sync();
            this.land(group, outcome);
        }
        this.sync_if_dirty();
        this.settle_wanted -= 1;
        // The fsync thread may have stopped taking groups for this settle.
        self.work.notify_all();
        Some(this)
    }

    /// The fsync thread, until [`Log::stop`]. `--fsync always`: takes everything queued
    /// as one group, writes and fsyncs it outside the lock (the entries that arrive
    /// meanwhile form the next group: group commit), then applies and answers it in log
    /// order, and yields its core before taking the next group. `--fsync interval`:
    /// fsyncs every `--fsync-interval` when anything was written.
    pub(super) fn run(&self) {
        let Some(mut this) = self.lock() else {
            return;
        };
        let interval = this.settings.fsync_interval;
        let always = this.settings.fsync == FsyncMode::Always;
        loop {
            if always
                && this.settle_wanted == 0
                && let Some(mut group) = this.take_group()
            {
                this.in_flight = true;
                drop(this);
                let outcome = group.write_and_sync();
                this = match self.state.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => return self.abandon(poisoned.into_inner(), Some(group)),
                };
                this.in_flight = false;
                self.idle.notify_all();
                this.land(group, outcome);
                // The request workers go first: on a core they share with this thread they
                // write the answers just given and take in the requests that arrive
                // meanwhile, which then share the next fsync instead of waiting for the
                // one after it (on one core: W2 at 64 connections 62 requests per fsync
                // instead of 17, W1 16 instead of 2; see the README). On an idle core
                // this returns at once.
                drop(this);
                std::thread::yield_now();
                this = match self.state.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => return self.abandon(poisoned.into_inner(), None),
                };
                continue;
            }
            if this.exit {
                return;
            }
            let waited = if always {
                this.thread_waiting = true;
                self.work.wait(this).ok()
            } else {
                let left = interval.saturating_sub(this.last_sync.elapsed());
                if left.is_zero() {
                    let Some(guard) = self.sync_unlocked(this) else {
                        return;
                    };
                    this = guard;
                    continue;
                }
                self.work.wait_timeout(this, left).ok().map(|(guard, _)| guard)
            };
            let Some(guard) = waited else {
                if let Err(poisoned) = self.state.lock() {
                    self.abandon(poisoned.into_inner(), None);
                }
                return;
            };
            this = guard;
            this.thread_waiting = false;
        }
    }

    /// After a panic while the lock was held: memory may not match the log, so nothing
    /// more is written. Answers the group in flight and every queued entry 503 (giving
    /// their claims back), wakes a waiting rotation or stop, and lets the thread exit.
    fn abandon(&self, mut this: MutexGuard<'_, Committer>, group: Option<Group>) {
        const MESSAGE: &str = "the log writer has failed";
        this.in_flight = false;
        this.stopped = true;
        this.exit = true;
        if let Some(group) = group {
            this.fail(group.entries, MESSAGE, true);
        }
        let queued = std::mem::take(&mut this.queued);
        this.fail(queued, MESSAGE, false);
        drop(this);
        self.idle.notify_all();
    }

    /// Interval mode: fsyncs what is written so far without holding the lock (writers go
    /// on meanwhile), then records it as durable.
    fn sync_unlocked<'a>(&'a self, mut this: MutexGuard<'a, Committer>) -> Option<MutexGuard<'a, Committer>> {
        this.last_sync = Instant::now();
        let Some(segment) = this.segment.as_ref().filter(|s| s.durable < s.len) else {
            return Some(this);
        };
        let (number, len, file) = (segment.number, segment.len, Arc::clone(&segment.file));
        let metrics = Arc::clone(&this.metrics);
        this.publish_unsynced();
        drop(this);
        let synced = timed_sync(&file, &metrics);
        let mut this = self.lock()?;
        // A rotation in the meantime fsynced that segment itself.
        if let Some(segment) = this.segment.as_mut().filter(|s| s.number == number) {
            match synced {
                Ok(()) => {
                    segment.durable = segment.durable.max(len);
                    this.mark_synced(len);
                }
                Err(e) => this.poison(&e),
            }
        }
        Some(this)
    }
}

/// Answers `pending` with a 503 and gives back its claim.
fn refuse(pending: Pending, claims: &Claims, message: &str) {
    if let Some((key, token)) = &pending.claim {
        claims.abort(key, token);
    }
    let _ = pending
        .reply
        .send(Err(StoreError::Unavailable(message.to_owned())));
}

impl Committer {
    /// Whether an entry passes the sensor cap; answers it (507) when it does not.
    fn admitted(&mut self, pending: Pending) -> Option<Pending> {
        let Some(max) = self.settings.max_sensors else {
            return Some(pending);
        };
        if self.admit(&pending, max) {
            return Some(pending);
        }
        if let Some((key, token)) = &pending.claim {
            self.claims.abort(key, token);
        }
        let _ = pending.reply.send(Err(StoreError::SensorCap(max)));
        None
    }

    /// Always mode: appends the entry to the next group; true when it was.
    fn enqueue(&mut self, pending: Pending) -> bool {
        let Some(pending) = self.admitted(pending) else {
            return false;
        };
        self.queued.push(pending);
        true
    }

    /// Always mode: the queued entries, up to [`MAX_GROUP_BYTES`] (at least one), as one
    /// group for the current segment (opened again after a failure, or the group fails
    /// at once).
    fn take_group(&mut self) -> Option<Group> {
        if self.queued.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let taken = self
            .queued
            .iter()
            .take_while(|p| {
                bytes += p.bytes.len();
                bytes <= MAX_GROUP_BYTES
            })
            .count()
            .max(1);
        let entries: Vec<Pending> = if taken == self.queued.len() {
            std::mem::take(&mut self.queued)
        } else {
            self.queued.drain(..taken).collect()
        };
        let frame = std::mem::take(&mut self.spare_frame);
        if self.segment.is_none()
            && let Err(message) = self.reopen()
        {
            self.fail(entries, &message, false);
            self.recount_cap();
            return None;
        }
        let frame_len = codec::FRAME_HEADER_LEN + entries.iter().map(|p| p.bytes.len()).sum::<usize>();
        let segment = self.segment.as_mut().expect("opened above");
        let end = segment.len + frame_len as u64;
        segment.reserve(end);
        let direct = segment.direct.as_mut().map(|d| {
            // Less than half of the zeroed run left past this group: zero the next one.
            let written_end = end.next_multiple_of(BLOCK as u64);
            let zero = (d.zeroing && written_end + ZERO_AHEAD / 2 > segment.allocated).then(|| {
                let from = segment.allocated.max(written_end);
                from..from + ZERO_AHEAD
            });
            if let Some(zero) = &zero {
                segment.allocated = zero.end;
            }
            DirectWrite {
                file: Arc::clone(&d.file),
                tail: std::mem::take(&mut d.tail),
                blocks: std::mem::take(&mut d.blocks),
                zero,
                fail_zero: self.shared.fail_zero_writes.load(Ordering::Relaxed),
            }
        });
        Some(Group {
            entries,
            frame,
            file: Arc::clone(&segment.file),
            start: segment.len,
            direct,
            fail_writes: self.shared.fail_writes.load(Ordering::Relaxed),
            metrics: Arc::clone(&self.metrics),
        })
    }

    /// Always mode: records what became of a group, then applies and answers it, or
    /// answers it 503 with nothing applied. A rotation waits for the group in flight, so
    /// the segment is still the one the group was written to.
    fn land(&mut self, group: Group, outcome: Outcome) {
        let Group {
            entries,
            frame,
            start,
            direct,
            ..
        } = group;
        let Some(segment) = self.segment.as_mut() else {
            self.fail(entries, "the log segment was closed", true);
            return self.recount_cap();
        };
        if let Some(lent) = direct {
            segment.give_back_direct(lent, &outcome, frame.len());
        }
        if let Err(e) = outcome.written {
            return self.undo_write(start, entries, &e);
        }
        segment.len = start + frame.len() as u64;
        self.metrics.wal_bytes(frame.len());
        if let Some(Err(e)) = outcome.synced {
            self.poison(&e);
            self.fail(entries, &format!("the log could not be fsynced: {e}"), true);
            return self.recount_cap();
        }
        segment.durable = segment.len;
        self.last_sync = Instant::now();
        self.metrics.flush(entries.len());
        self.apply(entries.into_iter());
        // The buffer serves the next group, unless this one was exceptionally large.
        if frame.capacity() <= 2 * MAX_GROUP_BYTES {
            self.spare_frame = frame;
        }
    }

    /// Interval mode: writes one entry as one frame (copied into the map, or one
    /// `pwrite`), applies and answers it.
    fn write_now(&mut self, pending: Pending) {
        let Some(pending) = self.admitted(pending) else {
            return;
        };
        if self.segment.is_none()
            && let Err(message) = self.reopen()
        {
            self.fail(vec![pending], &message, false);
            return self.recount_cap();
        }
        build_frame(&mut self.spare_frame, [pending.bytes.as_slice()]);
        let fail_writes = self.shared.fail_writes.load(Ordering::Relaxed);
        let segment = self.segment.as_mut().expect("opened above");
        let start = segment.len;
        let written = injected(fail_writes).and_then(|()| segment.write(&self.spare_frame, start));
        if let Err(e) = written {
            return self.undo_write(start, vec![pending], &e);
        }
        let len = self.spare_frame.len();
        segment.len += len as u64;
        self.unsynced.entries += 1;
        self.unsynced.bytes += len;
        self.apply(std::iter::once(pending));
    }

    /// Interval mode: records the entries and bytes written since the last fsync as one
    /// flush, as the fsync that covers them begins (one histogram sample per fsync, not a
    /// metric update per request on the hot path).
    fn publish_unsynced(&mut self) {
        let Unsynced { entries, bytes } = std::mem::take(&mut self.unsynced);
        if bytes > 0 {
            self.metrics.wal_bytes(bytes);
        }
        if entries > 0 {
            self.metrics.flush(entries);
        }
    }

    /// Interval mode: appends a synced mark for the segment's first `len` bytes (on disk
    /// with the next fsync), unless those bytes add nothing but the last mark to what that
    /// mark gives. A mark that cannot be written is cut back and left out: recovery then
    /// goes by the one before it.
    fn mark_synced(&mut self, len: u64) {
        let Some(segment) = self.segment.as_mut().filter(|s| s.interval) else {
            return;
        };
        let only_the_last_mark =
            len == segment.marked && segment.marked - MARK_FRAME_LEN == segment.mark_value;
        if len <= segment.mark_value || only_the_last_mark {
            return;
        }
        let frame = mark_frame(len);
        let start = segment.len;
        match segment.write(&frame, start) {
            Ok(()) => {
                segment.len += frame.len() as u64;
                segment.marked = segment.len;
                segment.mark_value = len;
                self.unsynced.bytes += frame.len();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the log's synced mark: left out");
                if let Err(undo) = segment.cut_back(start) {
                    self.poison(&undo);
                }
            }
        }
    }

    /// After a failed `write` of the frame that began at `start`: cuts back whatever part
    /// of it reached the file (a failed cut closes the segment) and answers `entries`
    /// 503 with nothing applied.
    fn undo_write(&mut self, start: u64, entries: Vec<Pending>, e: &io::Error) {
        if let Some(segment) = &mut self.segment
            && let Err(undo) = segment.cut_back(start)
        {
            self.poison(&undo);
        }
        self.fail(entries, &format!("the log cannot be written: {e}"), false);
        self.recount_cap();
    }

    /// Applies the entries to memory in order and answers them.
    fn apply(&mut self, entries: impl Iterator<Item = Pending>) {
        let mut apply = Apply {
            map: &self.map,
            claims: &self.claims,
            cow: &mut self.cow,
            entries: 0,
        };
        for p in entries {
            if let Err(e) = codec::decode_entries(&p.bytes, Kind::Log, &mut apply) {
                // Entries are encoded by this process: this is a bug, not bad input.
                tracing::error!(error = %e, "an entry this process encoded does not decode");
            }
            let _ = p.reply.send(Ok(()));
        }
        self.shared.applied.fetch_add(apply.entries, Ordering::Relaxed);
    }

    fn sync_if_dirty(&mut self) {
        let Some(segment) = &mut self.segment else {
            return;
        };
        if segment.durable < segment.len {
            self.publish_unsynced();
            let segment = self.segment.as_mut().expect("checked above");
            let len = segment.len;
            match timed_sync(&segment.file, &self.metrics) {
                Ok(()) => {
                    segment.durable = len;
                    // The segment may go on (a rotation that fails to open the next).
                    self.mark_synced(len);
                }
                Err(e) => self.poison(&e),
            }
        }
        self.last_sync = Instant::now();
    }

    /// Closes the (settled) segment and opens the next; begins copy-on-write.
    fn rotate(&mut self) -> io::Result<Rotation> {
        let prev_len = match &self.segment {
            Some(s) => s.durable,
            None => self.closed.1,
        };
        let next = Segment::create(
            &self.settings.dir,
            self.next_number,
            prev_len,
            self.settings.fsync,
        )?;
        if let Some(old) = self.segment.replace(next) {
            self.closed = (old.number, old.durable);
            old.give_back_reserved();
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
        match Segment::create(
            &self.settings.dir,
            self.next_number,
            self.closed.1,
            self.settings.fsync,
        ) {
            Ok(segment) => {
                tracing::info!(segment = segment.number, "log writable again: new segment opened");
                self.segment = Some(segment);
                self.next_number += 1;
                Ok(())
            }
            Err(e) => Err(format!("cannot open a new log segment: {e}")),
        }
    }

    /// Whether a batch may go in under the cap of `max` sensors, counting in log order
    /// what the entries before it that are not applied yet add and delete (only the
    /// lock's holder adds sensors, so this is exact); counts it in when it may.
    fn admit(&mut self, pending: &Pending, max: u64) -> bool {
        if self.queued.is_empty() && !self.in_flight {
            self.cap = CapCount {
                tracked: self.map.len() as u64,
                ..CapCount::default()
            };
        }
        let mut names = Names::default();
        // Entries are encoded by this process; one that does not decode goes on as is.
        let _ = codec::decode_entries(&pending.bytes, Kind::Log, &mut names);
        self.cap.count(&self.map, names, Some(max))
    }

    /// After entries failed (nothing else in flight): counts what the queued entries add
    /// and delete, from the map as it is.
    fn recount_cap(&mut self) {
        if self.settings.max_sensors.is_none() {
            return;
        }
        self.cap = CapCount {
            tracked: self.map.len() as u64,
            ..CapCount::default()
        };
        for p in &self.queued {
            let mut names = Names::default();
            let _ = codec::decode_entries(&p.bytes, Kind::Log, &mut names);
            self.cap.count(&self.map, names, None);
        }
    }

    /// Answers every request of `group` with a 503, gives back their claims, and logs
    /// (at most once a second).
    fn fail(&mut self, group: Vec<Pending>, message: &str, maybe_written: bool) {
        self.metrics.durable_write_error();
        if let Some(suppressed) = self.errors.admit() {
            tracing::error!(
                error = message,
                requests = group.len(),
                suppressed_since_last = suppressed,
                "log write failed: requests answered 503, nothing applied in memory"
            );
        }
        for p in group {
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

impl CapCount {
    /// Counts an entry's effect; with `max`, refuses (false, nothing counted) a batch
    /// that would take the count past it.
    fn count(&mut self, map: &SensorMap, names: Names, max: Option<u64>) -> bool {
        let exists =
            |cap: &Self, s: &str| cap.added.contains(s) || (map.contains(s) && !cap.removed.contains(s));
        if let Some(sensor) = names.deleted {
            if exists(self, &sensor) {
                self.tracked -= 1;
                self.added.remove(&sensor);
                self.removed.insert(sensor);
            }
            return true;
        }
        let new: Vec<Box<str>> = names.sensors.into_iter().filter(|s| !exists(self, s)).collect();
        if max.is_some_and(|max| self.tracked + new.len() as u64 > max) {
            return false;
        }
        self.tracked += new.len() as u64;
        for sensor in new {
            self.removed.remove(&sensor);
            self.added.insert(sensor);
        }
        true
    }
}

/// Makes `frame` one log frame of the entries: the header, then their bytes in order.
fn build_frame<'a>(frame: &mut Vec<u8>, entries: impl IntoIterator<Item = &'a [u8]>) {
    frame.clear();
    frame.resize(codec::FRAME_HEADER_LEN, 0);
    for bytes in entries {
        frame.extend_from_slice(bytes);
    }
    let header = codec::frame_header(&frame[codec::FRAME_HEADER_LEN..]);
    frame[..codec::FRAME_HEADER_LEN].copy_from_slice(&header);
}

/// A frame holding one synced mark for a segment's first `len` bytes.
fn mark_frame(len: u64) -> Vec<u8> {
    let mut mark = Vec::with_capacity(9);
    codec::encode_synced(&mut mark, len);
    let mut frame = Vec::with_capacity(MARK_FRAME_LEN as usize);
    build_frame(&mut frame, [mark.as_slice()]);
    frame
}

/// Whether frames can be written through a shared map of `file` without a full disk
/// killing the process: on ext4, XFS and tmpfs, a page inside `fallocate`d blocks needs
/// no space at its write fault. A copy-on-write filesystem (btrfs, ZFS) allocates at the
/// fault and answers a full disk with SIGBUS, and a network one with SIGBUS when its
/// server fails: those, and any other, get `pwrite`, whose errors are answered 503.
fn maps_safely(file: &File) -> bool {
    matches!(filesystem(file), Some(EXT4 | XFS | TMPFS))
}

/// Whether `file` is on ext4 or XFS, where `O_DIRECT` writes of 4 kB-aligned blocks are
/// taken as they are (tmpfs refuses `O_DIRECT`; other filesystems keep `pwrite`).
fn is_ext4_or_xfs(file: &File) -> bool {
    matches!(filesystem(file), Some(EXT4 | XFS))
}

const EXT4: u64 = 0xEF53;
const XFS: u64 = 0x5846_5342;
const TMPFS: u64 = 0x0102_1994;

/// The filesystem's magic number (`statfs`'s `f_type`).
fn filesystem(file: &File) -> Option<u64> {
    #[allow(clippy::unnecessary_cast, clippy::cast_sign_loss)]
    rustix::fs::fstatfs(file).ok().map(|fs| fs.f_type as u64)
}

/// Writes `blocks` at `offset` through an `O_DIRECT` descriptor, each write synced
/// (`RWF_DSYNC`): [`BLOCKS_PER_WRITE`] at a time, a short write being an error.
fn write_blocks(file: &File, blocks: &[Block], mut offset: u64) -> io::Result<()> {
    for chunk in blocks.chunks(BLOCKS_PER_WRITE) {
        let slices: Vec<IoSlice<'_>> = chunk.iter().map(|b| IoSlice::new(&b.0)).collect();
        let written = rustix::io::pwritev2(file, &slices, offset, rustix::io::ReadWriteFlags::DSYNC)?;
        if written != chunk.len() * BLOCK {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short direct write to the log",
            ));
        }
        offset += written as u64;
    }
    Ok(())
}

/// Writes zeros over `range` (block-aligned) through an `O_DIRECT` descriptor, not
/// synced: the next group's synced write records the blocks along with itself.
fn write_zeros(file: &File, range: Range<u64>) -> io::Result<()> {
    let mut offset = range.start;
    while offset < range.end {
        let len = usize::try_from(range.end - offset)
            .unwrap_or(usize::MAX)
            .min(ZEROS.0.len());
        let written = rustix::io::pwrite(file, &ZEROS.0[..len], offset)?;
        if written != len {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write of zeros"));
        }
        offset += len as u64;
    }
    Ok(())
}

/// Writes a whole frame at `offset`, the end of the log (one `pwrite`); with `fail`
/// (tests), fails as a full or broken disk would.
fn write_frame(file: &File, frame: &[u8], offset: u64, fail: bool) -> io::Result<()> {
    injected(fail).and_then(|()| file.write_all_at(frame, offset))
}

/// Tests: the failure of a full or broken disk, when `fail`.
fn injected(fail: bool) -> io::Result<()> {
    if fail {
        return Err(io::Error::other("write refused (injected failure)"));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::{BLOCK, BLOCKS_PER_WRITE, Block, fill_blocks, write_blocks};

    #[test]
    fn blocks_hold_the_tail_then_the_frame_then_zeros() {
        let tail: Vec<u8> = (0..100u8).collect();
        let frame: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut blocks = vec![Block([7; BLOCK]); 5];
        fill_blocks(&mut blocks, &tail, &frame);
        assert_eq!(blocks.len(), 3);
        let bytes: Vec<u8> = blocks.iter().flat_map(|b| b.0).collect();
        assert_eq!(&bytes[..100], &tail[..]);
        assert_eq!(&bytes[100..9100], &frame[..]);
        assert!(bytes[9100..].iter().all(|&b| b == 0));
        // A tail and frame that fill whole blocks leave no zeros.
        fill_blocks(&mut blocks, &tail, &frame[..BLOCK - 100]);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].0[BLOCK - 1], frame[BLOCK - 101]);
    }

    #[test]
    fn more_blocks_than_one_write_takes_land_at_their_offsets() {
        let file = tempfile::tempfile().unwrap();
        let count = BLOCKS_PER_WRITE * 2 + 3;
        let blocks: Vec<Block> = (0..count).map(|i| Block([(i % 255) as u8; BLOCK])).collect();
        write_blocks(&file, &blocks, BLOCK as u64).unwrap();
        let mut back = vec![0; (count + 1) * BLOCK];
        file.read_exact_at(&mut back, 0).unwrap();
        assert!(back[..BLOCK].iter().all(|&b| b == 0));
        for (i, block) in back[BLOCK..].chunks(BLOCK).enumerate() {
            assert!(block.iter().all(|&b| b == (i % 255) as u8), "block {i}");
        }
    }
}
