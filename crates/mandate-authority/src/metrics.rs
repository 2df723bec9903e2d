//! Metrics through the `prometheus-client` crate (OpenMetrics text; label
//! values escaped by the encoder): decisions by outcome and reason family,
//! decision latency, lifecycle transitions, business events, HTTP requests by
//! method, route pattern and status with their latency, and the process's
//! CPU time, resident memory, open file descriptors and start time.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckedLabels {
    checked: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HowLabels {
    how: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

fn latency() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Histogram,
    transitions: Family<KindLabels, Counter>,
    events: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    cpu_seconds: Gauge<f64, AtomicU64>,
    resident_bytes: Gauge,
    open_fds: Gauge,
    proof_signatures: Family<CheckedLabels, Counter>,
    proof_batches: Counter,
    proof_rechecked: Counter,
    chains: Family<HowLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "mandate_decisions",
            "Decisions by outcome and reason (the code before any `:`)",
            decisions.clone(),
        );
        let decision_seconds = latency();
        registry.register(
            "mandate_decision_seconds",
            "Decision latency, audit write included",
            decision_seconds.clone(),
        );
        let transitions = Family::<KindLabels, Counter>::default();
        registry.register(
            "mandate_transitions",
            "Mandate lifecycle transitions",
            transitions.clone(),
        );
        let events = Counter::default();
        registry.register("mandate_events", "Business events received", events.clone());
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "mandate_http_requests",
            "HTTP requests by method, route pattern and status",
            http_requests.clone(),
        );
        let http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency);
        registry.register(
            "mandate_http_request_seconds",
            "HTTP request latency by method and route pattern",
            http_seconds.clone(),
        );
        let cpu_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of the process, in seconds",
            cpu_seconds.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            resident_bytes.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors of the process",
            open_fds.clone(),
        );
        let proof_signatures = Family::<CheckedLabels, Counter>::default();
        registry.register(
            "mandate_proof_signatures",
            "DPoP proof signatures checked, by how: at_once (by the request's worker, alone), \
             thread_alone (on the batcher's thread, nothing else queued), batch",
            proof_signatures.clone(),
        );
        let proof_batches = Counter::default();
        registry.register(
            "mandate_proof_signature_batches",
            "Batch checks of two proof signatures or more",
            proof_batches.clone(),
        );
        let proof_rechecked = Counter::default();
        registry.register(
            "mandate_proof_signatures_rechecked",
            "Proof signatures checked again one by one because their batch failed",
            proof_rechecked.clone(),
        );
        let chains = Family::<HowLabels, Counter>::default();
        registry.register(
            "mandate_chains_verified",
            "Presented chains, by how they were verified: cached (found verified, no signature), \
             below_cached (only the mandates after a verified leading part), whole (from the root)",
            chains.clone(),
        );
        let start: Gauge = Gauge::default();
        start.set(crate::auth::now_secs());
        registry.register(
            "process_start_time_seconds",
            "When the process started, seconds since the epoch",
            start,
        );
        Self {
            registry,
            decisions,
            decision_seconds,
            transitions,
            events,
            http_requests,
            http_seconds,
            cpu_seconds,
            resident_bytes,
            open_fds,
            proof_signatures,
            proof_batches,
            proof_rechecked,
            chains,
        }
    }
}

impl Metrics {
    /// Counts a decision with its reasons and latency.
    pub fn decision(&self, allow: bool, reasons: &[String], seconds: f64) {
        let outcome = if allow { "allow" } else { "deny" };
        if reasons.is_empty() {
            self.decisions
                .get_or_create(&DecisionLabels {
                    outcome,
                    reason: String::new(),
                })
                .inc();
        }
        for r in reasons {
            // The family only (`condition_failed`, not its condition id):
            // label values stay few.
            let family = r.split(':').next().unwrap_or(r).to_owned();
            self.decisions
                .get_or_create(&DecisionLabels {
                    outcome,
                    reason: family,
                })
                .inc();
        }
        self.decision_seconds.observe(seconds);
    }

