//! An on-disk FIFO of records: the Kafka sink's spool and the pipeline
//! buffer's disk queue share this file format (below both, depending on
//! nothing of ours).
//!
//! Format (documented so an operator can inspect or salvage it): a directory
//! of segment files `<n>.spool` (n = 20-digit sequence) holding records
//!
//! ```text
//! u8 0xA5 | u32 len (of what follows, little-endian) | u32 key_len | key | u32 value_len | value
//!         | u32 headers_len | headers (k \0 v \0 …) | u32 crc32 of everything after len
//! ```
//!
//! and a `head` file `"<segment> <offset>"`: where replay resumes. Appends go
//! to the last segment (rolled at `segment_bytes`); consumed segments are
//! deleted. A record torn by a crash (short or failing its checksum) ends its
//! segment: the tail is logged and cut, never replayed as garbage. The spool
//! survives restarts: what was spooled before a crash is sent after it.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What to do when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Refuse new records (counted, logged): the newest are lost.
    #[default]
    DropNewest,
    /// Stop taking input while the spool is full (backpressure up to the
    /// source): nothing is lost; a batch already taken may pass the cap by
    /// its own size. A live stream may disconnect a collector that stops reading.
    Block,
}

/// When appends are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// After every batch of appends (default).
    #[default]
    Batch,
    /// After every record.
    Always,
    /// Leave it to the OS.
    Never,
}

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool full ({max_bytes} bytes)")]
    Full { max_bytes: u64 },
}

/// One spooled record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A position: segment number and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// The spool.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segment_bytes: u64,
    max_bytes: u64,
    fsync: Fsync,
    head: Pos,
    tail: Pos,
    writer: Option<File>,
    /// Bytes between head and tail.
    bytes: u64,
    records: u64,
    /// Records acknowledged since the head was last written to disk.
    unpersisted: u64,
}

/// Acknowledged records after which the head is written to disk at the latest.
const HEAD_EVERY: u64 = 1000;

const MAGIC: u8 = 0xA5;

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.spool"))
}

fn encode(r: &SpoolRecord) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + r.key.len() + r.value.len());
    body.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
    body.extend_from_slice(&r.key);
    body.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
    body.extend_from_slice(&r.value);
    let mut h = Vec::new();
    for (k, v) in &r.headers {
        h.extend_from_slice(k.as_bytes());
        h.push(0);
        h.extend_from_slice(v);
        h.push(0);
    }
    body.extend_from_slice(&(h.len() as u32).to_le_bytes());
    body.extend_from_slice(&h);
    let crc = crc32fast::hash(&body);
    let mut out = Vec::with_capacity(body.len() + 9);
    out.push(MAGIC);
    out.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn take<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let v = b.get(4..4 + n)?;
    *b = &b[4 + n..];
    Some(v)
}

fn decode(frame: &[u8]) -> Option<SpoolRecord> {
    let (body, crc) = frame.split_at(frame.len().checked_sub(4)?);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut b = body;
    let key = take(&mut b)?.to_vec();
    let value = take(&mut b)?.to_vec();
    let h = take(&mut b)?;
    let mut headers = Vec::new();
    let mut parts = h.split(|&c| c == 0);
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        if k.is_empty() && v.is_empty() {
            break;
        }
        headers.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
    }
    Some(SpoolRecord { key, value, headers })
}

