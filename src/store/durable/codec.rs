//! The byte formats of the data dir: versioned file headers, checksummed frames, and the
//! entries inside frames (log operations, snapshot entries). Pure functions, no I/O.
//!
//! Every integer is little-endian; every checksum is CRC-32 (IEEE, `crc32fast`).
//!
//! - File header, 32 bytes: magic (8) | format version u32 | number u64 | extra u64 |
//!   CRC of the 28 bytes before it. For a log segment `number` is the segment and
//!   `extra` how many bytes of the previous segment are valid; for a snapshot `number`
//!   is the first segment it does not cover and `extra` its creation time (Unix ms).
//! - Frame: magic (4) | payload length u32 | CRC of (length, payload) u32 | payload. A
//!   frame is the unit that is written, checked and cut: one group commit writes one.
//! - Entries, one after another in a payload, each starting with a tag byte:
//!   1 batch (log), 2 delete (log), 3 sensor, 4 idempotency record, 5 end (snapshot),
//!   6 synced (log, `--fsync interval`: the segment's first this many bytes were
//!   fsynced before this entry was written).

use crate::domain::{Batch, Delta, Fingerprint, Timestamp};

/// Magic of a log segment file.
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"SSTATWAL";
/// Magic of a snapshot file.
pub(super) const SNAPSHOT_MAGIC: [u8; 8] = *b"SSTATSNP";
/// The one format version this build reads and writes.
pub(super) const FORMAT_VERSION: u32 = 1;
/// Length of a file header.
pub(super) const HEADER_LEN: usize = 32;
/// Magic at the start of every frame (lets a reader find frames after a damaged one).
pub(super) const FRAME_MAGIC: [u8; 4] = [0xf5, b'S', b'F', 0x01];
/// Length of a frame header.
pub(super) const FRAME_HEADER_LEN: usize = 12;
/// No frame is larger: a length above it is damage, not data.
pub(super) const MAX_FRAME_LEN: usize = 1 << 30;

const TAG_BATCH: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_SENSOR: u8 = 3;
const TAG_COMPLETED: u8 = 4;
const TAG_END: u8 = 5;
const TAG_SYNCED: u8 = 6;

/// Why bytes are not what the format says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum CodecError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: {0}")]
    Short(&'static str),
    /// The magic bytes are not ours.
    #[error("not a sensor-stats {0} file (wrong magic bytes)")]
    Magic(&'static str),
    /// Another format version.
    #[error("format version {0}, this build reads version {FORMAT_VERSION} only")]
    Version(u32),
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// Checksummed bytes that still make no sense (a bug, or deliberate tampering).
    #[error("invalid entry: {0}")]
    Invalid(&'static str),
}

/// The fields of a file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) number: u64,
    pub(super) extra: u64,
}

/// The header of a file with `magic`.
pub(super) fn encode_header(magic: [u8; 8], header: Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(&magic);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&header.number.to_le_bytes());
    out[20..28].copy_from_slice(&header.extra.to_le_bytes());
    let crc = crc32fast::hash(&out[..28]);
    out[28..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the header of a file that should start with `magic` (`what` names the kind).
pub(super) fn decode_header(bytes: &[u8], magic: [u8; 8], what: &'static str) -> Result<Header, CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::Short("file header"));
    }
    let crc = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..28]) != crc {
        return Err(CodecError::Checksum);
    }
    if bytes[..8] != magic {
        return Err(CodecError::Magic(what));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(CodecError::Version(version));
    }
    Ok(Header {
        number: u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")),
        extra: u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes")),
    })
}

/// The header of a frame carrying `payload`; the caller writes it, then the payload.
pub(super) fn frame_header(payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let len = u32::try_from(payload.len()).expect("frames are smaller than MAX_FRAME_LEN");
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    let mut out = [0u8; FRAME_HEADER_LEN];
    out[..4].copy_from_slice(&FRAME_MAGIC);
    out[4..8].copy_from_slice(&len.to_le_bytes());
    out[8..].copy_from_slice(&hasher.finalize().to_le_bytes());
    out
}

/// What is found at the start of `bytes` when a frame is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameCheck {
    /// A whole, intact frame whose payload is this long.
    Valid(usize),
    /// The bytes end before the frame does.
    Incomplete,
    /// Not a frame: wrong magic, impossible length or checksum mismatch.
    Damaged,
}

/// Checks the frame at the start of `bytes`.
pub(super) fn check_frame(bytes: &[u8]) -> FrameCheck {
    if bytes.len() < FRAME_HEADER_LEN {
        return if FRAME_MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            FrameCheck::Incomplete
        } else {
            FrameCheck::Damaged
        };
    }
    if bytes[..4] != FRAME_MAGIC {
        return FrameCheck::Damaged;
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME_LEN {
        return FrameCheck::Damaged;
    }
    let Some(payload) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return FrameCheck::Incomplete;
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[4..8]);
    hasher.update(payload);
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if hasher.finalize() == crc {
        FrameCheck::Valid(len)
    } else {
        FrameCheck::Damaged
    }
}

