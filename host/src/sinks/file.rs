//! The `file` sink: JSON lines appended to a file, optionally rotated by size.
//!
//! Rotation renames the full file to `<path>.<n>` (n = 1, 2, … never reusing a
//! name that exists) and starts a new `<path>`; a record is never split across
//! files. The file is flushed whenever the pipeline is idle and synced to disk
//! when the run ends.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    BatchRx, LineSink, RunSink, Sink, SinkComponent, SinkError, SinkFuture, SinkRun, Written, blocking,
    write_all_batches,
};
use crate::batch::OutBatch;
use crate::component::{BaseDir, Problems};
use crate::rules::Collector;

/// `[sink]` (or `[dead_letter]`) with `type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append to.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes (absent: never).
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
}

impl SinkComponent for FileSinkConfig {
    fn check(&self, p: &mut Problems<'_>) {
        if let Some(r) = self.rotate_bytes {
            p.range("rotate_bytes", r, 1 << 10, 1 << 50);
        }
        if self.path.as_os_str().is_empty() {
            p.add("path", "must not be empty");
        }
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        base.fix(&mut self.path);
    }

    fn files(&self) -> Vec<(&'static str, &Path)> {
        vec![("path", &self.path)]
    }

    fn build(&self, _identity: Collector) -> Result<Sink, SinkError> {
        Ok(Sink::new(FileSink::new(self.path.clone(), self.rotate_bytes)))
    }
}

/// The running `file` sink.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    rotate_bytes: Option<u64>,
    w: Option<BufWriter<File>>,
    size: u64,
    next_suffix: u64,
}

impl FileSink {
    pub fn new(path: PathBuf, rotate_bytes: Option<u64>) -> FileSink {
        FileSink { path, rotate_bytes, w: None, size: 0, next_suffix: 1 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn target(&self) -> String {
        self.path.display().to_string()
    }

    /// The file can be appended to: it is not a directory, and it (or, while
    /// it does not exist, its directory) is writable (a probe file is made
    /// there and removed at once).
    pub fn check(&self) -> Result<(), SinkError> {
        let err = |source| SinkError::Open { path: self.target(), source };
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let meta = std::fs::metadata(dir).map_err(err)?;
        if !meta.is_dir() {
            return Err(err(std::io::Error::other(format!("{} is not a directory", dir.display()))));
        }
        match std::fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => Err(err(std::io::Error::other("it is a directory"))),
            Ok(_) => OpenOptions::new().append(true).open(&self.path).map(drop).map_err(err),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Writable directory: make and remove a probe file.
                let probe = dir.join(format!(".traptor-probe-{}", std::process::id()));
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&probe)
                    .map(drop)
                    .and_then(|()| std::fs::remove_file(&probe))
                    .map_err(|e| err(std::io::Error::new(e.kind(), format!("{} is not writable: {e}", dir.display()))))
            }
            Err(e) => Err(err(e)),
        }
    }

    pub fn open(&mut self) -> Result<(), SinkError> {
        self.cut_torn_line()?;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| SinkError::Open { path: self.target(), source })?;
        self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
        self.w = Some(BufWriter::with_capacity(1 << 16, f));
        Ok(())
    }

    /// A crash (SIGKILL, power loss) can leave the file's last line cut. The
    /// next run must not glue its first record onto it: the cut bytes go to
    /// `<file>.torn-<unix seconds>[.n]` (kept for inspection, never overwritten) and the file is
    /// truncated after its last whole line.
    fn cut_torn_line(&self) -> Result<(), SinkError> {
        use std::io::{Read, Seek, SeekFrom};
        let err = |source| SinkError::Open { path: self.target(), source };
        let mut f = match OpenOptions::new().read(true).write(true).open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        let len = f.metadata().map_err(err)?.len();
        if len == 0 {
            return Ok(());
        }
        // Look back for the last newline, 64 KiB at a time.
        let mut end = len;
        let mut chunk = vec![0u8; 1 << 16];
        let keep = loop {
            let start = end.saturating_sub(chunk.len() as u64);
            let n = (end - start) as usize;
            f.seek(SeekFrom::Start(start)).map_err(err)?;
            f.read_exact(&mut chunk[..n]).map_err(err)?;
            if let Some(i) = memchr::memrchr(b'\n', &chunk[..n]) {
                break start + i as u64 + 1;
            }
            if start == 0 {
                break 0;
            }
            end = start;
        };
        if keep == len {
            return Ok(());
        }
        let mut torn = Vec::new();
        f.seek(SeekFrom::Start(keep)).map_err(err)?;
        f.read_to_end(&mut torn).map_err(err)?;
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // Never overwrite an earlier aside file: several crashed runs can
        // start within one second.
        let mut aside = PathBuf::from(format!("{}.torn-{secs}", self.path.display()));
        let mut n = 0u32;
        let mut out = loop {
            match OpenOptions::new().write(true).create_new(true).open(&aside) {
                Ok(out) => break out,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => {
                    n += 1;
                    aside = PathBuf::from(format!("{}.torn-{secs}.{n}", self.path.display()));
                }
                Err(e) => return Err(err(e)),
            }
        };
        out.write_all(&torn).map_err(err)?;
        out.sync_all().map_err(err)?;
        f.set_len(keep).map_err(err)?;
        f.sync_all().map_err(err)?;
        tracing::warn!(
            file = %self.path.display(),
            bytes = torn.len(),
            kept_in = %aside.display(),
            "the output file ended with a cut line (an earlier crash); it was moved aside"
        );
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        self.finish()?;
        let mut target = PathBuf::from(format!("{}.{}", self.path.display(), self.next_suffix));
        while target.exists() {
            self.next_suffix += 1;
            target = PathBuf::from(format!("{}.{}", self.path.display(), self.next_suffix));
        }
        std::fs::rename(&self.path, &target).map_err(|source| SinkError::Write { target: self.target(), source })?;
        tracing::info!(file = %target.display(), "output file rotated");
        self.next_suffix += 1;
        self.open()
    }

    /// Flush and sync what was written.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        if let Some(mut w) = self.w.take() {
            let err = |source| SinkError::Write { target: self.path.display().to_string(), source };
            w.flush().map_err(err)?;
            w.get_ref().sync_data().map_err(err)?;
        }
        Ok(())
    }
}

