//! Per-rule rate limits and sampling (issue 12, point 4).
//!
//! A rule may carry `rate_limit` (posts per second attributed to it at
//! most: a token bucket holding one second of the rate, which starts empty,
//! so no window from the start sees more than the rate plus one second of
//! it) and `sample` (the share of its posts attributed to it, chosen by a
//! hash of the post id, so every collector and every run keeps the same
//! posts). `[limits.<tag>]` in the pipeline sets them for every rule with
//! that tag; a rule's own fields win. A post over a rule's limit, or
//! sampled out, is not attributed to that rule; with no rule left it is
//! unmatched ("Not Found"), like any other.
//!
//! Buckets and per-rule counts belong to one compiled rule set: a reload
//! starts them afresh; the totals in the metrics go on.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use crate::component::Problems;
use crate::rules::Rule;
use crate::telemetry::Metrics;

/// `[limits]`: per-tag limits, `[limits.<tag>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct LimitsConfig(pub BTreeMap<String, TagLimit>);

/// `[limits.<tag>]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagLimit {
    /// Posts per second attributed to each rule of the tag at most.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// The share of each rule's posts attributed to it (0 < sample ≤ 1).
    #[serde(default)]
    pub sample: Option<f64>,
}

impl LimitsConfig {
    pub fn check(&self, p: &mut Problems<'_>) {
        for (tag, l) in &self.0 {
            if let Some(r) = l.rate_limit
                && !(r.is_finite() && r > 0.0 && r <= 1e9)
            {
                p.add(&format!("{tag}.rate_limit"), format!("{r} is not a rate: expected posts per second above 0"));
            }
            if let Some(s) = l.sample
                && !(s > 0.0 && s <= 1.0)
            {
                p.add(&format!("{tag}.sample"), format!("{s} is not a share: expected above 0 and at most 1"));
            }
        }
    }
}

/// The limits of one rule, while it is in use.
struct RuleLimiter {
    bucket: Option<DefaultDirectRateLimiter>,
    /// Posts whose id hashes at or below this are kept (`sample`).
    keep_at_most: Option<u64>,
    limited: AtomicU64,
    sampled_out: AtomicU64,
}

impl std::fmt::Debug for RuleLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleLimiter").field("keep_at_most", &self.keep_at_most).finish_non_exhaustive()
    }
}

/// Per-rule counts of one rule set, for the end-of-run report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLimitCounts {
    pub rule_id: String,
    pub limited: u64,
    pub sampled_out: u64,
}

/// The limiters of a compiled rule set (only rules that have limits).
#[derive(Debug)]
pub struct Limiters {
    /// `(rule index, limiter)` of the rules that have limits, by index:
    /// sparse, so a million rules without limits cost nothing here (a dense
    /// `Vec<Option<_>>` was 104 MB at 1M rules, the peak of a rule load).
    per_rule: Vec<(u32, RuleLimiter)>,
}

impl Limiters {
    /// `None` when no rule has a limit (the worker then does nothing more).
    pub fn build(rules: &[Rule], tags: &LimitsConfig) -> Option<Limiters> {
        let per_rule: Vec<(u32, RuleLimiter)> = rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let (own_rate, own_sample) = r.limits();
                let tag = r.tag().and_then(|t| tags.0.get(t)).copied().unwrap_or_default();
                let (rate, sample) = (own_rate.or(tag.rate_limit), own_sample.or(tag.sample));
                if rate.is_none() && sample.is_none() {
                    return None;
                }
                let limiter = RuleLimiter {
                    bucket: rate.map(bucket),
                    keep_at_most: sample.filter(|s| *s < 1.0).map(|s| (s * u64::MAX as f64) as u64),
                    limited: AtomicU64::new(0),
                    sampled_out: AtomicU64::new(0),
                };
                Some((u32::try_from(i).ok()?, limiter))
            })
            .collect();
        (!per_rule.is_empty()).then_some(Limiters { per_rule })
    }

    /// Remove from `matched` the rules `post_id` is sampled out of or over
    /// the limit of; counted per rule and in `metrics`.
    pub fn apply(&self, post_id: &str, matched: &mut Vec<u32>, metrics: &Metrics) {
        let mut hash = None;
        matched.retain(|&i| {
            let Ok(at) = self.per_rule.binary_search_by_key(&i, |(r, _)| *r) else { return true };
            let l = &self.per_rule[at].1;
            if let Some(max) = l.keep_at_most
                && *hash.get_or_insert_with(|| xxhash_rust::xxh3::xxh3_64(post_id.as_bytes())) > max
            {
                l.sampled_out.fetch_add(1, Relaxed);
                Metrics::add(&metrics.rule_sampled_out, 1);
                return false;
            }
            if let Some(b) = &l.bucket
                && b.check().is_err()
            {
                l.limited.fetch_add(1, Relaxed);
                Metrics::add(&metrics.rule_limited, 1);
                return false;
            }
            true
        });
    }

    /// Rules that limited or sampled out at least one post.
    pub fn counts(&self, rules: &[Rule]) -> Vec<RuleLimitCounts> {
        self.per_rule
            .iter()
            .filter_map(|(i, l)| {
                let r = rules.get(*i as usize)?;
                let (limited, sampled_out) = (l.limited.load(Relaxed), l.sampled_out.load(Relaxed));
                (limited + sampled_out > 0).then(|| RuleLimitCounts {
                    rule_id: r.rule_id().to_owned(),
                    limited,
                    sampled_out,
                })
            })
            .collect()
    }
}

