//! Tests of `synthetic.rs`.

use super::*;
use crate::post::{Message, v1};

#[test]
fn same_seed_same_posts() {
    let a: Vec<_> = {
        let mut g = Generator::new(7);
        (0..50).map(|_| g.next_post()).collect()
    };
    let mut g = Generator::new(7);
    let b: Vec<_> = (0..50).map(|_| g.next_post()).collect();
    assert_eq!(a, b);
    let mut g = Generator::new(8);
    assert_ne!(a[0], g.next_post());
}

#[test]
fn twitter_time_is_v1_format() {
    assert_eq!(twitter_time(1_456_104_893), "Mon Feb 22 01:34:53 +0000 2016");
}

#[test]
fn posts_decode_with_every_feature() {
    let mut g = Generator::new(1);
    let (mut rts, mut quotes, mut ext, mut places, mut points, mut replies, mut spans_ok) = (0, 0, 0, 0, 0, 0, 0);
    let n = 2000;
    for _ in 0..n {
        let raw = g.next_post();
        let Ok(Message::Post(p)) = v1::decode(&raw) else { panic!("bad post {}", String::from_utf8_lossy(&raw)) };
        rts += usize::from(p.is_retweet());
        quotes += usize::from(p.is_quote());
        replies += usize::from(p.is_reply());
        places += usize::from(p.place_bbox.is_some());
        points += usize::from(p.coordinates.is_some());
        ext += usize::from(memchr::memmem::find(&raw, b"extended_tweet").is_some());
        // Every entity was located in the text.
        let n_entities = p.text.hashtags.len() + p.text.mentions.len() + p.text.links.len();
        spans_ok += usize::from(p.text.entity_spans.len() == n_entities);
        for s in &p.text.entity_spans {
            let covered = &p.text.text[s.clone()];
            assert!(covered.starts_with(['#', '@', 'h']), "span {covered:?} in {:?}", p.text.text);
        }
    }
    assert!(rts > n / 10 && quotes > n / 20 && replies > n / 10, "{rts} {quotes} {replies}");
    assert!(ext > 0 && places > 0 && points > 0, "{ext} {places} {points}");
    assert_eq!(spans_ok, n);
}