impl Spool {
    /// Open (or create) a spool in `dir`, recovering what a previous run left.
    pub fn open(dir: &Path, segment_bytes: u64, max_bytes: u64, fsync: Fsync) -> Result<Spool, SpoolError> {
        let io = |source| SpoolError::Io { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut segs: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".spool")?.parse().ok())
            .collect();
        segs.sort_unstable();
        let head = std::fs::read_to_string(dir.join("head"))
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace();
                Some(Pos { segment: it.next()?.parse().ok()?, offset: it.next()?.parse().ok()? })
            })
            .filter(|h| segs.contains(&h.segment))
            .unwrap_or(Pos { segment: segs.first().copied().unwrap_or(0), offset: 0 });
        let last = segs.last().copied().unwrap_or(head.segment);
        let mut s = Spool {
            dir: dir.to_owned(),
            segment_bytes: segment_bytes.max(1024),
            max_bytes,
            fsync,
            head,
            tail: Pos { segment: last, offset: 0 },
            writer: None,
            bytes: 0,
            records: 0,
            unpersisted: 0,
        };
        // Count what is left and cut a torn tail.
        for &n in segs.iter().filter(|&&n| n >= head.segment) {
            let start = if n == head.segment { head.offset } else { 0 };
            let (end, count) = s.scan(n, start)?;
            s.bytes += end - start;
            s.records += count;
            if n == last {
                s.tail = Pos { segment: n, offset: end };
            }
        }
        Ok(s)
    }

    /// Walk a segment from `start`: the end of its last whole record and the
    /// number of records; a torn tail is truncated.
    fn scan(&self, n: u64, start: u64) -> Result<(u64, u64), SpoolError> {
        let path = seg_path(&self.dir, n);
        let io = |source| SpoolError::Io { path: path.clone(), source };
        let mut f = BufReader::new(File::open(&path).map_err(io)?);
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let (mut pos, mut count) = (start, 0);
        while let Some(len) = read_frame(&mut f) {
            pos += len;
            count += 1;
        }
        let size = std::fs::metadata(&path).map_err(io)?.len();
        if size > pos {
            tracing::warn!(segment = %path.display(), bytes = size - pos, "spool: torn record at the end of a segment cut off");
            OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(pos)).map_err(io)?;
        }
        Ok((pos, count))
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
    pub fn len(&self) -> u64 {
        self.records
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The size cap is reached.
    pub fn is_full(&self) -> bool {
        self.bytes >= self.max_bytes
    }

    /// Append records; all or (when full) none.
    pub fn append(&mut self, records: &[SpoolRecord]) -> Result<(), SpoolError> {
        self.append_frames(records, true)
    }

    /// Append records even past the size cap (overflow policy `block`).
    pub fn append_past_cap(&mut self, records: &[SpoolRecord]) -> Result<(), SpoolError> {
        self.append_frames(records, false)
    }

    fn append_frames(&mut self, records: &[SpoolRecord], capped: bool) -> Result<(), SpoolError> {
        let frames: Vec<Vec<u8>> = records.iter().map(encode).collect();
        let size: u64 = frames.iter().map(|f| f.len() as u64).sum();
        if capped && self.bytes + size > self.max_bytes {
            return Err(SpoolError::Full { max_bytes: self.max_bytes });
        }
        // Frames bound for one segment go in one write (one system call per
        // batch, not per record), unless every record is to be synced.
        let mut pending: Vec<u8> = Vec::new();
        for f in frames {
            if self.tail.offset > 0 && self.tail.offset + f.len() as u64 > self.segment_bytes {
                self.write_pending(&mut pending)?;
                self.sync()?;
                self.writer = None;
                self.tail = Pos { segment: self.tail.segment + 1, offset: 0 };
            }
            pending.extend_from_slice(&f);
            self.tail.offset += f.len() as u64;
            self.bytes += f.len() as u64;
            self.records += 1;
            if self.fsync == Fsync::Always {
                self.write_pending(&mut pending)?;
                self.sync()?;
            }
        }
        self.write_pending(&mut pending)?;
        if self.fsync == Fsync::Batch {
            self.sync()?;
        }
        Ok(())
    }

    /// Write `pending` at the end of the tail segment (opening it if needed).
    fn write_pending(&mut self, pending: &mut Vec<u8>) -> Result<(), SpoolError> {
        if pending.is_empty() {
            return Ok(());
        }
        let path = seg_path(&self.dir, self.tail.segment);
        let io = |source| SpoolError::Io { path: path.clone(), source };
        if self.writer.is_none() {
            self.writer = Some(OpenOptions::new().create(true).append(true).open(&path).map_err(io)?);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_all(pending).map_err(io)?;
        }
        pending.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SpoolError> {
        if let Some(w) = self.writer.as_mut() {
            w.sync_data().map_err(|source| SpoolError::Io { path: self.dir.clone(), source })?;
        }
        Ok(())
    }

    /// Up to `max` records from the head, with the position after each.
    pub fn peek(&mut self, max: usize) -> Result<Vec<(Pos, SpoolRecord)>, SpoolError> {
        self.peek_from(self.head, max)
    }

    /// The position of the oldest record not yet acknowledged.
    pub fn head(&self) -> Pos {
        self.head
    }

    /// Up to `max` records from `start` (a position returned by an earlier
    /// peek, or the head), with the position after each: lets a reader keep
    /// several windows in flight before the first is acknowledged.
    pub fn peek_from(&mut self, start: Pos, max: usize) -> Result<Vec<(Pos, SpoolRecord)>, SpoolError> {
        let mut out = Vec::new();
        let mut pos = start.max(self.head);
        while out.len() < max && pos < self.tail {
            let path = seg_path(&self.dir, pos.segment);
            let io = |source| SpoolError::Io { path: path.clone(), source };
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    pos = Pos { segment: pos.segment + 1, offset: 0 };
                    continue;
                }
                Err(e) => return Err(io(e)),
            };
            let mut f = BufReader::new(file);
            f.seek(SeekFrom::Start(pos.offset)).map_err(io)?;
            let mut read_any = false;
            while out.len() < max {
                let mut hdr = [0u8; 5];
                if f.read_exact(&mut hdr).is_err() || hdr[0] != MAGIC {
                    break;
                }
                let len = u32::from_le_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
                let mut frame = vec![0u8; len];
                if f.read_exact(&mut frame).is_err() {
                    break;
                }
                pos.offset += 5 + len as u64;
                read_any = true;
                if let Some(r) = decode(&frame) {
                    out.push((pos, r));
                } else {
                    tracing::error!(segment = %path.display(), "spool: corrupt record skipped");
                }
            }
            if !read_any || out.len() < max {
                if pos.segment >= self.tail.segment {
                    break;
                }
                pos = Pos { segment: pos.segment + 1, offset: 0 };
            }
        }
        Ok(out)
    }

    /// Everything up to `pos` has been delivered: advance the head, delete
    /// consumed segments. The head is persisted when a segment is finished,
    /// when the spool empties, and at least every `HEAD_EVERY` records (and by
    /// [`Spool::persist_head`]): a crash can replay at most that many records
    /// that were already delivered (at-least-once), never lose one.
    pub fn ack(&mut self, pos: Pos, records: u64, bytes: u64) -> Result<(), SpoolError> {
        let segment_done = pos.segment > self.head.segment;
        for n in self.head.segment..pos.segment {
            let _ = std::fs::remove_file(seg_path(&self.dir, n));
        }
        self.head = pos;
        self.records = self.records.saturating_sub(records);
        self.bytes = self.bytes.saturating_sub(bytes);
        if self.records == 0 && self.head >= self.tail {
            // Empty: start a fresh segment next time.
            self.writer = None;
            let _ = std::fs::remove_file(seg_path(&self.dir, self.head.segment));
            self.head = Pos { segment: self.tail.segment + 1, offset: 0 };
            self.tail = self.head;
            self.bytes = 0;
        }
        self.unpersisted += records;
        if segment_done || self.records == 0 || self.unpersisted >= HEAD_EVERY {
            self.persist_head()?;
        }
        Ok(())
    }

    /// Write the head to disk now (atomically: temp file, then rename).
    pub fn persist_head(&mut self) -> Result<(), SpoolError> {
        if self.unpersisted == 0 {
            return Ok(());
        }
        self.unpersisted = 0;
        let tmp = self.dir.join("head.tmp");
        std::fs::write(&tmp, format!("{} {}", self.head.segment, self.head.offset))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("head")))
            .map_err(|source| SpoolError::Io { path: self.dir.clone(), source })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = self.persist_head() {
            tracing::warn!(error = %e, "spool: could not save the head at exit; some delivered records may be sent again");
        }
    }
}