    /// Counts a lifecycle transition.
    pub fn transition(&self, kind: &str) {
        self.transitions
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts a business event.
    pub fn event(&self) {
        self.events.inc();
    }

    /// Counts an answered HTTP request: `route` is the matched pattern
    /// (`/v1/mandates/{id}`), never the raw path.
    pub fn http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    fn sample_process(&self) {
        // Linux: /proc/self (clock ticks of 1/100 s, pages of 4 KiB, the
        // x86-64 and aarch64 defaults). Elsewhere the gauges stay at zero.
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
        {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            // utime and stime are fields 14 and 15 of stat(5); after the
            // `)` the first field is 3, so they are at 11 and 12.
            #[expect(clippy::cast_precision_loss, reason = "a metric")]
            self.cpu_seconds.set((ticks(11) + ticks(12)) as f64 / 100.0);
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
        {
            self.resident_bytes.set(pages.saturating_mul(4096));
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(dir.count()).unwrap_or(i64::MAX));
        }
    }

    /// Takes the signature batcher's counts (monotonic, so the counters stay
    /// counters), at each scrape.
    pub fn proof_signatures(&self, c: mandate_core::batch::Counts) {
        use std::sync::atomic::Ordering::Relaxed;
        for (checked, n) in [
            ("at_once", c.at_once),
            ("thread_alone", c.thread_alone),
            ("batch", c.in_batches),
        ] {
            self.proof_signatures
                .get_or_create(&CheckedLabels { checked })
                .inner()
                .store(n, Relaxed);
        }
        self.proof_batches.inner().store(c.batches, Relaxed);
        self.proof_rechecked.inner().store(c.rechecked, Relaxed);
    }

    /// Takes the chain verifier's counts (monotonic), at each scrape.
    pub fn chains_verified(&self, c: mandate_core::chain::VerifyCounts) {
        use std::sync::atomic::Ordering::Relaxed;
        for (how, n) in [
            ("cached", c.cached),
            ("below_cached", c.below_cached),
            ("whole", c.whole),
        ] {
            self.chains
                .get_or_create(&HowLabels { how })
                .inner()
                .store(n, Relaxed);
        }
    }

    /// The OpenMetrics text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        self.sample_process();
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_reason_families_counted() {
        let m = Metrics::default();
        m.decision(
            false,
            &["condition_failed:a\"b\\c".into(), "expired".into()],
            0.001,
        );
        m.decision(true, &[], 0.0002);
        m.http("GET", "/v1/mandates/{id}", 200, 0.003);
        m.transition("revoked");
        let text = m.render();
        assert!(
            text.contains(r#"mandate_decisions_total{outcome="deny",reason="condition_failed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mandate_decisions_total{outcome="allow",reason=""} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"mandate_http_requests_total{method="GET",route="/v1/mandates/{id}",status="200"} 1"#), "{text}");
        assert!(text.contains("process_start_time_seconds"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
        m.proof_signatures(mandate_core::batch::Counts {
            at_once: 3,
            thread_alone: 1,
            in_batches: 40,
            batches: 9,
            rechecked: 4,
        });
        let text = m.render();
        for line in [
            r#"mandate_proof_signatures_total{checked="at_once"} 3"#,
            r#"mandate_proof_signatures_total{checked="batch"} 40"#,
            "mandate_proof_signature_batches_total 9",
            "mandate_proof_signatures_rechecked_total 4",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.chains_verified(mandate_core::chain::VerifyCounts {
            cached: 7,
            below_cached: 2,
            whole: 1,
        });
        let text = m.render();
        for line in [
            r#"mandate_chains_verified_total{how="cached"} 7"#,
            r#"mandate_chains_verified_total{how="below_cached"} 2"#,
            r#"mandate_chains_verified_total{how="whole"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // A value with quotes and backslashes (say, an event kind) stays one label.
        m.transition("we\"ird\\kind\nline");
        let text = m.render();
        assert!(text.contains(r#"kind="we\"ird\\kind\nline""#), "{text}");
    }
}
