//! Start-up: reads the data dir back into memory (the newest snapshot, then the log after
//! it) and decides what to do with damage.
//!
//! - Zeros where a frame should start, to the end of the file, end the log: the blocks
//!   reserved ahead and never written (no warning, nothing is cut), in a segment no later
//!   segment gives a length for.
//! - Damage in the last segment at or past its largest synced mark (`--fsync interval`:
//!   the pages written after the last fsync reached the disk in part, or a crash
//!   mid-write) is the documented loss of that mode: the segment is copied aside as
//!   `*.corrupt` and cut there, with a warning. (Records of the last interval lost as
//!   zeros at the end cannot be told from reserved blocks: they end the log silently.)
//! - A torn last frame of the last segment of `--fsync always` (a crash mid-write:
//!   nothing valid follows it) was never acknowledged: it is cut off with a warning.
//! - Bytes of a segment past the length the next segment's header records were written
//!   before a failed write or fsync, never acknowledged: ignored with a warning.
//! - Anything else that does not check out (a damaged frame with valid frames after it, a
//!   damaged snapshot, a missing segment) stops the start with an error naming the file
//!   and the byte offset, unless `--recover truncate`: then what comes before the damage
//!   is kept, the damaged files are kept beside as `*.corrupt`, and the log says so.
//!
//! Nothing here starts empty over files it could not read: an unreadable directory or file
//! is an error, whatever `--recover` says.

use std::{
    fs::OpenOptions,
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::{
    codec::{self, Completed, FrameCheck, Kind, SEGMENT_MAGIC, Sink},
    map::{Cow, SensorMap},
    snapshot::{self, snapshot_path},
    wal::{Apply, segment_path, sync_dir},
};
use crate::store::Claims;

/// The data files of a directory, by number, ascending.
#[derive(Debug, Default)]
pub(super) struct DataFiles {
    pub(super) snapshots: Vec<u64>,
    pub(super) segments: Vec<u64>,
    pub(super) temporary: Vec<PathBuf>,
}

impl DataFiles {
    /// Lists `dir`.
    ///
    /// # Errors
    /// When the directory or one of its entries cannot be read.
    pub(super) fn list(dir: &Path) -> io::Result<Self> {
        let mut files = Self::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.ends_with(".tmp") {
                files.temporary.push(entry.path());
            } else if let Some(n) = number(name, "snapshot-", ".snap") {
                files.snapshots.push(n);
            } else if let Some(n) = number(name, "wal-", ".log") {
                files.segments.push(n);
            }
        }
        files.snapshots.sort_unstable();
        files.segments.sort_unstable();
        Ok(files)
    }
}

fn number(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// What recovery found, for the start-up log line and the committer.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// The snapshot loaded, if any.
    pub(super) snapshot: Option<u64>,
    pub(super) sensors_from_snapshot: u64,
    /// Log segments replayed.
    pub(super) segments: usize,
    /// Log frames (group commits) replayed.
    pub(super) frames: u64,
    /// Log entries (batches and deletes) replayed.
    pub(super) entries: u64,
    /// The segment the committer creates next, and the valid length of the one before it.
    pub(super) next_segment: u64,
    pub(super) prev_len: u64,
}

