//! Snapshot files: writing one (temporary file, fsync, rename, directory fsync), reading
//! one back, and deleting what a new snapshot makes unnecessary.
//!
//! A snapshot named `snapshot-<K>.snap` holds the whole store as it was after every log
//! segment before `K`: one entry per sensor, the live idempotency records, and a closing
//! entry with both counts, in checksummed frames of about 1 MiB.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufWriter, Write as _},
    path::{Path, PathBuf},
};

use super::{
    codec::{self, CodecError, Completed, FrameCheck, Header, Kind, SNAPSHOT_MAGIC, Sink},
    map::SensorMap,
    wal::{segment_path, sync_dir},
};
use crate::{domain::Delta, store::Claims};

/// Frames of a snapshot are cut at about this size.
const FRAME_BYTES: usize = 1 << 20;

/// The path of snapshot `number` in `dir`.
pub(super) fn snapshot_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("snapshot-{number:020}.snap"))
}

/// What a written snapshot holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Written {
    pub(super) bytes: u64,
    pub(super) sensors: u64,
    pub(super) records: u64,
}

/// Writes snapshot `number` of generation `generation` from `map` and `claims`, taking
/// the writer's before-images from `end` once every cell has been visited. `end` is
/// called whatever happens, so the writer always stops copying.
///
/// # Errors
/// When the file cannot be written, synced or renamed; the temporary file is removed.
pub(super) fn write(
    dir: &Path,
    number: u64,
    generation: u64,
    created_ms: u64,
    map: &SensorMap,
    claims: &Claims,
    end: impl FnOnce() -> HashMap<Box<str>, Delta>,
) -> io::Result<Written> {
    let path = snapshot_path(dir, number);
    let tmp = path.with_extension("snap.tmp");
    let mut end = Some(end);
    let result = write_file(&tmp, number, generation, created_ms, map, claims, &mut end);
    if let Some(end) = end {
        // The file could not even be created: the writer must still stop copying.
        end();
    }
    let written = match result {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(written)
}

fn write_file(
    tmp: &Path,
    number: u64,
    generation: u64,
    created_ms: u64,
    map: &SensorMap,
    claims: &Claims,
    end: &mut Option<impl FnOnce() -> HashMap<Box<str>, Delta>>,
) -> io::Result<Written> {
    let mut out = Frames::new(tmp)?;
    out.write_raw(&codec::encode_header(
        SNAPSHOT_MAGIC,
        Header {
            number,
            extra: created_ms,
        },
    ));
    let mut sensors = 0u64;
    map.visit(generation, |sensor, totals| {
        codec::encode_sensor(&mut out.payload, sensor, totals);
        sensors += 1;
        out.cut_if_full();
    });
    // The writer's before-images complete the cut; `end` must run even after an error.
    let before = end.take().map(|end| end()).unwrap_or_default();
    for (sensor, totals) in before {
        codec::encode_sensor(&mut out.payload, &sensor, &totals);
        sensors += 1;
        out.cut_if_full();
    }
    let mut records = 0u64;
    for (key, fingerprint, at_ms) in claims.completed() {
        codec::encode_completed(
            &mut out.payload,
            Completed {
                key: &key,
                fingerprint,
                at_ms,
            },
        );
        records += 1;
        out.cut_if_full();
    }
    codec::encode_end(&mut out.payload, sensors, records);
    let bytes = out.finish()?;
    Ok(Written {
        bytes,
        sensors,
        records,
    })
}

/// A buffered file written as frames; the first error is kept and later writes skipped.
struct Frames {
    file: BufWriter<File>,
    payload: Vec<u8>,
    written: u64,
    error: Option<io::Error>,
}

impl Frames {
    fn new(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: BufWriter::with_capacity(FRAME_BYTES, File::create(path)?),
            payload: Vec::with_capacity(FRAME_BYTES + 1024),
            written: 0,
            error: None,
        })
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            match self.file.write_all(bytes) {
                Ok(()) => self.written += bytes.len() as u64,
                Err(e) => self.error = Some(e),
            }
        }
    }

    fn cut_if_full(&mut self) {
        if self.payload.len() >= FRAME_BYTES {
            self.cut();
        }
    }

    fn cut(&mut self) {
        let payload = std::mem::take(&mut self.payload);
        self.write_raw(&codec::frame_header(&payload));
        self.write_raw(&payload);
        self.payload = payload;
        self.payload.clear();
    }

    fn finish(mut self) -> io::Result<u64> {
        self.cut();
        if let Some(e) = self.error {
            return Err(e);
        }
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.written)
    }
}

