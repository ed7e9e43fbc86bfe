//! `/metrics`: every counter the collector keeps, read at scrape time from
//! the same atomics the throughput line and the exit summary read (one
//! telemetry path, nothing counted twice, nothing on the hot path).
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
use crate::post::ControlKind;

/// The registry `/metrics` encodes: one collector over the admin state.
pub fn registry(state: std::sync::Arc<AdminState>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(TraptorCollector(state)));
    r
}

#[derive(Debug)]
struct TraptorCollector(std::sync::Arc<AdminState>);

type Labels<'a> = Vec<(&'a str, &'a str)>;

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

/// One unlabelled histogram.
fn histogram(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &crate::telemetry::Histogram,
) -> Result<(), std::fmt::Error> {
    let (buckets, sum) = h.buckets_seconds();
    let count = buckets.iter().map(|(_, n)| n).sum();
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

fn value(kind: MetricType, v: u64, enc: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(enc),
        _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(enc),
    }
}

impl Collector for TraptorCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        let m = s.metrics.snapshot();
        let counter = MetricType::Counter;
        let gauge = MetricType::Gauge;
        let mut info =
            e.encode_descriptor("traptor_build", "Version and identity of this collector", None, MetricType::Info)?;
        let id = s.collector.id.to_string();
        let t = s.collector.rule_type.as_str();
        info.encode_info(&vec![("version", env!("CARGO_PKG_VERSION")), ("type", t), ("id", id.as_str())])?;
        family(
            &mut e,
            "traptor_posts",
            "Posts that went through matching, by result (their sum is every post)",
            counter,
            &[(vec![("result", "matched")], m.posts_matched), (vec![("result", "unmatched")], m.posts_unmatched)],
        )?;
        let kinds: Vec<(Labels<'_>, u64)> = ControlKind::ALL
            .iter()
            .map(|k| (vec![("kind", k.as_str())], m.control.get(k.as_str()).copied().unwrap_or(0)))
            .collect();
        family(&mut e, "traptor_records", "Control messages (not posts) read, by kind", counter, &kinds)?;
        family(&mut e, "traptor_malformed", "Records that could not be decoded", counter, &[(vec![], m.malformed)])?;
        let surprises: Vec<(Labels<'_>, u64)> = m
            .field_surprises
            .iter()
            .flat_map(|(format, fields)| {
                fields.iter().map(move |(field, n)| (vec![("format", *format), ("field", *field)], *n))
            })
            .collect();
        if !surprises.is_empty() {
            family(
                &mut e,
                "traptor_field_surprises",
                "Post fields read in an unexpected JSON type (converted, or treated as absent); the posts went on",
                counter,
                &surprises,
            )?;
        }
        family(
            &mut e,
            "traptor_duplicates_dropped",
            "Redeliveries a live source dropped",
            counter,
            &[(vec![("source", s.source.as_str())], m.duplicates_dropped)],
        )?;
        let c = &s.connection;
        family(
            &mut e,
            "traptor_source_connected",
            "1 while the live source's connection is up",
            gauge,
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
        family(&mut e, "traptor_source_reconnects", "Connections that ended, by reason", counter, &reconnects)?;
        family(
            &mut e,
            "traptor_sink_records",
            "Records the sink wrote (or the broker confirmed)",
            counter,
            &[(vec![("sink", s.sink.as_str())], m.records_out)],
        )?;
        family(
            &mut e,
            "traptor_spool_records",
            "Records waiting in the Kafka spool",
            gauge,
            &[(vec![], m.spool_backlog)],
        )?;
        let spool_bytes = s.metrics.spool_bytes.load(Relaxed);
        family(&mut e, "traptor_spool_bytes", "Bytes held by the Kafka spool", gauge, &[(vec![], spool_bytes)])?;
        family(
            &mut e,
            "traptor_buffer_records",
            "Records waiting in the buffer's disk queue",
            gauge,
            &[(vec![], m.buffer_records)],
        )?;
        family(
            &mut e,
            "traptor_buffer_bytes",
            "Bytes waiting in the buffer's disk queue",
            gauge,
            &[(vec![], m.buffer_bytes)],
        )?;
        family(
            &mut e,
            "traptor_buffer_behind_seconds",
            "Age of the oldest record in the buffer's disk queue (how far behind real time)",
            gauge,
            &[(vec![], m.buffer_behind_ms / 1000)],
        )?;
        family(
            &mut e,
            "traptor_buffer_moved_records",
            "Records the buffer put on disk and took back",
            counter,
            &[
                (vec![("direction", "to_disk")], m.buffer_to_disk),
                (vec![("direction", "from_disk")], m.buffer_from_disk),
            ],
        )?;
        family(
            &mut e,
            "traptor_buffer_dropped_records",
            "Records a full buffer dropped, by overflow policy",
            counter,
            &[
                (vec![("policy", "drop_oldest")], m.buffer_dropped_oldest),
                (vec![("policy", "drop_newest")], m.buffer_dropped_newest),
            ],
        )?;
        histogram(
            &mut e,
            "traptor_kafka_delivery_duration_seconds",
            "From handing a record to the Kafka producer to the broker's confirmation",
            &s.metrics.kafka_delivery,
        )?;
        self.encode_rules(&mut e, &m)?;
        self.encode_stages(&mut e)
    }
}

impl TraptorCollector {
    fn encode_rules(
        &self,
        e: &mut DescriptorEncoder<'_>,
        m: &crate::telemetry::Snapshot,
    ) -> Result<(), std::fmt::Error> {
        let compiled = self.0.compiled.load();
        let mut by_type = std::collections::BTreeMap::new();
        for r in compiled.matcher.rules() {
            *by_type.entry(r.rule_type().as_str()).or_insert(0u64) += 1;
        }
        let rules: Vec<(Labels<'_>, u64)> = by_type.iter().map(|(t, n)| (vec![("type", *t)], *n)).collect();
        family(e, "traptor_rules", "Rules in the running matcher, by type", MetricType::Gauge, &rules)?;
        family(
            e,
            "traptor_rules_reloads",
            "Times a new rule set was swapped in",
            MetricType::Counter,
            &[(vec![], m.rule_reloads)],
        )?;
        let s = &*self.0;
        histogram(
            e,
            "traptor_rules_reload_duration_seconds",
            "Time to compile a new rule set and swap it in",
            &s.metrics.rules_reload,
        )?;
        histogram(
            e,
            "traptor_end_to_end_latency_seconds",
            "From a record's read by the source to its write by the sink (or the broker's confirmation)",
            &s.metrics.end_to_end,
        )
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
    use super::*;

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
}
