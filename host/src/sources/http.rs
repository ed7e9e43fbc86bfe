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
