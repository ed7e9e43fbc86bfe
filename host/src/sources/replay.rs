//! The `replay` source: a JSON-lines file, one message per line, gzip or plain.
//!
//! * Gzip is recognised by its magic bytes, not the file name.
//! * Blank lines are skipped; every other line is one record, even if it is not
//!   JSON (the workers report it with its line number).
//! * `rate` paces records per second; partial batches are sent while waiting so
//!   a slow replay still shows output promptly.
//! * `follow = true` tails the file: at its end, it waits for more; a line is
//!   only taken once its newline has been written, so a writer caught mid-line
//!   never produces a torn record. Without `follow`, the run ends at the end of
//!   the file (a last line without newline is taken).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use serde::Deserialize;

use super::{
    BatchTx, Batching, Pacer, RunSource, Source, SourceComponent, SourceContext, SourceError, SourceFuture,
    SourceSummary, blocking, sleep_unless_cancelled,
};
use crate::batch::Batcher;
use crate::component::{BaseDir, Problems};
use crate::post::Format;
use crate::telemetry::{BAD_RECORDS_LOGGED, Metrics};

/// `[source]` with `type = "replay"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// The file to read.
    pub path: PathBuf,
    /// Posts per second; 0 (the default) reads as fast as the pipeline takes them.
    #[serde(default)]
    pub rate: f64,
    /// Keep reading as the file grows (like `tail -f`) instead of ending at its end.
    #[serde(default)]
    pub follow: bool,
    /// What the lines are: `twitter_v1` (default), `x_v2` or `jetstream`.
    #[serde(default = "default_format")]
    pub format: Format,
}

fn default_format() -> Format {
    Format::TwitterV1
}

impl SourceComponent for ReplayConfig {
    fn check(&self, p: &mut Problems<'_>) {
        p.rate("rate", self.rate);
        if self.path.as_os_str().is_empty() {
            p.add("path", "must not be empty");
        }
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        base.fix(&mut self.path);
    }

    fn format(&self) -> Format {
        self.format
    }

    fn files(&self) -> Vec<(&'static str, &std::path::Path)> {
        vec![("path", &self.path)]
    }

    fn build(&self, cx: &SourceContext) -> Result<Source, SourceError> {
        let replay = Replay::new(self.path.clone(), self.rate, self.follow, cx.batching, self.format)
            .limits(cx.max_record_bytes, cx.metrics.clone());
        Ok(Source::new(replay, self.format))
    }
}

/// How often a followed file is polled at its end.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The running `replay` source.
#[derive(Debug)]
pub struct Replay {
    pub path: PathBuf,
    rate: f64,
    follow: bool,
    batching: Batching,
    format: Format,
    max_record_bytes: usize,
    metrics: Arc<Metrics>,
}

impl RunSource for Replay {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn check_environment(&self) -> Result<(), SourceError> {
        self.check()
    }

    fn run(self: Box<Self>, out: BatchTx, shutdown: CancellationToken) -> SourceFuture {
        blocking(move || self.run_blocking(&out, &shutdown))
    }
}

impl Replay {
    pub fn new(path: PathBuf, rate: f64, follow: bool, batching: Batching, format: Format) -> Replay {
        Replay { path, rate, follow, batching, format, max_record_bytes: usize::MAX, metrics: Arc::default() }
    }

    /// The format of the file's lines.
    pub fn format(&self) -> Format {
        self.format
    }