/// Whether an intact frame starts anywhere in `bytes` (used to tell a torn tail, after
/// which nothing valid follows, from damage in the middle).
pub(super) fn any_valid_frame(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = find(&bytes[from..], &FRAME_MAGIC) {
        let at = from + pos;
        if let FrameCheck::Valid(_) = check_frame(&bytes[at..]) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8; 4]) -> Option<usize> {
    haystack.windows(4).position(|w| w == needle)
}

/// The idempotency record a batch completes, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Completed<'a> {
    pub(super) key: &'a str,
    pub(super) fingerprint: Fingerprint,
    /// When the request succeeded, Unix milliseconds (the window counts from it).
    pub(super) at_ms: u64,
}

/// Appends a batch entry: its deltas and, in the same entry, its idempotency record.
pub(super) fn encode_batch(out: &mut Vec<u8>, batch: &Batch<'_>, completion: Option<Completed<'_>>) {
    out.reserve(8 + batch.sensors() * 48);
    out.push(TAG_BATCH);
    out.extend_from_slice(&(batch.sensors() as u32).to_le_bytes());
    for (sensor, delta) in batch.deltas() {
        encode_sensor_body(out, sensor.as_str(), delta);
    }
    // After the deltas: a retry that finds the record finds the batch applied.
    match completion {
        None => out.push(0),
        Some(c) => {
            out.push(1);
            encode_completed_body(out, c);
        }
    }
}

/// Appends a delete entry.
pub(super) fn encode_delete(out: &mut Vec<u8>, sensor: &str) {
    out.push(TAG_DELETE);
    encode_str16(out, sensor);
}

/// Appends a snapshot entry holding a sensor's whole statistics.
pub(super) fn encode_sensor(out: &mut Vec<u8>, sensor: &str, totals: &Delta) {
    out.push(TAG_SENSOR);
    encode_sensor_body(out, sensor, totals);
}

/// Appends a snapshot entry holding an idempotency record.
pub(super) fn encode_completed(out: &mut Vec<u8>, completed: Completed<'_>) {
    out.push(TAG_COMPLETED);
    encode_completed_body(out, completed);
}

/// Appends the entry that closes a snapshot: how many sensors and records it holds.
pub(super) fn encode_end(out: &mut Vec<u8>, sensors: u64, records: u64) {
    out.push(TAG_END);
    out.extend_from_slice(&sensors.to_le_bytes());
    out.extend_from_slice(&records.to_le_bytes());
}

/// Appends a synced mark: the segment's first `len` bytes are on disk.
pub(super) fn encode_synced(out: &mut Vec<u8>, len: u64) {
    out.push(TAG_SYNCED);
    out.extend_from_slice(&len.to_le_bytes());
}