/// Reads `dir` into `map` and `claims` (both empty).
///
/// # Errors
/// Damage when `truncate` is false, and any I/O error reading the directory or a file.
pub(super) fn recover(
    dir: &Path,
    truncate: bool,
    map: &SensorMap,
    claims: &Claims,
) -> anyhow::Result<Recovered> {
    let files =
        DataFiles::list(dir).with_context(|| format!("cannot read the data dir {}", dir.display()))?;
    for tmp in &files.temporary {
        // A snapshot that was being written when the process stopped: never renamed, never used.
        std::fs::remove_file(tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    let mut recovered = Recovered::default();

    // 1. The newest snapshot that reads back whole.
    let mut base = None;
    for &n in files.snapshots.iter().rev() {
        let path = snapshot_path(dir, n);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        match snapshot::load(&bytes, n, map, claims) {
            Ok((sensors, _records)) => {
                base = Some(n);
                recovered.sensors_from_snapshot = sensors;
                break;
            }
            Err(damage) => {
                map.clear();
                claims.clear();
                if !truncate {
                    bail!(
                        "snapshot {} is damaged: {damage}. Refusing to start. `--recover truncate` \
                         starts from the snapshot before it and its log instead (nothing is lost if \
                         that log is whole), or from nothing if there is none",
                        path.display()
                    );
                }
                tracing::error!(
                    file = %path.display(),
                    offset = damage.offset,
                    reason = %damage.reason,
                    "snapshot damaged; --recover truncate: set aside as .corrupt, trying the one before it"
                );
                set_aside(&path)?;
            }
        }
    }
    recovered.snapshot = base;

    // 2. Where the log to replay starts: the snapshot's segment, or the very first one.
    let start = match base {
        Some(n) => n,
        None if files.segments.is_empty() || files.segments.first() == Some(&1) => 1,
        None => {
            let first = files.segments[0];
            let reason = if files.snapshots.is_empty() {
                format!("there is no snapshot and the log starts at segment {first}, not 1")
            } else {
                format!("no snapshot could be read and the log starts at segment {first}, not 1")
            };
            if !truncate {
                bail!(
                    "the data dir {} cannot be read back: {reason}. Refusing to start; \
                     `--recover truncate` starts EMPTY, keeping the files aside as .corrupt",
                    dir.display()
                );
            }
            tracing::error!(
                dir = %dir.display(),
                reason,
                "--recover truncate: STARTING EMPTY; every log segment is set aside as .corrupt"
            );
            for &n in &files.segments {
                set_aside(&segment_path(dir, n))?;
            }
            recovered.next_segment = 1;
            return Ok(recovered);
        }
    };

    // 3. Replay the segments from `start`, which must follow one another.
    let mut chain: Vec<u64> = files.segments.iter().copied().filter(|&n| n >= start).collect();
    if base.is_some() && chain.first() != Some(&start) {
        let message = format!(
            "snapshot {} needs log segment {} which is missing",
            snapshot_path(dir, start).display(),
            segment_path(dir, start).display()
        );
        if !truncate {
            bail!("{message}. Refusing to start (`--recover truncate` starts from the snapshot alone)");
        }
        tracing::error!("{message}; --recover truncate: starting from the snapshot alone");
        for n in chain.drain(..) {
            set_aside(&segment_path(dir, n))?;
        }
    }
    if let Some(gap) = chain.windows(2).find(|w| w[1] != w[0] + 1) {
        let message = format!(
            "log segment {} is missing (the log jumps from {} to {})",
            gap[0] + 1,
            segment_path(dir, gap[0]).display(),
            segment_path(dir, gap[1]).display()
        );
        if !truncate {
            bail!("{message}. Refusing to start (`--recover truncate` keeps the log before the gap)");
        }
        tracing::error!("{message}; --recover truncate: keeping the log before the gap");
        let keep = chain
            .iter()
            .position(|&n| n == gap[1])
            .expect("gap is in the chain");
        for n in chain.drain(keep..) {
            set_aside(&segment_path(dir, n))?;
        }
    }
    let mut cow = Cow::default();
    let mut apply = Apply {
        map,
        claims,
        cow: &mut cow,
        entries: 0,
    };
    recovered.next_segment = chain.last().map_or(start, |n| n + 1);
    let mut i = 0;
    while i < chain.len() {
        let n = chain[i];
        let path = segment_path(dir, n);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let is_last = i + 1 == chain.len();
        // The valid length of this segment, as recorded by the next one.
        let bound = if is_last {
            None
        } else {
            let next = segment_path(dir, chain[i + 1]);
            let head = read_head(&next)?;
            codec::decode_header(&head, SEGMENT_MAGIC, "log segment")
                .ok()
                .map(|h| h.extra)
        };
        let outcome = replay_segment(&path, n, &bytes, bound, is_last, &mut apply);
        match outcome {
            Ok(Replayed::Whole { frames, valid_len }) => {
                recovered.frames += frames;
                recovered.segments += 1;
                recovered.prev_len = valid_len;
            }
            Ok(Replayed::TornHeader) => {
                tracing::warn!(
                    file = %path.display(),
                    "last log segment has a torn header (a crash while it was created): removed"
                );
                std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
                sync_dir(dir)?;
                recovered.next_segment = n;
            }
            Err(Bad {
                offset,
                reason,
                frames,
            }) => {
                if !truncate {
                    bail!(
                        "log segment {} is damaged at byte offset {offset}: {reason}. Refusing to \
                         start; `--recover truncate` keeps the log before that offset and sets the \
                         rest aside",
                        path.display()
                    );
                }
                tracing::error!(
                    file = %path.display(),
                    offset,
                    reason,
                    "log damaged; --recover truncate: keeping the {frames} frames before the offset, \
                     the rest of the log is set aside as .corrupt"
                );
                let copy = corrupt_path(&path);
                std::fs::copy(&path, &copy).with_context(|| format!("cannot copy {}", path.display()))?;
                cut(&path, offset)?;
                for later in chain.drain(i + 1..) {
                    set_aside(&segment_path(dir, later))?;
                }
                recovered.frames += frames;
                recovered.segments += 1;
                recovered.prev_len = offset;
                recovered.next_segment = n + 1;
            }
        }
        i += 1;
    }
    recovered.entries = apply.entries;
    Ok(recovered)
}

enum Replayed {
    Whole {
        frames: u64,
        valid_len: u64,
    },
    /// The last segment's header never made it to disk whole.
    TornHeader,
}

/// Damage inside a segment: where, why, and how many frames before it were applied.
struct Bad {
    offset: u64,
    reason: String,
    frames: u64,
}

fn replay_segment(
    path: &Path,
    number: u64,
    bytes: &[u8],
    bound: Option<u64>,
    is_last: bool,
    apply: &mut Apply<'_>,
) -> Result<Replayed, Bad> {
    let bad = |offset: usize, reason: String, frames: u64| Bad {
        offset: offset as u64,
        reason,
        frames,
    };
    match codec::decode_header(bytes, SEGMENT_MAGIC, "log segment") {
        Ok(h) if h.number == number => {}
        Ok(h) => return Err(bad(0, format!("header says segment {}", h.number), 0)),
        // A torn header with nothing valid after it but the first synced mark (written
        // with it) is a segment that was never used; a later mark would prove fsynced
        // records.
        Err(_) if is_last && never_used(bytes) => return Ok(Replayed::TornHeader),
        Err(e) => return Err(bad(0, format!("file header: {e}"), 0)),
    }
    let end = match bound {
        None => bytes.len(),
        Some(b) if b as usize > bytes.len() || (b as usize) < codec::HEADER_LEN => {
            return Err(bad(
                bytes.len(),
                format!(
                    "the next segment records {b} valid bytes, the file has {}",
                    bytes.len()
                ),
                0,
            ));
        }
        Some(b) => {
            // Zeros past the bound are reserved blocks, not writes.
            if bytes[b as usize..].iter().any(|&byte| byte != 0) {
                tracing::warn!(
                    file = %path.display(),
                    offset = b,
                    bytes = bytes.len() - b as usize,
                    "bytes written before a failed write or fsync, never acknowledged: ignored"
                );
            }
            b as usize
        }
    };
    let mut pos = codec::HEADER_LEN;
    let mut frames = 0;
    let mut replay = Replay {
        apply,
        synced: None,
        interval: false,
    };
    while pos < end {
        let window = &bytes[pos..end];
        let problem = match codec::check_frame(window) {
            FrameCheck::Valid(len) => {
                let payload = &window[codec::FRAME_HEADER_LEN..codec::FRAME_HEADER_LEN + len];
                match codec::decode_entries(payload, Kind::Log, &mut codec::Check) {
                    Ok(()) => {
                        let before = replay.apply.entries;
                        codec::decode_entries(payload, Kind::Log, &mut replay).expect("checked just above");
                        if pos == codec::HEADER_LEN && replay.synced == Some(codec::HEADER_LEN as u64) {
                            replay.interval = true;
                        }
                        // A frame holding only a synced mark is not a record.
                        frames += u64::from(replay.apply.entries > before);
                        pos += codec::FRAME_HEADER_LEN + len;
                        continue;
                    }
                    Err(e) => e.to_string(),
                }
            }
            FrameCheck::Incomplete => "frame cut short".to_owned(),
            FrameCheck::Damaged => "frame checksum mismatch".to_owned(),
        };
        // Blocks reserved ahead and never written: the end of the log, unless a later
        // segment says this one holds more. The file is cut there, best effort, to give
        // the reserved blocks back.
        if bound.is_none() && window.iter().all(|&byte| byte == 0) {
            if let Err(e) = cut(path, pos as u64) {
                tracing::debug!(file = %path.display(), error = %e, "cannot give back reserved log blocks");
            }
            return Ok(Replayed::Whole {
                frames,
                valid_len: pos as u64,
            });
        }
        // Only a segment written with `--fsync interval` (its first frame is the header's
        // mark) may have lost pages between fsyncs. The last mark may also be in a valid
        // frame after the damage: then the damage was on disk before it, not lost with
        // the last interval.
        if is_last
            && replay.interval
            && let Some(synced) = replay
                .synced
                .max(scan(window, 1).synced)
                .filter(|&synced| pos as u64 >= synced)
        {
            tracing::warn!(
                file = %path.display(),
                offset = pos,
                synced,
                bytes = end - pos,
                reason = %problem,
                "damage after the last fsync of an --fsync interval log (a crash mid-write, an OS \
                 crash or a power loss): the records from here on were written after that fsync, \
                 and those of them that were answered are the loss the mode allows (the last \
                 --fsync-interval); the segment is copied aside as .corrupt and cut here"
            );
            let kept = std::fs::copy(path, corrupt_path(path))
                .with_context(|| format!("cannot copy {}", path.display()))
                .and_then(|_| cut(path, pos as u64));
            if let Err(e) = kept {
                return Err(bad(
                    pos,
                    format!("{problem}, and cutting it failed: {e:#}"),
                    frames,
                ));
            }
            return Ok(Replayed::Whole {
                frames,
                valid_len: pos as u64,
            });
        }
        let torn = is_last && codec::any_valid_frame(&window[1..]).is_none();
        if torn {
            tracing::warn!(
                file = %path.display(),
                offset = pos,
                bytes = end - pos,
                "torn last record (a crash mid-write; it was never acknowledged): cut off"
            );
            if let Err(e) = cut(path, pos as u64) {
                return Err(bad(
                    pos,
                    format!("torn tail, and cutting it failed: {e:#}"),
                    frames,
                ));
            }
            return Ok(Replayed::Whole {
                frames,
                valid_len: pos as u64,
            });
        }
        return Err(bad(pos, problem, frames));
    }
    Ok(Replayed::Whole {
        frames,
        valid_len: end as u64,
    })
}

/// Whether a segment whose header is unreadable holds nothing fsynced: no record, and no
/// mark past the header's.
fn never_used(bytes: &[u8]) -> bool {
    let found = scan(bytes, 0);
    !found.records && found.synced.is_none_or(|len| len <= codec::HEADER_LEN as u64)
}

/// What the valid frames found in `bytes` from offset `skip` on hold.
fn scan(bytes: &[u8], skip: usize) -> Scan {
    let mut scan = Scan::default();
    let mut from = skip;
    while let Some(found) = bytes.get(from..).and_then(codec::any_valid_frame) {
        let at = from + found;
        let FrameCheck::Valid(len) = codec::check_frame(&bytes[at..]) else {
            break;
        };
        let payload = &bytes[at + codec::FRAME_HEADER_LEN..at + codec::FRAME_HEADER_LEN + len];
        // A payload that does not decode gives nothing.
        let _ = codec::decode_entries(payload, Kind::Log, &mut scan);
        from = at + codec::FRAME_HEADER_LEN + len;
    }
    scan
}

/// The largest synced mark, and whether any batch or delete, among decoded frames.
#[derive(Default)]
struct Scan {
    synced: Option<u64>,
    records: bool,
}

impl Sink for Scan {
    fn delta(&mut self, _: &str, _: &crate::domain::Delta) {}
    fn delete(&mut self, _: &str) {
        self.records = true;
    }
    fn completed(&mut self, _: Completed<'_>) {}
    fn batch_end(&mut self) {
        self.records = true;
    }
    fn synced(&mut self, len: u64) {
        self.synced = self.synced.max(Some(len));
    }
}

/// Applies a segment's frames and keeps its last synced mark.
struct Replay<'r, 'a> {
    apply: &'r mut Apply<'a>,
    /// How many of the segment's bytes the last mark read says were on disk.
    synced: Option<u64>,
    /// The segment opens with the header's mark: written with `--fsync interval`.
    interval: bool,
}

impl Sink for Replay<'_, '_> {
    fn delta(&mut self, sensor: &str, delta: &crate::domain::Delta) {
        self.apply.delta(sensor, delta);
    }

    fn delete(&mut self, sensor: &str) {
        self.apply.delete(sensor);
    }

    fn completed(&mut self, completed: Completed<'_>) {
        self.apply.completed(completed);
    }

    fn batch_end(&mut self) {
        self.apply.batch_end();
    }

    fn synced(&mut self, len: u64) {
        self.synced = Some(len);
    }
}

fn read_head(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut head = Vec::with_capacity(codec::HEADER_LEN);
    std::fs::File::open(path)
        .and_then(|f| f.take(codec::HEADER_LEN as u64).read_to_end(&mut head))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(head)
}

/// Cuts `path` to `len` bytes, durably.
fn cut(path: &Path, len: u64) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {} to cut it", path.display()))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot cut {} to {len} bytes", path.display()))
}

fn corrupt_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".corrupt");
    PathBuf::from(name)
}

/// Renames `path` to `<path>.corrupt`, durably.
fn set_aside(path: &Path) -> anyhow::Result<()> {
    std::fs::rename(path, corrupt_path(path))
        .with_context(|| format!("cannot set {} aside", path.display()))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}