impl RunSink for FileSink {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn check_environment(&self) -> Result<(), SinkError> {
        self.check()
    }

    fn run(mut self: Box<Self>, input: BatchRx, run: SinkRun) -> SinkFuture {
        blocking(move || {
            let SinkRun { metrics, mut dead_letters, confirmed, .. } = run;
            if let Err(e) = self.open() {
                input.close();
                return dead_letters.finish().and(Err(e));
            }
            let Written { result, mut out, mut dead } =
                write_all_batches(&input, &metrics, self, dead_letters, &confirmed);
            let r = out.finish().and(result);
            dead.finish().and(r)
        })
    }

    fn into_dead_letters(mut self: Box<Self>) -> Result<Box<dyn LineSink + Send>, SinkError> {
        self.open()?;
        Ok(self)
    }
}

impl LineSink for FileSink {
    fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        let len = line.len() as u64 + 1;
        if let Some(max) = self.rotate_bytes
            && self.size > 0
            && self.size + len > max
        {
            self.rotate()?;
        }
        let target = self.target();
        let w = self.w.as_mut().ok_or_else(|| SinkError::Write {
            target: target.clone(),
            source: std::io::Error::other("file is not open"),
        })?;
        let err = |source| SinkError::Write { target: target.clone(), source };
        w.write_all(line).map_err(err)?;
        w.write_all(b"\n").map_err(err)?;
        self.size += len;
        Ok(())
    }

    /// The whole batch in one write when it does not reach the rotation
    /// size (a write larger than the buffer goes straight to the file, so
    /// the bytes are not copied through it); record by record otherwise,
    /// so rotation never splits a record.
    fn write_lines(&mut self, b: &OutBatch) -> Result<(), SinkError> {
        let lines = b.lines();
        if self.rotate_bytes.is_some_and(|max| self.size + lines.len() as u64 > max) {
            return b.iter().try_for_each(|(line, _key)| self.write_line(line));
        }
        let target = self.target();
        let w = self.w.as_mut().ok_or_else(|| SinkError::Write {
            target: target.clone(),
            source: std::io::Error::other("file is not open"),
        })?;
        w.write_all(lines).map_err(|source| SinkError::Write { target, source })?;
        self.size += lines.len() as u64;
        Ok(())
    }

    fn idle(&mut self) -> Result<(), SinkError> {
        if let Some(w) = self.w.as_mut() {
            w.flush().map_err(|source| SinkError::Write { target: self.path.display().to_string(), source })?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        FileSink::finish(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_without_splitting_records() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("out.jsonl");
        let mut s = FileSink::new(path.clone(), Some(25));
        s.open().expect("open");
        for i in 0..5 {
            s.write_line(format!("{{\"n\":{i:04}}}").as_bytes()).expect("write");
        }
        s.finish().expect("finish");
        let mut all = String::new();
        for p in [path.with_extension("jsonl.1"), path.with_extension("jsonl.2"), path.clone()] {
            let c = std::fs::read_to_string(&p).expect("exists");
            assert!(c.len() <= 25, "{p:?} has {} bytes", c.len());
            all.push_str(&c);
        }
        assert_eq!(all.lines().count(), 5);
    }

    /// Defect 2 of issue 16: after a crash, the next run glued its first
    /// record onto the cut last line.
    #[test]
    fn a_torn_last_line_is_moved_aside_before_appending() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").expect("write");
        let mut s = FileSink::new(path.clone(), None);
        s.open().expect("open");
        s.write_line(b"{\"d\":4}").expect("write");
        s.finish().expect("finish");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n");
        let torn: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(".torn-"))
            .collect();
        assert_eq!(torn.len(), 1);
        assert_eq!(std::fs::read_to_string(&torn[0]).expect("read"), "{\"c\":");
        // A whole file, or one that is only a cut line, is handled too.
        let whole = dir.path().join("whole.jsonl");
        std::fs::write(&whole, "{\"a\":1}\n").expect("write");
        FileSink::new(whole.clone(), None).open().expect("open");
        assert_eq!(std::fs::read_to_string(&whole).expect("read"), "{\"a\":1}\n");
        let cut = dir.path().join("cut.jsonl");
        std::fs::write(&cut, "x".repeat(100_000)).expect("write");
        FileSink::new(cut.clone(), None).open().expect("open");
        assert_eq!(std::fs::metadata(&cut).expect("meta").len(), 0);
    }

    /// Seen in CI: several killed runs within one second each moved a cut
    /// line to the same `torn-<secs>` name, and the later overwrote the
    /// earlier.
    #[test]
    fn cut_lines_from_runs_in_the_same_second_are_all_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("out.jsonl");
        for cut in ["{\"a\":", "{\"b\":", "{\"c\":"] {
            std::fs::write(&path, format!("{{\"whole\":1}}\n{cut}")).expect("write");
            FileSink::new(path.clone(), None).open().expect("open");
        }
        let mut kept: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
            .map(|e| std::fs::read_to_string(e.path()).expect("read"))
            .collect();
        kept.sort();
        assert_eq!(kept, ["{\"a\":", "{\"b\":", "{\"c\":"]);
    }
}