fn encode_str16(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("sensor ids are at most 256 bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_sensor_body(out: &mut Vec<u8>, sensor: &str, d: &Delta) {
    encode_str16(out, sensor);
    out.extend_from_slice(&d.count.to_le_bytes());
    out.extend_from_slice(&d.sum.to_bits().to_le_bytes());
    let key = d.latest.to_key();
    out.extend_from_slice(&((key >> 32) as u64).to_le_bytes());
    out.extend_from_slice(&(key as u32).to_le_bytes());
}

fn encode_completed_body(out: &mut Vec<u8>, c: Completed<'_>) {
    let len = u8::try_from(c.key.len()).expect("idempotency keys are at most 255 bytes");
    out.push(len);
    out.extend_from_slice(c.key.as_bytes());
    out.extend_from_slice(c.fingerprint.as_bytes());
    out.extend_from_slice(&c.at_ms.to_le_bytes());
}

/// What a decoded entry asks for. Log payloads call the first three; snapshots call
/// `delta` (with a sensor's whole statistics), `completed` and `end`.
pub(super) trait Sink {
    /// Add `delta` to `sensor` (in a snapshot: `sensor` has these statistics).
    fn delta(&mut self, sensor: &str, delta: &Delta);
    /// Forget `sensor`.
    fn delete(&mut self, sensor: &str);
    /// Remember an idempotency record.
    fn completed(&mut self, completed: Completed<'_>);
    /// A batch entry is complete (its deltas and its record have been given).
    fn batch_end(&mut self) {}
    /// The snapshot's closing entry.
    fn end(&mut self, _sensors: u64, _records: u64) {}
    /// A synced mark of the log: its segment's first `len` bytes were on disk.
    fn synced(&mut self, _len: u64) {}
}

/// A sink that only checks: decoding into it validates a payload without applying it.
pub(super) struct Check;

impl Sink for Check {
    fn delta(&mut self, _: &str, _: &Delta) {}
    fn delete(&mut self, _: &str) {}
    fn completed(&mut self, _: Completed<'_>) {}
}

/// Which entries a payload may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A log frame: batches and deletes.
    Log,
    /// A snapshot frame: sensors, idempotency records, the end.
    Snapshot,
}

/// Decodes every entry of `payload` into `sink`, in order.
///
/// # Errors
/// [`CodecError`] at the first entry that is cut short or makes no sense; entries
/// before it have reached `sink` (decode into [`Check`] first to apply all or nothing).
pub(super) fn decode_entries(payload: &[u8], kind: Kind, sink: &mut impl Sink) -> Result<(), CodecError> {
    let mut r = Reader(payload);
    while !r.0.is_empty() {
        match (r.u8()?, kind) {
            (TAG_BATCH, Kind::Log) => {
                let n = r.u32()?;
                for _ in 0..n {
                    let (sensor, delta) = r.sensor()?;
                    sink.delta(sensor, &delta);
                }
                match r.u8()? {
                    0 => {}
                    1 => sink.completed(r.completed()?),
                    _ => return Err(CodecError::Invalid("completion flag")),
                }
                sink.batch_end();
            }
            (TAG_DELETE, Kind::Log) => sink.delete(r.str16()?),
            (TAG_SYNCED, Kind::Log) => sink.synced(r.u64()?),
            (TAG_SENSOR, Kind::Snapshot) => {
                let (sensor, totals) = r.sensor()?;
                sink.delta(sensor, &totals);
            }
            (TAG_COMPLETED, Kind::Snapshot) => sink.completed(r.completed()?),
            (TAG_END, Kind::Snapshot) => {
                let sensors = r.u64()?;
                let records = r.u64()?;
                if !r.0.is_empty() {
                    return Err(CodecError::Invalid("entries after the end entry"));
                }
                sink.end(sensors, records);
            }
            _ => return Err(CodecError::Invalid("unknown entry tag")),
        }
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Short("entry"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn str16(&mut self) -> Result<&'a str, CodecError> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
        let s = std::str::from_utf8(self.take(usize::from(len))?)
            .map_err(|_| CodecError::Invalid("sensor id is not UTF-8"))?;
        if s.is_empty() || s.len() > crate::domain::MAX_SENSOR_ID_BYTES {
            return Err(CodecError::Invalid("sensor id length"));
        }
        Ok(s)
    }

    fn sensor(&mut self) -> Result<(&'a str, Delta), CodecError> {
        let sensor = self.str16()?;
        let count = self.u64()?;
        let sum = f64::from_bits(self.u64()?);
        let high = self.u64()?;
        let low = self.u32()?;
        let latest = Timestamp::from_key((u128::from(high) << 32) | u128::from(low))
            .ok_or(CodecError::Invalid("timestamp"))?;
        // Any sum is valid, infinities and NaN included: values near ±1.8e308 overflow a
        // batch's sum as they overflow the memory store's, whose `avg` is then `null`.
        // The record's checksum, not the value, tells a damaged record.
        if count == 0 {
            return Err(CodecError::Invalid("count"));
        }
        Ok((sensor, Delta { count, sum, latest }))
    }

    fn completed(&mut self) -> Result<Completed<'a>, CodecError> {
        let len = self.u8()?;
        let key = std::str::from_utf8(self.take(usize::from(len))?)
            .map_err(|_| CodecError::Invalid("idempotency key is not UTF-8"))?;
        let fingerprint = Fingerprint::from_bytes(self.take(32)?.try_into().expect("32 bytes"));
        let at_ms = self.u64()?;
        Ok(Completed {
            key,
            fingerprint,
            at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SensorId;

    #[derive(Default, Debug, PartialEq)]
    struct Collect(Vec<String>);

    impl Sink for Collect {
        fn delta(&mut self, sensor: &str, d: &Delta) {
            self.0
                .push(format!("{sensor} {} {} {}", d.count, d.sum, d.latest));
        }
        fn delete(&mut self, sensor: &str) {
            self.0.push(format!("delete {sensor}"));
        }
        fn completed(&mut self, c: Completed<'_>) {
            self.0.push(format!("key {} {}", c.key, c.at_ms));
        }
        fn end(&mut self, s: u64, r: u64) {
            self.0.push(format!("end {s} {r}"));
        }
        fn synced(&mut self, len: u64) {
            self.0.push(format!("synced {len}"));
        }
    }

    #[test]
    fn a_synced_mark_is_a_log_entry_only() {
        let mut payload = Vec::new();
        encode_synced(&mut payload, 4096);
        let mut got = Collect::default();
        decode_entries(&payload, Kind::Log, &mut got).unwrap();
        assert_eq!(got.0, ["synced 4096"]);
        assert_eq!(
            decode_entries(&payload, Kind::Snapshot, &mut Check),
            Err(CodecError::Invalid("unknown entry tag"))
        );
        assert_eq!(
            decode_entries(&payload[..5], Kind::Log, &mut Check),
            Err(CodecError::Short("entry"))
        );
    }

    #[test]
    fn log_entries_round_trip_with_their_completion() {
        let mut batch = Batch::default();
        let at = Timestamp::parse("2021-11-09T21:38:09.123456789+01:00").unwrap();
        batch.push(SensorId::parse("température ✓").unwrap(), 2.5, at);
        let mut payload = Vec::new();
        let completion = Completed {
            key: "k-1",
            fingerprint: Fingerprint::of(b"[]"),
            at_ms: 42,
        };
        encode_batch(&mut payload, &batch, Some(completion));
        encode_delete(&mut payload, "gone");
        let mut got = Collect::default();
        decode_entries(&payload, Kind::Log, &mut got).unwrap();
        assert_eq!(
            got.0,
            [
                format!("température ✓ 1 2.5 {at}"),
                "key k-1 42".to_owned(),
                "delete gone".to_owned()
            ]
        );
        // A log may not hold snapshot entries, nor the reverse.
        assert!(decode_entries(&payload, Kind::Snapshot, &mut Check).is_err());
        // Every cut of the payload is refused, never misread.
        for cut in 1..payload.len() {
            if cut == payload.len() - 7 {
                continue; // the delete entry starts here: the batch alone is valid
            }
            assert!(
                decode_entries(&payload[..cut], Kind::Log, &mut Check).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn overflowed_sums_round_trip_as_the_memory_store_keeps_them() {
        // 1e308 + 1e308 is +inf; +inf + -inf is NaN. Both are states the memory store
        // reaches too (its `avg` is then null), so the log must carry them, not refuse.
        let at = Timestamp::parse("2021-01-01T00:00:00Z").unwrap();
        for sum in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            let mut payload = Vec::new();
            encode_sensor(
                &mut payload,
                "huge",
                &Delta {
                    count: 2,
                    sum,
                    latest: at,
                },
            );
            let mut got = Collect::default();
            decode_entries(&payload, Kind::Snapshot, &mut got).unwrap();
            assert_eq!(got.0, [format!("huge 2 {sum} {at}")]);
        }
        let mut batch = Batch::default();
        let huge = SensorId::parse("huge").unwrap();
        batch.push(huge, 1e308, at);
        batch.push(huge, 1e308, at);
        let mut payload = Vec::new();
        encode_batch(&mut payload, &batch, None);
        let mut got = Collect::default();
        decode_entries(&payload, Kind::Log, &mut got).unwrap();
        assert_eq!(got.0, [format!("huge 2 inf {at}")]);
    }

    #[test]
    fn frames_are_checked_and_found_after_damage() {
        let payload = b"\x02\x01\x00x".to_vec();
        let mut bytes = frame_header(&payload).to_vec();
        bytes.extend_from_slice(&payload);
        assert_eq!(check_frame(&bytes), FrameCheck::Valid(payload.len()));
        for cut in 0..bytes.len() {
            assert_eq!(check_frame(&bytes[..cut]), FrameCheck::Incomplete, "cut {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[13] ^= 0x40;
        assert_eq!(check_frame(&flipped), FrameCheck::Damaged);
        let mut two = flipped.clone();
        two.extend_from_slice(&bytes);
        assert_eq!(any_valid_frame(&two[1..]), Some(bytes.len() - 1));
        assert_eq!(any_valid_frame(&flipped), None);
    }

    #[test]
    fn headers_carry_version_and_checksum() {
        let h = Header { number: 7, extra: 99 };
        let bytes = encode_header(SEGMENT_MAGIC, h);
        assert_eq!(decode_header(&bytes, SEGMENT_MAGIC, "log"), Ok(h));
        assert_eq!(
            decode_header(&bytes, SNAPSHOT_MAGIC, "snapshot"),
            Err(CodecError::Magic("snapshot"))
        );
        let mut bad = bytes;
        bad[13] ^= 1;
        assert_eq!(
            decode_header(&bad, SEGMENT_MAGIC, "log"),
            Err(CodecError::Checksum)
        );
        let mut newer = bytes;
        newer[8] = 2;
        let crc = crc32fast::hash(&newer[..28]);
        newer[28..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_header(&newer, SEGMENT_MAGIC, "log"),
            Err(CodecError::Version(2))
        );
    }
}