/// A snapshot that cannot be used: where and why.
#[derive(Debug, thiserror::Error)]
#[error("{reason} at byte offset {offset}")]
pub(super) struct Damage {
    pub(super) offset: u64,
    pub(super) reason: String,
}

/// Loads snapshot `bytes` (the whole file) into `map` and `claims`; returns (sensors,
/// records). On error the caller must clear both: part of the file may have been loaded.
///
/// # Errors
/// [`Damage`] at the first byte that is not what the format says.
pub(super) fn load(
    bytes: &[u8],
    expected_number: u64,
    map: &SensorMap,
    claims: &Claims,
) -> Result<(u64, u64), Damage> {
    let damage = |offset: usize, reason: String| Damage {
        offset: offset as u64,
        reason,
    };
    let header = codec::decode_header(bytes, SNAPSHOT_MAGIC, "snapshot")
        .map_err(|e| damage(0, format!("file header: {e}")))?;
    if header.number != expected_number {
        return Err(damage(
            0,
            format!(
                "header says snapshot {}, the name {expected_number}",
                header.number
            ),
        ));
    }
    let mut sink = Load {
        map,
        claims,
        sensors: 0,
        records: 0,
        end: None,
    };
    let mut pos = codec::HEADER_LEN;
    while pos < bytes.len() {
        if sink.end.is_some() {
            return Err(damage(pos, "bytes after the closing entry".into()));
        }
        let len = match codec::check_frame(&bytes[pos..]) {
            FrameCheck::Valid(len) => len,
            FrameCheck::Incomplete => return Err(damage(pos, "frame cut short".into())),
            FrameCheck::Damaged => return Err(damage(pos, "frame checksum mismatch".into())),
        };
        let payload = &bytes[pos + codec::FRAME_HEADER_LEN..pos + codec::FRAME_HEADER_LEN + len];
        codec::decode_entries(payload, Kind::Snapshot, &mut sink)
            .map_err(|e: CodecError| damage(pos, e.to_string()))?;
        pos += codec::FRAME_HEADER_LEN + len;
    }
    match sink.end {
        Some((sensors, records)) if sensors == sink.sensors && records == sink.records => {
            Ok((sensors, records))
        }
        Some((sensors, records)) => Err(damage(
            pos,
            format!(
                "closing entry counts {sensors} sensors and {records} records, the file holds {} and {}",
                sink.sensors, sink.records
            ),
        )),
        None => Err(damage(pos, "no closing entry (the file is cut short)".into())),
    }
}

struct Load<'a> {
    map: &'a SensorMap,
    claims: &'a Claims,
    sensors: u64,
    records: u64,
    end: Option<(u64, u64)>,
}

impl Sink for Load<'_> {
    fn delta(&mut self, sensor: &str, totals: &Delta) {
        self.map.set(sensor, totals);
        self.sensors += 1;
    }

    fn delete(&mut self, _: &str) {}

    fn completed(&mut self, c: Completed<'_>) {
        self.claims.finish(c.key, c.fingerprint, c.at_ms);
        self.records += 1;
    }

    fn end(&mut self, sensors: u64, records: u64) {
        self.end = Some((sensors, records));
    }
}

/// After snapshot `newest` is durable: keeps it and the snapshot before it (with the log
/// from there, so a damaged newest snapshot can be recovered from), deletes the rest.
/// Returns the removed files; failures are logged, not fatal.
pub(super) fn retain(dir: &Path, newest: u64) -> Vec<PathBuf> {
    let Ok(files) = super::recovery::DataFiles::list(dir) else {
        return Vec::new();
    };
    let previous = files.snapshots.iter().copied().filter(|&n| n < newest).max();
    let mut removed = Vec::new();
    if let Some(previous) = previous {
        for n in files.snapshots.iter().copied().filter(|&n| n < previous) {
            removed.push(snapshot_path(dir, n));
        }
        for n in files.segments.iter().copied().filter(|&n| n < previous) {
            removed.push(segment_path(dir, n));
        }
    }
    removed.retain(|path| match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, file = %path.display(), "cannot remove an old data file");
            false
        }
    });
    if !removed.is_empty() {
        let _ = sync_dir(dir);
    }
    removed
}