/// Length of the next whole, valid frame (header included), or `None`.
fn read_frame(f: &mut impl Read) -> Option<u64> {
    let mut hdr = [0u8; 5];
    f.read_exact(&mut hdr).ok()?;
    if hdr[0] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
    let mut frame = vec![0u8; len];
    f.read_exact(&mut frame).ok()?;
    decode(&frame)?;
    Some(5 + len as u64)
}

/// Size of a record once spooled.
pub fn spooled_size(r: &SpoolRecord) -> u64 {
    frame_size(r.key.len(), r.value.len(), r.headers.iter().map(|(k, v)| k.len() + v.len() + 2).sum())
}

/// Size of a frame holding a key, a value and headers of these lengths
/// (`headers`: the encoded `k \0 v \0 …` bytes), without building it.
pub fn frame_size(key: usize, value: usize, headers: usize) -> u64 {
    // magic + len + three length prefixes + crc
    (1 + 4 + 4 + key + 4 + value + 4 + headers + 4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> SpoolRecord {
        SpoolRecord {
            key: i.to_string().into_bytes(),
            value: format!("{{\"n\":{i}}}").into_bytes(),
            headers: vec![("traptor-type".into(), b"track".to_vec())],
        }
    }

    #[test]
    fn fifo_across_segments_and_restarts() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Spool::open(dir.path(), 1024, 1 << 20, Fsync::Batch).expect("open");
        let recs: Vec<SpoolRecord> = (0..100).map(rec).collect();
        s.append(&recs).expect("append");
        assert_eq!(s.len(), 100);
        let got = s.peek(30).expect("peek");
        assert_eq!(got.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), recs[..30].to_vec());
        let bytes: u64 = got.iter().map(|(_, r)| spooled_size(r)).sum();
        s.ack(got.last().expect("some").0, 30, bytes).expect("ack");
        drop(s);
        // A restart resumes at the head.
        let mut s = Spool::open(dir.path(), 1024, 1 << 20, Fsync::Batch).expect("reopen");
        assert_eq!(s.len(), 70);
        let rest = s.peek(1000).expect("peek");
        assert_eq!(rest.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), recs[30..].to_vec());
        let bytes: u64 = rest.iter().map(|(_, r)| spooled_size(r)).sum();
        s.ack(rest.last().expect("some").0, 70, bytes).expect("ack");
        assert!(s.is_empty());
        assert_eq!(spooled_size(&rec(7)), encode(&rec(7)).len() as u64);
        s.append(&[rec(500)]).expect("append after empty");
        assert_eq!(s.peek(5).expect("peek")[0].1, rec(500));
    }

    #[test]
    fn a_torn_tail_is_cut_not_replayed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Spool::open(dir.path(), 1 << 20, 1 << 20, Fsync::Batch).expect("open");
        s.append(&[rec(1), rec(2)]).expect("append");
        drop(s);
        let seg = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "spool"))
            .expect("segment");
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&encode(&rec(3))[..10]).expect("torn write");
        drop(f);
        let mut s = Spool::open(dir.path(), 1 << 20, 1 << 20, Fsync::Batch).expect("reopen");
        assert_eq!(s.len(), 2);
        assert_eq!(s.peek(10).expect("peek").len(), 2);
    }

    #[test]
    fn full_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Spool::open(dir.path(), 1024, 100, Fsync::Never).expect("open");
        assert!(matches!(s.append(&(0..10).map(rec).collect::<Vec<_>>()), Err(SpoolError::Full { .. })));
        assert!(s.is_empty(), "all or nothing");
    }
}