/// A bucket of `rate` tokens a second holding one second's worth, empty at
/// the start.
fn bucket(rate: f64) -> DefaultDirectRateLimiter {
    let burst = NonZeroU32::new(rate.ceil().clamp(1.0, u32::MAX as f64) as u32).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(burst)).allow_burst(burst);
    let limiter = RateLimiter::direct(quota);
    // Start empty: the first second admits `rate` posts, not twice that.
    let _ = limiter.check_n(burst);
    limiter
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleType;

    fn rule(json: &str) -> Rule {
        Rule::from_json_text(json, RuleType::Track).expect("rule")
    }

    #[test]
    fn own_fields_win_over_the_tag_and_rules_without_limits_cost_nothing() {
        let tags =
            LimitsConfig(BTreeMap::from([("noisy".to_owned(), TagLimit { rate_limit: None, sample: Some(0.5) })]));
        let plain = [rule(r#"{"rule_id":"a","value":"x"}"#)];
        assert!(Limiters::build(&plain, &tags).is_none());
        let rules = [
            rule(r#"{"rule_id":"a","value":"x"}"#),
            rule(r#"{"rule_id":"b","value":"x","tag":"noisy"}"#),
            rule(r#"{"rule_id":"c","value":"x","tag":"noisy","sample":1}"#),
        ];
        let l = Limiters::build(&rules, &tags).expect("limits");
        let m = Metrics::default();
        let (mut kept_b, mut kept_c) = (0, 0);
        for i in 0..10_000 {
            let mut matched = vec![0, 1, 2];
            l.apply(&format!("{i}"), &mut matched, &m);
            assert!(matched.contains(&0));
            kept_b += u32::from(matched.contains(&1));
            kept_c += u32::from(matched.contains(&2));
        }
        assert!((4_700..=5_300).contains(&kept_b), "{kept_b}");
        assert_eq!(kept_c, 10_000, "the rule's own sample = 1 wins over its tag");
        assert_eq!(
            l.counts(&rules),
            vec![RuleLimitCounts { rule_id: "b".into(), limited: 0, sampled_out: u64::from(10_000 - kept_b) }]
        );
        assert_eq!(m.snapshot().rule_sampled_out, u64::from(10_000 - kept_b));
    }

    #[test]
    fn a_bucket_starts_empty_and_admits_its_rate() {
        let rules = [rule(r#"{"rule_id":"a","value":"x","rate_limit":"50"}"#)];
        let l = Limiters::build(&rules, &LimitsConfig::default()).expect("limits");
        let m = Metrics::default();
        let mut admitted = 0;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(400) {
            let mut matched = vec![0];
            l.apply("1", &mut matched, &m);
            admitted += matched.len();
            std::thread::sleep(Duration::from_micros(200));
        }
        // 50/s over 0.4 s: about 20, never the 50 of a full bucket.
        assert!((12..=30).contains(&admitted), "{admitted}");
        assert!(m.snapshot().rule_limited > 100);
    }

    #[test]
    fn tag_limits_are_checked_with_their_key() {
        let cfg: LimitsConfig =
            toml::from_str("[noisy]\nsample = 1.5\n[loud]\nrate_limit = 0\n[ok]\nrate_limit = 10").expect("toml");
        let mut out = Vec::new();
        cfg.check(&mut Problems::new("limits", &mut out));
        let text: Vec<String> = out.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text.iter().any(|t| t.contains("limits.noisy.sample")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("limits.loud.rate_limit")), "{text:?}");
        assert!(toml::from_str::<LimitsConfig>("[x]\nrate = 1").is_err(), "unknown keys are refused");
    }

    #[test]
    fn bad_limits_are_refused_naming_the_field() {
        for (json, field) in [
            (r#"{"rule_id":"a","value":"x","rate_limit":"0"}"#, "rate_limit"),
            (r#"{"rule_id":"a","value":"x","rate_limit":"fast"}"#, "rate_limit"),
            (r#"{"rule_id":"a","value":"x","sample":"1.5"}"#, "sample"),
            (r#"{"rule_id":"a","value":"x","sample":0}"#, "sample"),
        ] {
            let e = Rule::from_json_text(json, RuleType::Track).expect_err(json).to_string();
            assert!(e.contains(&format!("`{field}`")), "{json}: {e}");
        }
    }
}
