//! The last posts the workers decoded, for the admin listener's
//! `GET /api/recent` (what `rules preview --admin` matches against).
//! Bounded by count (`[admin] recent_posts`) and by bytes, so a stream of
//! large posts cannot grow it; kept only when the admin listener is on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::post::Format;

/// At most this many bytes of posts are kept, whatever the count.
pub const MAX_RECENT_BYTES: usize = 64 << 20;

#[derive(Debug)]
pub struct RecentPosts {
    max: usize,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    posts: VecDeque<(Format, Arc<[u8]>)>,
    bytes: usize,
}

impl RecentPosts {
    pub fn new(max: usize) -> RecentPosts {
        RecentPosts { max, ring: Mutex::new(Ring::default()) }
    }

    /// Add a batch's posts (one lock per batch); only the last `max` of a
    /// large batch are copied.
    pub fn extend(&self, format: Format, posts: &[&[u8]]) {
        if self.max == 0 || posts.is_empty() {
            return;
        }
        let skip = posts.len().saturating_sub(self.max);
        let Ok(mut r) = self.ring.lock() else { return };
        for p in &posts[skip..] {
            r.bytes += p.len();
            r.posts.push_back((format, Arc::from(*p)));
        }
        while r.posts.len() > self.max || (r.bytes > MAX_RECENT_BYTES && r.posts.len() > 1) {
            if let Some((_, old)) = r.posts.pop_front() {
                r.bytes -= old.len();
            }
        }
    }

    /// Every kept post, oldest first (pointers copied under the lock, not bytes).
    pub fn snapshot(&self) -> Vec<(Format, Arc<[u8]>)> {
        self.ring.lock().map(|r| r.posts.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.ring.lock().map_or(0, |r| r.posts.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_posts_within_count_and_bytes() {
        let r = RecentPosts::new(3);
        r.extend(Format::TwitterV1, &[b"{\"a\":1}", b"{\"a\":2}"]);
        r.extend(Format::XV2, &[b"{\"a\":3}", b"{\"a\":4}"]);
        let s = r.snapshot();
        assert_eq!(s.len(), 3);
        assert_eq!(&*s[0].1, b"{\"a\":2}");
        assert_eq!(s[2].0, Format::XV2);
        let big = vec![b' '; MAX_RECENT_BYTES / 2 + 1];
        let r = RecentPosts::new(10);
        r.extend(Format::TwitterV1, &[&big, &big, &big]);
        assert_eq!(r.len(), 1, "bounded by bytes");
        assert!(RecentPosts::new(0).is_empty());
    }
}
