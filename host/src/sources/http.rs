//! What the HTTP connectors share (X v2, Twitter v1.1, Mastodon): the
//! client, the body stream, and error texts that never carry a URL.

use std::time::Duration;

use super::SourceError;

/// An HTTP client for a streaming API.
pub(crate) fn http_client() -> Result<reqwest::Client, SourceError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("traptor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SourceError::Task(format!("HTTP client: {e}")))
}

/// A body of the stream.
pub(crate) type ByteStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// `title: detail` of an RFC 7807 problem body, or the body itself (short).
pub(crate) fn problem_detail(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct P {
        title: Option<String>,
        detail: Option<String>,
    }
    match serde_json::from_str::<P>(body) {
        Ok(P { title: Some(t), detail }) => format!("{t}{}", detail.map(|d| format!(": {d}")).unwrap_or_default()),
        _ => body.chars().take(200).collect(),
    }
}

/// reqwest errors print the URL; ours never carry secrets in URLs, but keep
/// messages short.
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "");
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// What [`Lines`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// A line, without its `\n`.
    Line(&'a [u8]),
    /// A line longer than the cap went by; nothing of it was kept.
    Oversized,
}

/// A byte stream cut into `\n`-terminated lines, never holding more than
/// `max` bytes of one line: a longer line is dropped as it arrives and
/// reported once as [`Piece::Oversized`].
#[derive(Debug)]
pub(crate) struct Lines {
    buf: Vec<u8>,
    max: usize,
    /// Inside a line already reported as oversized: drop to its end.
    skipping: bool,
}

impl Lines {
    pub(crate) fn new(max: usize) -> Lines {
        Lines { buf: Vec::new(), max, skipping: false }
    }

    /// Bytes of an unfinished line held (0 while skipping one).
    pub(crate) fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Add a chunk; `each` gets every line it completes, in order.
    pub(crate) fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(Piece<'_>)) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (part, ends) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], Some(i + 1)),
                None => (rest, None),
            };
            if !self.skipping {
                if self.buf.len() + part.len() > self.max {
                    self.buf.clear();
                    self.skipping = true;
                    each(Piece::Oversized);
                } else if ends.is_some() && self.buf.is_empty() {
                    each(Piece::Line(part));
                } else {
                    self.buf.extend_from_slice(part);
                    if ends.is_some() {
                        let line = std::mem::take(&mut self.buf);
                        each(Piece::Line(&line));
                        self.buf = line;
                        self.buf.clear();
                    }
                }
            }
            match ends {
                Some(n) => {
                    self.skipping = false;
                    rest = &rest[n..];
                }
                None => rest = &[],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut l = Lines::new(max);
        let mut out = Vec::new();
        for c in chunks {
            l.feed(c, |p| {
                out.push(match p {
                    Piece::Line(b) => String::from_utf8_lossy(b).into_owned(),
                    Piece::Oversized => "<oversized>".into(),
                })
            });
            assert!(l.pending() <= max);
        }
        out
    }

    #[test]
    fn lines_across_chunks_and_the_cap() {
        assert_eq!(pieces(100, &[b"ab\ncd", b"e\n\nf"]), ["ab", "cde", ""]);
        // A 30-byte line with a cap of 10, fed in pieces: dropped once, then on.
        let long = [b'x'; 30];
        assert_eq!(pieces(10, &[b"ok\n", &long[..7], &long[7..], b"\nnext\n"]), ["ok", "<oversized>", "next"]);
        assert_eq!(pieces(10, &[&long[..], b"\n"]), ["<oversized>"]);
    }
}