    fn open(&self) -> Result<Box<dyn BufRead + Send>, SourceError> {
        let open_err = |source| SourceError::Open { path: self.path.display().to_string(), source };
        let mut f = File::open(&self.path).map_err(open_err)?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic).map_err(open_err)?;
        let f = File::open(&self.path).map_err(open_err)?;
        if n == 2 && magic == [0x1f, 0x8b] {
            if self.follow {
                return Err(open_err(std::io::Error::other("follow = true cannot tail a gzip file")));
            }
            Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(f))))
        } else {
            Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
        }
    }

    pub fn check(&self) -> Result<(), SourceError> {
        self.open().map(drop)
    }

    /// Cap the length of a record (longer lines are skipped without being
    /// held whole, counted as malformed and located); count into `metrics`.
    pub fn limits(mut self, max_record_bytes: usize, metrics: Arc<Metrics>) -> Replay {
        self.max_record_bytes = max_record_bytes;
        self.metrics = metrics;
        self
    }

    /// Read to the end (or, following, until shutdown). A read error (a
    /// truncated gzip, a disk error) first hands over every whole line read
    /// before it, then ends the run with the error.
    pub(super) fn run_blocking(
        self,
        out: &BatchTx,
        shutdown: &CancellationToken,
    ) -> Result<SourceSummary, SourceError> {
        let path = self.path.display().to_string();
        let mut reader = self.open()?;
        let mut batcher = Batcher::new(self.batching.max_records);
        let mut pacer = Pacer::new(self.rate);
        let mut summary = SourceSummary::default();
        let mut line_no = 0u64;
        let mut buf = Vec::with_capacity(8192);
        let mut last_send = Instant::now();
        // Sends a batch; false when the pipeline has gone away.
        let send = |b, last_send: &mut Instant| {
            *last_send = Instant::now();
            out.send_blocking(b).is_ok()
        };
        loop {
            // Checked every 64 lines: it is an atomic load per call, and a
            // full-speed replay reads hundreds of thousands of lines a second.
            if line_no.is_multiple_of(64) && shutdown.is_cancelled() {
                break;
            }
            let read = match next_line(&mut *reader, &mut buf, self.max_record_bytes) {
                Ok(r) => r,
                Err(source) => {
                    if !buf.is_empty() {
                        tracing::warn!(file = %path, line = line_no + 1, bytes = buf.len(), "the last line is cut by the read error; skipped");
                    }
                    if let Some(b) = batcher.flush() {
                        let _ = out.send_blocking(b);
                    }
                    return Err(SourceError::Read { path, line: line_no, source });
                }
            };
            match read {
                LineRead::Eof if !self.follow => break,
                // The file's last line has no newline: taken as it is.
                LineRead::Partial if !self.follow => {}
                LineRead::Eof | LineRead::Partial => {
                    // At the end of a followed file: hand over what we have, wait.
                    if let Some(b) = batcher.flush()
                        && !send(b, &mut last_send)
                    {
                        return Ok(summary);
                    }
                    if !sleep_unless_cancelled(FOLLOW_POLL, shutdown) {
                        break;
                    }
                    continue; // `buf` keeps a partial line; the next read appends.
                }
                LineRead::TooLong => {
                    line_no += 1;
                    self.too_long(&path, line_no);
                    continue;
                }
                LineRead::Line => {}
            }
            line_no += 1;
            let line = trim_line(&buf);
            if !line.is_empty() {
                if let Some(wait) = pacer.wait() {
                    // Adaptive batching: the next record is not due yet, so
                    // what is held goes now.
                    if let Some(b) = batcher.flush()
                        && !send(b, &mut last_send)
                    {
                        return Ok(summary);
                    }
                    if !sleep_unless_cancelled(wait, shutdown) {
                        break;
                    }
                }
                summary.records += 1;
                summary.bytes += line.len() as u64;
                if let Some(b) = batcher.push(line, line_no)
                    && !send(b, &mut last_send)
                {
                    return Ok(summary);
                }
            }
            buf.clear();
        }
        if let Some(b) = batcher.flush() {
            let _ = out.send_blocking(b);
        }
        Ok(summary)
    }

    fn too_long(&self, path: &str, line: u64) {
        let n = self.metrics.malformed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n < BAD_RECORDS_LOGGED {
            tracing::warn!(
                input = path,
                line,
                max_record_bytes = self.max_record_bytes,
                "record longer than max_record_bytes skipped"
            );
        }
    }
}

