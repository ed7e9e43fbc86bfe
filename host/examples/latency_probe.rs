//! Latency measured from outside the collector (issue 23, STYLE 21).
//!
//! A stand-in X API v2 filtered stream on a local socket feeds the release
//! binary; a reader times each line as it can be read from the collector's
//! standard output (or file sink). Each post's id is the time the stand-in
//! wrote it (nanoseconds since the probe started), so one clock measures
//! both ends; nothing inside the collector is trusted.
//!
//! ```sh
//! cargo build --release -p traptor-host --example latency_probe
//! target/release/examples/latency_probe --bin target/release/traptor-host --rate 10000 --seconds 5
//! ```
//!
//! Prints one line per run: rate, posts, p50 / p99 / max from outside, and
//! the p50 of the collector's own `/metrics` end-to-end histogram beside it
//! (interpolated in its bucket). Posts are written one `write` each, paced
//! to the rate by sleeping (never spinning: the probe must not take a core
//! from the collector), in chunked HTTP as X sends them; each is stamped as
//! it is written. The first second's posts are a warm-up, not counted.
//!
//! `--bin relay` runs the same measurement through a control instead of the
//! collector: this probe in relay mode, which reads the stream and copies
//! each post to its stdout, flushing whenever nothing more is ready. It does
//! no work, so its figures are the floor of the machine (three processes on
//! the same cores, scheduling, pipes); the collector's are read beside them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Args {
    bin: String,
    rate: u64,
    seconds: u64,
    size: usize,
    sink: String,
    buffer: bool,
    dir: std::path::PathBuf,
    /// TOML appended to the pipeline file (e.g. a `[pipeline]` table).
    extra: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: latency_probe --bin TRAPTOR_HOST|relay [--rate POSTS_PER_S (10000)] [--seconds S (5)] \
         [--size POST_BYTES (400)] [--sink stdout|file] [--buffer on|off (on)] [--dir DIR (target/bench)] \
         [--extra TOML (appended to the pipeline file; \\n for a newline)]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        bin: String::new(),
        rate: 10_000,
        seconds: 5,
        size: 400,
        sink: "stdout".into(),
        buffer: true,
        dir: "target/bench".into(),
        extra: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--bin" => a.bin = v,
            "--rate" => a.rate = v.parse().unwrap_or_else(|_| usage()),
            "--seconds" => a.seconds = v.parse().unwrap_or_else(|_| usage()),
            "--size" => a.size = v.parse().unwrap_or_else(|_| usage()),
            "--sink" if v == "stdout" || v == "file" => a.sink = v,
            "--buffer" if v == "on" || v == "off" => a.buffer = v == "on",
            "--dir" => a.dir = v.into(),
            "--extra" => a.extra = v.replace("\\n", "\n"),
            _ => usage(),
        }
    }
    if a.bin.is_empty() || a.rate == 0 {
        usage()
    }
    a
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The rules file and the pipeline file the probe runs the collector with.
fn write_pipeline(a: &Args, dir: &Path, port: u16, out_file: &Path) -> std::io::Result<PathBuf> {
    std::fs::write(
        dir.join("latency-probe-rules.jsonl"),
        "{\"rule_id\":\"r1\",\"value\":\"probe\",\"rule_type\":\"track\"}\n",
    )?;
    let sink = if a.sink == "file" {
        format!("type = \"file\"\npath = \"{}\"", out_file.display())
    } else {
        "type = \"stdout\"".into()
    };
    let pipeline = dir.join("latency-probe.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[traptor]\ntype = \"track\"\nid = 0\nstats_interval_secs = 0\n\n\
             [source]\ntype = \"x_filtered_stream\"\nbase_url = \"http://127.0.0.1:{port}\"\n\
             bearer_token = {{ env = \"PROBE_TOKEN\" }}\nsync_rules = false\n\n\
             [rules]\ntype = \"file\"\npath = \"latency-probe-rules.jsonl\"\n\n\
             [buffer]\nenabled = {}\ndir = \"latency-probe-buffer\"\n\n[sink]\n{sink}\n\n{}\n",
            a.buffer, a.extra
        ),
    )?;
    Ok(pipeline)
}

