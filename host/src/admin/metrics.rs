//! `/metrics`: every counter the collector keeps, read at scrape time from
//! the same atomics the throughput line and the exit summary read (one
//! telemetry path, nothing counted twice, nothing on the hot path).
//!
//! The pipeline's metrics are encoded from their declarations
//! ([`crate::telemetry::METRICS`]); the build info, the source's connection,
//! the rule set and the stages, which live elsewhere, by hand below.
//!
//! Encoded by `prometheus-client` (OpenMetrics); [`to_prometheus_text`]
//! turns that into the Prometheus text format 0.0.4 for scrapers that do not
//! ask for OpenMetrics. Per-rule counts are not labels (unbounded
//! cardinality).

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::AdminState;
use crate::telemetry::{Desc, HistogramSnapshot, Kind, Label, Samples, Snapshot};

/// The registry `/metrics` encodes: one collector over the admin state.
pub fn registry(state: std::sync::Arc<AdminState>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(TraptorCollector(state)));
    r
}

#[derive(Debug)]
struct TraptorCollector(std::sync::Arc<AdminState>);

type Labels<'a> = Vec<(&'a str, &'a str)>;

/// `traptor_shadow_*` of the stages with a shadow candidate.
fn encode_shadows(
    e: &mut DescriptorEncoder<'_>,
    stages: &[(String, crate::plugins::StageSnapshot, &std::sync::Arc<crate::plugins::Stage>)],
) -> Result<(), std::fmt::Error> {
    let (mut compared, mut shadow_fields) = (Vec::new(), Vec::new());
    for (name, _, st) in stages {
        let Some(sh) = &st.shadow else { continue };
        for (result, n) in [
            ("same", sh.stats.same.load(std::sync::atomic::Ordering::Relaxed)),
            ("different", sh.stats.different.load(std::sync::atomic::Ordering::Relaxed)),
        ] {
            compared.push((vec![("stage", name.clone()), ("result", result.to_owned())], n));
        }
        for (field, n) in sh.stats.field_counts() {
            shadow_fields.push((vec![("stage", name.clone()), ("field", field)], n));
        }
    }
    fn as_str<'a>(v: &'a [(Vec<(&'a str, String)>, u64)]) -> Vec<(Vec<(&'a str, &'a str)>, u64)> {
        v.iter().map(|(l, n)| (l.iter().map(|(k, v)| (*k, v.as_str())).collect(), *n)).collect()
    }
    family(
        e,
        "traptor_shadow_posts",
        "Posts a shadow stage's candidate saw, by whether its answer was the live one's",
        MetricType::Counter,
        &as_str(&compared),
    )?;
    family(
        e,
        "traptor_shadow_field_differences",
        "Enrichment fields in which a shadow candidate differed from the live stage",
        MetricType::Counter,
        &as_str(&shadow_fields),
    )?;
    Ok(())
}

/// One metric family: a name, help, type and its labelled values.
fn family(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    values: &[(Labels<'_>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    if let [(labels, v)] = values
        && labels.is_empty()
    {
        return value(kind, *v, m);
    }
    for (labels, v) in values {
        value(kind, *v, m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A labelled counter family of seconds (fractional).
fn counter_f64(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: &[(Labels<'_>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One histogram, unlabelled when `labels` is empty.
fn histogram(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: &Labels<'_>,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let (buckets, sum) = h.buckets_seconds();
    let count = h.count();
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    if labels.is_empty() {
        return m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None);
    }
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

fn value(kind: MetricType, v: u64, enc: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(enc),
        _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(enc),
    }
}

/// A declaration's labels, the source's and sink's names filled in.
fn labels<'a>(s: &'a AdminState, d: &Desc) -> Labels<'a> {
    d.labels
        .iter()
        .map(|&(k, v)| {
            let v = match v {
                Label::Fixed(v) => v,
                Label::Source => s.source.as_str(),
                Label::Sink => s.sink.as_str(),
            };
            (k, v)
        })
        .collect()
}

impl Collector for TraptorCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        let m = s.metrics.snapshot();
        let mut info =
            e.encode_descriptor("traptor_build", "Version and identity of this collector", None, MetricType::Info)?;
        let id = s.collector.id.to_string();
        let t = s.collector.rule_type.as_str();
        info.encode_info(&vec![("version", env!("CARGO_PKG_VERSION")), ("type", t), ("id", id.as_str())])?;
        self.encode_declared(&mut e, &m)?;
        self.encode_connection(&mut e)?;
        self.encode_rules(&mut e)?;
        self.encode_stages(&mut e)
    }
}

impl TraptorCollector {
    /// Every declared metric: one family per run of declarations with the
    /// same name (`traptor_posts` is `posts_matched` and `posts_unmatched`);
    /// a family with no samples (no field surprises yet) is left out.
    fn encode_declared(&self, e: &mut DescriptorEncoder<'_>, m: &Snapshot) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        let declared: Vec<(&Desc, Samples<'_>)> = m.samples().filter(|(d, _)| d.kind != Kind::SumOf).collect();
        for members in declared.chunk_by(|a, b| a.0.name == b.0.name) {
            let Some(&(first, _)) = members.first() else { continue };
            let kind = match first.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => {
                    for (d, v) in members {
                        if let Samples::Histogram(h) = v {
                            histogram(e, d.name, d.help, &labels(s, d), h)?;
                        }
                    }
                    continue;
                }
                Kind::SumOf => continue,
            };
            let mut values: Vec<(Labels<'_>, u64)> = Vec::new();
            for (d, v) in members {
                let base = labels(s, d);
                match v {
                    Samples::One(n) => values.push((base, *n)),
                    Samples::Labelled(rows) => {
                        for (own, n) in rows {
                            let mut l = base.clone();
                            for &(k, v) in own {
                                l.push((k, v));
                            }
                            values.push((l, *n));
                        }
                    }
                    Samples::Histogram(_) => {}
                }
            }
            if !values.is_empty() {
                family(e, first.name, first.help, kind, &values)?;
            }
        }
        Ok(())
    }

    /// The live source's connection (kept by the source, not declared).
    fn encode_connection(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        let c = &s.connection;
        family(
            e,
            "traptor_source_connected",
            "1 while the live source's connection is up",
            MetricType::Gauge,
            &[(vec![("source", s.source.as_str())], c.connected.load(Relaxed))],
        )?;
        let reasons = [
            ("network", c.network_failures.load(Relaxed)),
            ("http", c.http_failures.load(Relaxed)),
            ("rate_limited", c.rate_limited.load(Relaxed)),
            ("unauthorized", c.unauthorized.load(Relaxed)),
        ];
        let reconnects: Vec<(Labels<'_>, u64)> =
            reasons.iter().map(|(r, n)| (vec![("source", s.source.as_str()), ("reason", *r)], *n)).collect();
        family(e, "traptor_source_reconnects", "Connections that ended, by reason", MetricType::Counter, &reconnects)?;
        if let Some(key) = s.key_in_use.get() {
            family(
                e,
                "traptor_api_key_in_use",
                "1 for the API key of the pool the live source connects with ([coordination.api_keys])",
                MetricType::Gauge,
                &[(vec![("source", s.source.as_str()), ("key", &*key)], 1)],
            )?;
        }
        Ok(())
    }

    /// The running rule set, by type.
    fn encode_rules(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let compiled = self.0.compiled.load();
        let mut by_type = std::collections::BTreeMap::new();
        for r in compiled.matcher.rules() {
            *by_type.entry(r.rule_type().as_str()).or_insert(0u64) += 1;
        }
        let rules: Vec<(Labels<'_>, u64)> = by_type.iter().map(|(t, n)| (vec![("type", *t)], *n)).collect();
        family(e, "traptor_rules", "Rules in the running matcher, by type", MetricType::Gauge, &rules)
    }

    fn encode_stages(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let set = self.0.stages.load_full();
        let stages: Vec<_> = set.stages.iter().map(|st| (st.name.to_string(), st.metrics.snapshot(), st)).collect();
        let mut posts = Vec::new();
        let mut failures = Vec::new();
        let mut open = Vec::new();
        let mut plugin = Vec::new();
        for (name, s, st) in &stages {
            for (outcome, n) in [
                ("kept", s.kept),
                ("enriched", s.enriched),
                ("dropped", s.dropped),
                ("error", s.post_errors),
                ("skipped", s.skipped),
                ("dead_lettered", s.dead_lettered),
            ] {
                posts.push((vec![("stage", name.as_str()), ("outcome", outcome)], n));
            }
            for (kind, n) in [
                ("trap", s.traps),
                ("timeout", s.timeouts),
                ("out_of_memory", s.out_of_memory),
                ("protocol", s.protocol_errors),
            ] {
                failures.push((vec![("stage", name.as_str()), ("kind", kind)], n));
            }
            open.push((vec![("stage", name.as_str())], u64::from(st.circuit_open())));
            for (counter, n) in &s.plugin {
                plugin.push((vec![("stage", name.as_str()), ("name", counter.as_str())], *n));
            }
        }
        encode_shadows(e, &stages)?;
        family(e, "traptor_stage_posts", "Posts through each stage, by outcome", MetricType::Counter, &posts)?;
        family(e, "traptor_stage_failures", "Failed stage batches, by kind", MetricType::Counter, &failures)?;
        family(
            e,
            "traptor_stage_circuit_open",
            "1 while a stage is bypassed by its breaker",
            MetricType::Gauge,
            &open,
        )?;
        family(
            e,
            "traptor_plugin_counter",
            "Counters plugins bump through the host's counter import",
            MetricType::Counter,
            &plugin,
        )?;
        let mut parts = Vec::new();
        for (name, s, _) in &stages {
            for (part, ns) in
                [("prepare", s.prepare_ns), ("lower", s.lower_ns), ("guest", s.guest_ns), ("lift", s.lift_ns)]
            {
                parts.push((vec![("stage", name.as_str()), ("part", part)], ns as f64 / 1e9));
            }
        }
        counter_f64(
            e,
            "traptor_stage_seconds",
            "Time spent in each stage, by part: prepare (the host building the batch), lower (copying it into the \
             plugin), guest (the plugin's code), lift (reading its answers back)",
            &parts,
        )?;
        let mut h = e.encode_descriptor(
            "traptor_stage_post_duration_seconds",
            "What a stage costs per post: each batch's time over its posts",
            None,
            MetricType::Histogram,
        )?;
        for (name, _, st) in &stages {
            let (buckets, sum) = st.metrics.per_post.buckets_seconds();
            let count = buckets.iter().map(|(_, n)| n).sum();
            let labels = vec![("stage", name.as_str())];
            h.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let mut h = e.encode_descriptor(
            "traptor_stage_batch_duration_seconds",
            "Time a stage took per batch",
            None,
            MetricType::Histogram,
        )?;
        for (name, _, st) in &stages {
            let (buckets, sum) = st.metrics.latency.0.buckets_seconds();
            let count = buckets.iter().map(|(_, n)| n).sum();
            let labels = vec![("stage", name.as_str())];
            h.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4: counters are typed under
/// their `_total` name, an info metric becomes a `_info` gauge, `# UNIT` and
/// `# EOF` lines go.
pub fn to_prometheus_text(open_metrics: &str) -> String {
    let mut renames = std::collections::HashMap::new();
    for line in open_metrics.lines() {
        match line.strip_prefix("# TYPE ").and_then(|rest| rest.split_once(' ')) {
            Some((name, "counter")) => renames.insert(name.to_owned(), (format!("{name}_total"), "counter")),
            Some((name, "info")) => renames.insert(name.to_owned(), (format!("{name}_info"), "gauge")),
            _ => None,
        };
    }
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            let (new, kind) = renames.get(name)?;
            Some(if *p == "# TYPE " { format!("{p}{new} {kind}") } else { format!("{p}{new} {tail}") })
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::telemetry::{METRICS, Metrics};

    #[test]
    fn counters_are_typed_by_their_total_name_in_the_prometheus_format() {
        let om = "# HELP a_posts Posts.\n# TYPE a_posts counter\na_posts_total{r=\"x\"} 3\n# TYPE g gauge\ng 1\n\
                  # HELP b Build.\n# TYPE b info\nb_info{v=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_posts_total Posts.\n# TYPE a_posts_total counter\na_posts_total{r=\"x\"} 3\n# TYPE g gauge\ng 1\n\
             # HELP b_info Build.\n# TYPE b_info gauge\nb_info{v=\"1\"} 1\n"
        );
    }

    /// An admin state over `metrics`: source "replay", sink "file", no
    /// rules, no stages.
    fn state(metrics: Arc<Metrics>) -> AdminState {
        let compiled = crate::pipeline::Compiled::new(
            &crate::rules::RuleSnapshot::default(),
            &crate::pipeline::limits::LimitsConfig::default(),
        );
        AdminState {
            collector: crate::rules::Collector::new(crate::rules::RuleType::Track, 7),
            lease_fence: None,
            key_in_use: Arc::default(),
            sources: Vec::new(),
            sink_down_since: std::sync::Mutex::default(),
            metrics,
            stages: Arc::new(arc_swap::ArcSwap::from_pointee(crate::pipeline::StageSet::default())),
            compiled: Arc::new(arc_swap::ArcSwap::from_pointee(compiled)),
            health: Arc::default(),
            connection: Arc::default(),
            source: "replay".to_owned(),
            source_live: false,
            sink: "file".to_owned(),
            redis: None,
            rule_hits: None,
            started: std::time::Instant::now(),
            history: std::sync::Mutex::default(),
            recent: Arc::new(crate::pipeline::recent::RecentPosts::new(0)),
            settings: crate::admin::AdminSettings::from_config(None).expect("defaults"),
            promote: None,
            heavy: tokio::sync::Semaphore::new(1),
        }
    }

    /// `/metrics` in the Prometheus text format.
    fn scrape(metrics: Arc<Metrics>) -> String {
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &registry(Arc::new(state(metrics)))).expect("encodes");
        to_prometheus_text(&om)
    }

    /// Metrics with a field surprise: the one family left out while empty.
    fn some_metrics() -> Arc<Metrics> {
        let m = Arc::new(Metrics::default());
        m.field_surprises.add("twitter_v1", "id", 1);
        m
    }

    /// Issue 24, point 2: every declared metric is in `/metrics`, typed and
    /// described as declared, a sample carrying its declared labels.
    #[test]
    fn every_declared_metric_is_in_the_metrics_endpoint() {
        let text = scrape(some_metrics());
        for d in METRICS {
            // `posts` is the sum of `traptor_posts{result}`: that family.
            let f = if d.kind == Kind::SumOf {
                METRICS.iter().find(|f| f.name == d.name && f.kind != Kind::SumOf).expect("summed family")
            } else {
                d
            };
            let (name, kind, sample) = match f.kind {
                Kind::Counter => (format!("{}_total", f.name), "counter", format!("{}_total", f.name)),
                Kind::Gauge => (f.name.to_owned(), "gauge", f.name.to_owned()),
                Kind::Histogram | Kind::SumOf => (f.name.to_owned(), "histogram", format!("{}_count", f.name)),
            };
            assert!(text.contains(&format!("\n# TYPE {name} {kind}\n")), "{}: no {name} {kind} in\n{text}", d.field);
            assert!(text.contains(&format!("\n# HELP {name} {}\n", f.help)), "{}: help of {name} in\n{text}", d.field);
            let want: Vec<String> = f
                .labels
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Label::Fixed(v) => v,
                        Label::Source => "replay",
                        Label::Sink => "file",
                    };
                    format!("{k}=\"{v}\"")
                })
                .collect();
            assert!(
                text.lines().any(|l| l.split(['{', ' ']).next() == Some(sample.as_str())
                    && want.iter().all(|w| l.contains(w.as_str()))),
                "{}: no {sample} sample with {want:?} in\n{text}",
                d.field
            );
        }
    }

    /// What `/metrics` showed before the metrics were declared (names,
    /// types, help, label sets): unchanged.
    #[test]
    fn the_families_shown_before_are_unchanged() {
        let text = scrape(some_metrics());
        let before = [
            ("traptor_build_info", "gauge", "Version and identity of this collector"),
            ("traptor_posts_total", "counter", "Posts that went through matching, by result (their sum is every post)"),
            ("traptor_records_total", "counter", "Control messages (not posts) read, by kind"),
            ("traptor_malformed_total", "counter", "Records that could not be decoded"),
            (
                "traptor_field_surprises_total",
                "counter",
                "Post fields read in an unexpected JSON type (converted, or treated as absent); the posts went on",
            ),
            ("traptor_duplicates_dropped_total", "counter", "Redeliveries a live source dropped"),
            ("traptor_source_connected", "gauge", "1 while the live source's connection is up"),
            ("traptor_source_reconnects_total", "counter", "Connections that ended, by reason"),
            ("traptor_sink_records_total", "counter", "Records the sink wrote (or the broker confirmed)"),
            ("traptor_spool_records", "gauge", "Records waiting in the Kafka spool"),
            ("traptor_spool_bytes", "gauge", "Bytes held by the Kafka spool"),
            ("traptor_buffer_records", "gauge", "Records waiting in the buffer's disk queue"),
            ("traptor_buffer_bytes", "gauge", "Bytes waiting in the buffer's disk queue"),
            (
                "traptor_buffer_behind_seconds",
                "gauge",
                "Age of the oldest record in the buffer's disk queue (how far behind real time)",
            ),
            ("traptor_buffer_moved_records_total", "counter", "Records the buffer put on disk and took back"),
            ("traptor_buffer_dropped_records_total", "counter", "Records a full buffer dropped, by overflow policy"),
            (
                "traptor_kafka_delivery_duration_seconds",
                "histogram",
                "From handing a record to the Kafka producer to the broker's confirmation",
            ),
            ("traptor_rules", "gauge", "Rules in the running matcher, by type"),
            ("traptor_rules_reloads_total", "counter", "Times a new rule set was swapped in"),
            ("traptor_rules_reload_duration_seconds", "histogram", "Time to compile a new rule set and swap it in"),
            (
                "traptor_end_to_end_latency_seconds",
                "histogram",
                "From a record's read by the source to its write by the sink (or the broker's confirmation)",
            ),
            ("traptor_stage_posts_total", "counter", "Posts through each stage, by outcome"),
            ("traptor_stage_failures_total", "counter", "Failed stage batches, by kind"),
            ("traptor_stage_circuit_open", "gauge", "1 while a stage is bypassed by its breaker"),
            ("traptor_plugin_counter_total", "counter", "Counters plugins bump through the host's counter import"),
            ("traptor_stage_batch_duration_seconds", "histogram", "Time a stage took per batch"),
            (
                "traptor_stage_post_duration_seconds",
                "histogram",
                "What a stage costs per post: each batch's time over its posts",
            ),
        ];
        for (name, kind, help) in before {
            assert!(text.contains(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n")), "{name} in\n{text}");
        }
        let mut samples = vec![
            "traptor_posts_total{result=\"matched\"} 0".to_owned(),
            "traptor_posts_total{result=\"unmatched\"} 0".to_owned(),
            "traptor_malformed_total 0".to_owned(),
            "traptor_field_surprises_total{format=\"twitter_v1\",field=\"id\"} 1".to_owned(),
            "traptor_duplicates_dropped_total{source=\"replay\"} 0".to_owned(),
            "traptor_source_connected{source=\"replay\"} 0".to_owned(),
            "traptor_source_reconnects_total{source=\"replay\",reason=\"network\"} 0".to_owned(),
            "traptor_sink_records_total{sink=\"file\"} 0".to_owned(),
            "traptor_spool_records 0".to_owned(),
            "traptor_spool_bytes 0".to_owned(),
            "traptor_buffer_records 0".to_owned(),
            "traptor_buffer_bytes 0".to_owned(),
            "traptor_buffer_behind_seconds 0".to_owned(),
            "traptor_buffer_moved_records_total{direction=\"to_disk\"} 0".to_owned(),
            "traptor_buffer_moved_records_total{direction=\"from_disk\"} 0".to_owned(),
            "traptor_buffer_dropped_records_total{policy=\"drop_oldest\"} 0".to_owned(),
            "traptor_buffer_dropped_records_total{policy=\"drop_newest\"} 0".to_owned(),
            "traptor_kafka_delivery_duration_seconds_count 0".to_owned(),
            "traptor_rules_reloads_total 0".to_owned(),
            "traptor_rules_reload_duration_seconds_count 0".to_owned(),
            "traptor_end_to_end_latency_seconds_count 0".to_owned(),
        ];
        for kind in crate::post::ControlKind::ALL {
            samples.push(format!("traptor_records_total{{kind=\"{}\"}} 0", kind.as_str()));
        }
        for s in &samples {
            assert!(text.lines().any(|l| l == s), "no {s} in\n{text}");
        }
        // No field surprise yet: no family (as before).
        assert!(!scrape(Arc::new(Metrics::default())).contains("traptor_field_surprises"));
    }
}