/// What one read of a line gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineRead {
    /// The end, nothing pending.
    Eof,
    /// A whole line (with its newline) is in the buffer.
    Line,
    /// The end, with a line not yet ended in the buffer.
    Partial,
    /// A line longer than the cap went by; nothing of it is kept.
    TooLong,
}

/// Append the next line to `buf` (which may hold the start of it from an
/// earlier read), never holding more than `max` bytes: a longer line is read
/// to its end and dropped.
pub(crate) fn next_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<LineRead> {
    let mut too_long = false;
    loop {
        let avail = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => LineRead::TooLong,
                (false, true) => LineRead::Eof,
                (false, false) => LineRead::Partial,
            });
        }
        let (take, ends) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        // The newline is not counted against the cap.
        let limit = if ends { max.saturating_add(1) } else { max };
        if !too_long && buf.len() + take <= limit {
            buf.extend_from_slice(&avail[..take]);
        } else {
            too_long = true;
            buf.clear();
        }
        reader.consume(take);
        if ends {
            return Ok(if too_long { LineRead::TooLong } else { LineRead::Line });
        }
    }
}

fn trim_line(buf: &[u8]) -> &[u8] {
    let mut l = buf;
    while let [rest @ .., b'\n' | b'\r' | b' ' | b'\t'] = l {
        l = rest;
    }
    while let [b' ' | b'\t', rest @ ..] = l {
        l = rest;
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(src: Replay) -> (Vec<(String, u64)>, SourceSummary) {
        let (tx, rx) = async_channel::bounded(1000);
        let summary = src.run_blocking(&tx, &CancellationToken::new()).expect("runs");
        drop(tx);
        let mut lines = Vec::new();
        while let Ok(b) = rx.try_recv() {
            lines.extend(b.iter().map(|(r, o)| (String::from_utf8_lossy(r).into_owned(), o)));
        }
        (lines, summary)
    }

    fn batching() -> Batching {
        Batching { max_records: 2, max_wait: Duration::from_millis(10) }
    }

    #[test]
    fn lines_blank_skipped_numbers_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("in.jsonl");
        std::fs::write(&p, "{\"a\":1}\n\n  \r\n{\"b\":2}\r\nnot json\n{\"c\":3}").expect("write");
        let (lines, summary) = collect(Replay::new(p, 0.0, false, batching(), crate::post::Format::TwitterV1));
        assert_eq!(
            lines,
            vec![("{\"a\":1}".into(), 1), ("{\"b\":2}".into(), 4), ("not json".into(), 5), ("{\"c\":3}".into(), 6)]
        );
        assert_eq!(summary.records, 4);
    }

    #[test]
    fn gzip_is_detected_by_content() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("in.data");
        let mut gz = flate2::write::GzEncoder::new(File::create(&p).expect("create"), flate2::Compression::fast());
        gz.write_all(b"{\"a\":1}\n{\"b\":2}\n").expect("write");
        gz.finish().expect("finish");
        let (lines, _) = collect(Replay::new(p, 0.0, false, batching(), crate::post::Format::TwitterV1));
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn missing_file_names_the_path() {
        let r =
            Replay::new(PathBuf::from("/no/such/posts.jsonl"), 0.0, false, batching(), crate::post::Format::TwitterV1);
        let e = r.check().expect_err("missing");
        assert!(e.to_string().contains("/no/such/posts.jsonl"), "{e}");
    }

    #[test]
    fn follow_waits_for_complete_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("in.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":").expect("write");
        let (tx, rx) = async_channel::bounded(1000);
        let stop = CancellationToken::new();
        let src = Replay::new(p.clone(), 0.0, true, batching(), crate::post::Format::TwitterV1);
        let stop2 = stop.clone();
        let h = std::thread::spawn(move || src.run_blocking(&tx, &stop2));
        let first = rx.recv_blocking().expect("first batch");
        assert_eq!(first.iter().map(|(r, _)| r.to_vec()).collect::<Vec<_>>(), vec![b"{\"a\":1}".to_vec()]);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).expect("open");
        f.write_all(b"2}\n").expect("append");
        let second = rx.recv_blocking().expect("second batch");
        assert_eq!(second.iter().map(|(r, o)| (r.to_vec(), o)).collect::<Vec<_>>(), vec![(b"{\"b\":2}".to_vec(), 2)]);
        stop.cancel();
        h.join().expect("join").expect("ok");
    }

    /// Defect: a line without end was read whole into memory.
    #[test]
    fn a_line_over_the_cap_is_skipped_without_being_held() {
        let data = format!("a\n{}\nb\n{}", "x".repeat(100), "y".repeat(50));
        // Pieces of 7 bytes: the cap holds across reads.
        let mut r = BufReader::with_capacity(7, data.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            let read = next_line(&mut r, &mut buf, 10).expect("read");
            assert!(buf.len() <= 11, "never more than the cap (and its newline) held");
            got.push((read, String::from_utf8_lossy(&buf).into_owned()));
            buf.clear();
            if matches!(read, LineRead::Eof) {
                break;
            }
        }
        let kinds: Vec<LineRead> = got.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [LineRead::Line, LineRead::TooLong, LineRead::Line, LineRead::TooLong, LineRead::Eof]);
        assert_eq!(got[0].1, "a\n");
        assert_eq!(got[2].1, "b\n");
    }

    /// Defect 1 of issue 16: a truncated gzip lost the lines decoded before
    /// the error (the batch was not flushed).
    #[test]
    fn a_truncated_gzip_hands_over_every_whole_line_before_the_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("in.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..2000 {
            writeln!(gz, "{{\"id_str\":\"{i}\",\"text\":\"post number {i} with some words\"}}").expect("write");
        }
        let whole = gz.finish().expect("finish");
        let cut = &whole[..whole.len() * 6 / 10];
        std::fs::write(&p, cut).expect("write");
        // What can be decoded: every line ended before the gzip error.
        let mut decoded = Vec::new();
        let _ = flate2::read::MultiGzDecoder::new(cut).read_to_end(&mut decoded);
        let decodable = decoded.iter().filter(|&&b| b == b'\n').count();
        let (tx, rx) = async_channel::bounded(1000);
        let r = Replay::new(
            p,
            0.0,
            false,
            Batching { max_records: 256, max_wait: Duration::from_secs(1) },
            Format::TwitterV1,
        )
        .run_blocking(&tx, &CancellationToken::new());
        let e = r.expect_err("the cut is an error");
        assert!(e.to_string().contains("in.jsonl.gz"), "{e}");
        let mut lines = Vec::new();
        while let Ok(b) = rx.try_recv() {
            lines.extend(b.iter().map(|(r, _)| String::from_utf8_lossy(r).into_owned()));
        }
        assert!(decodable > 500);
        assert_eq!(lines.len(), decodable, "every whole line before the cut is handed over");
        for (i, l) in lines.iter().enumerate() {
            assert!(l.starts_with(&format!("{{\"id_str\":\"{i}\"")) && l.ends_with('}'), "line {i} whole: {l}");
        }
    }

    #[test]
    fn follow_waits_at_a_clean_end_of_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("in.jsonl");
        std::fs::write(&p, "{\"a\":1}\n").expect("write");
        let (tx, rx) = async_channel::bounded(1000);
        let stop = CancellationToken::new();
        let src = Replay::new(p.clone(), 0.0, true, batching(), Format::TwitterV1);
        let stop2 = stop.clone();
        let h = std::thread::spawn(move || src.run_blocking(&tx, &stop2));
        assert_eq!(rx.recv_blocking().expect("first batch").len(), 1);
        std::thread::sleep(Duration::from_millis(250));
        assert!(!h.is_finished(), "a followed file is waited on at its end");
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).expect("open");
        f.write_all(b"{\"b\":2}\n").expect("append");
        assert_eq!(rx.recv_blocking().expect("second batch").len(), 1);
        stop.cancel();
        h.join().expect("join").expect("ok");
    }
}