/// Answer the rules list (read once at start), then serve the stream; the
/// number of posts sent.
fn serve_collector(listener: &TcpListener, a: &Args, epoch: Instant, total: u64) -> std::io::Result<u64> {
    loop {
        let (mut conn, _) = listener.accept()?;
        let head = request_head(&mut conn)?;
        if head.contains("/stream/rules") {
            let body = r#"{"data":[],"meta":{"result_count":0}}"#;
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        return serve(conn, a, epoch, total);
    }
}

fn main() -> std::io::Result<()> {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("--relay-from") {
        let port = argv.next().and_then(|p| p.parse().ok()).unwrap_or_else(|| usage());
        return relay(port);
    }
    let a = args();
    std::fs::create_dir_all(&a.dir)?;
    let dir = std::fs::canonicalize(&a.dir)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let admin = free_port()?;
    let out_file = dir.join("latency-probe-out.jsonl");
    let _ = std::fs::remove_file(&out_file);
    let pipeline = write_pipeline(&a, &dir, port, &out_file)?;
    let epoch = Instant::now();
    let total = a.rate * (a.seconds + 1);
    let control = a.bin == "relay";
    let mut cmd = if control {
        let mut c = Command::new(std::env::current_exe()?);
        c.args(["--relay-from", &port.to_string()]);
        c
    } else {
        let mut c = Command::new(&a.bin);
        c.args([
            "--pipeline",
            &pipeline.to_string_lossy(),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--log-level",
            "warn",
        ]);
        c
    };
    let mut child = cmd
        .env("PROBE_TOKEN", "probe")
        .stdout(if a.sink == "stdout" || control { Stdio::piped() } else { Stdio::null() })
        .spawn()?;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let stdout = child.stdout.take();
        let out_file = out_file.clone();
        let done = done.clone();
        std::thread::spawn(move || -> Vec<(u64, u64)> {
            match stdout {
                Some(s) => read_lines(BufReader::with_capacity(1 << 16, s), epoch, total, &done),
                None => read_lines(Tail::new(out_file, done.clone()), epoch, total, &done),
            }
        })
    };
    let sent = serve_collector(&listener, &a, epoch, total)?;
    // Wait for the reader (at most 10 s after the last post).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let inside = if control { None } else { scrape_ms(admin) };
    let cpu = cpu_secs(child.id());
    done.store(true, Ordering::Relaxed);
    stop(&mut child);
    let got = reader.join().unwrap_or_default();
    report(&a, sent, &got, inside, cpu)?;
    if (got.len() as u64) < total {
        eprintln!("latency_probe: {} of {total} posts came out", got.len());
        std::process::exit(1);
    }
    Ok(())
}

/// The figures line (posts of the first second are warm-up, left out), and
/// with `PROBE_DUMP` one line per post: its number and latency in µs (to
/// look at when the slow ones happened).
fn report(
    a: &Args,
    sent: u64,
    got: &[(u64, u64)],
    inside: Option<(f64, f64, u64)>,
    cpu: Option<f64>,
) -> std::io::Result<()> {
    if let Ok(path) = std::env::var("PROBE_DUMP") {
        let text: String = got.iter().map(|(i, l)| format!("{i} {}\n", l / 1000)).collect();
        std::fs::write(path, text)?;
    }
    let warmup = a.rate;
    let mut lat: Vec<u64> = got.iter().filter(|(i, _)| *i >= warmup).map(|(_, l)| *l).collect();
    lat.sort_unstable();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1)).map_or(f64::NAN, |v| *v as f64 / 1e6)
    };
    println!(
        "rate {:>6}/s  sent {:>7}  read {:>7}  outside p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.3} ms  /metrics p50 {} ms  CPU {} µs/post  (sink {}, buffer {})",
        a.rate,
        sent,
        got.len(),
        q(0.5),
        q(0.99),
        lat.last().map_or(f64::NAN, |v| *v as f64 / 1e6),
        inside.map_or("n/a".into(), |(p50, p99, spilled)| format!("{p50:.3}, p99 {p99:.3} (to disk {spilled})")),
        cpu.map_or("n/a".into(), |c| format!("{:.1}", c * 1e6 / sent.max(1) as f64)),
        if a.bin == "relay" { "relay (control)" } else { a.sink.as_str() },
        if a.buffer { "on" } else { "off" },
    );
    Ok(())
}

/// The control: ask the stand-in for its stream, copy each chunk (one post)
/// to stdout, flush when nothing more is buffered. No parsing, no work.
fn relay(port: u16) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.write_all(b"GET /2/tweets/search/stream HTTP/1.1\r\nHost: probe\r\n\r\n")?;
    let mut r = BufReader::with_capacity(1 << 16, s);
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut line = Vec::new();
    // The response head, up to its blank line.
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 || line == b"\r\n" {
            break;
        }
    }
    let mut chunk = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return out.flush();
        }
        let size = std::str::from_utf8(&line).ok().and_then(|l| usize::from_str_radix(l.trim(), 16).ok());
        let Some(size) = size.filter(|n| *n > 0) else { return out.flush() };
        chunk.resize(size + 2, 0);
        r.read_exact(&mut chunk)?;
        out.write_all(chunk[..size].trim_ascii_end())?;
        out.write_all(b"\n")?;
        if r.buffer().is_empty() {
            out.flush()?;
        }
    }
}

/// User + system CPU seconds the child has used so far (Linux
/// `/proc/PID/stat`, in clock ticks of 10 ms).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// An HTTP request's head (a GET has no body).
fn request_head(s: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Answer the stream request with a chunked stream of paced posts.
fn serve(mut s: TcpStream, a: &Args, epoch: Instant, total: u64) -> std::io::Result<u64> {
    s.set_nodelay(true)?;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    let pad = "x".repeat(a.size.saturating_sub(260));
    let start = Instant::now();
    let period = 1e9 / a.rate as f64;
    let mut buf = Vec::with_capacity(a.size + 64);
    for i in 0..total {
        let due = start + Duration::from_nanos((i as f64 * period) as u64);
        let now = Instant::now();
        if due > now {
            // No spinning: a busy core would be taken from the collector
            // (2 cores). Posts that fell due meanwhile go out one by one.
            std::thread::sleep(due - now);
        }
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        let line = format!(
            "{{\"data\":{{\"id\":\"{sent_ns}\",\"text\":\"probe post {i} {pad}\",\"author_id\":\"12\",\"created_at\":\"2021-04-01T10:00:00.000Z\",\"lang\":\"en\"}},\"includes\":{{\"users\":[{{\"id\":\"12\",\"username\":\"probe\"}}]}},\"matching_rules\":[{{\"id\":\"1\",\"tag\":\"r1\"}}]}}\r\n"
        );
        buf.clear();
        write!(buf, "{:x}\r\n{line}\r\n", line.len())?;
        s.write_all(&buf)?;
    }
    // Keep the connection open until the collector is stopped.
    std::thread::spawn(move || {
        let mut sink = [0u8; 1024];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    Ok(total)
}

/// (post number, latency in ns) of each line, until `total` or `done`.
fn read_lines(mut r: impl BufRead, epoch: Instant, total: u64, done: &AtomicBool) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(total as usize);
    let mut line = Vec::new();
    while (out.len() as u64) < total && !done.load(Ordering::Relaxed) {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let now = epoch.elapsed().as_nanos() as u64;
        if let Some(sent) = sent_ns(&line) {
            out.push((out.len() as u64, now.saturating_sub(sent)));
        }
    }
    out
}

/// The send time in a post's id (`"data":{"id":"<ns>"`).
fn sent_ns(line: &[u8]) -> Option<u64> {
    let key = b"\"data\":{\"id\":\"";
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits]).ok()?.parse().ok()
}

/// A file read as it grows (the file sink), polled every 50 µs at its end.
struct Tail {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    pos: usize,
    done: Arc<AtomicBool>,
}

impl Tail {
    fn new(path: std::path::PathBuf, done: Arc<AtomicBool>) -> Tail {
        Tail { path, file: None, buf: Vec::new(), pos: 0, done }
    }
}

impl Read for Tail {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.len().min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Tail {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.buf.len() {
            if self.done.load(Ordering::Relaxed) {
                return Ok(&[]);
            }
            if self.file.is_none() {
                self.file = std::fs::File::open(&self.path).ok();
            }
            self.buf.resize(1 << 16, 0);
            let n = match self.file.as_mut() {
                Some(f) => f.read(&mut self.buf)?,
                None => 0,
            };
            self.buf.truncate(n);
            self.pos = 0;
            if n == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        Ok(&self.buf[self.pos..])
    }
    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// The p50 and p99 of `traptor_end_to_end_latency_seconds` from
/// `/metrics`, in ms, interpolated linearly inside their buckets, and the
/// records the buffer put on disk (it does when the workers' channel is
/// full: a stall inside the collector).
fn scrape_ms(port: u16) -> Option<(f64, f64, u64)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for l in body.lines().filter(|l| l.starts_with("traptor_end_to_end_latency_seconds_bucket")) {
        let le = l.split("le=\"").nth(1)?.split('"').next()?;
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
        buckets.push((le, n));
    }
    let spilled = body
        .lines()
        .find(|l| l.starts_with("traptor_buffer_moved_records_total{direction=\"to_disk\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    let total = buckets.last()?.1;
    let quantile = |q: f64| -> Option<f64> {
        let want = total * q;
        let (mut lo, mut below) = (0.0, 0.0);
        for &(le, n) in &buckets {
            if n >= want {
                let frac = if n > below { (want - below) / (n - below) } else { 0.0 };
                let hi = if le.is_finite() { le } else { lo };
                return Some((lo + (hi - lo) * frac) * 1e3);
            }
            lo = le;
            below = n;
        }
        None
    };
    Some((quantile(0.5)?, quantile(0.99)?, spilled))
}

/// SIGTERM, then wait (a graceful stop drains and exits 0).
fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
