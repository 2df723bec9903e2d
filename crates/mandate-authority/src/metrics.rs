//! Counters and a latency histogram, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the decision latency buckets, in seconds.
const BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// The service's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    decisions: Mutex<BTreeMap<(bool, String), u64>>,
    transitions: Mutex<BTreeMap<String, u64>>,
    events: AtomicU64,
    latency: Mutex<[u64; 11]>,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Counts a decision with its reasons and latency.
    pub fn decision(&self, allow: bool, reasons: &[String], seconds: f64) {
        if let Ok(mut d) = self.decisions.lock() {
            if reasons.is_empty() {
                *d.entry((allow, String::new())).or_default() += 1;
            }
            for r in reasons {
                let family = r.split(':').next().unwrap_or(r).to_owned();
                *d.entry((allow, family)).or_default() += 1;
            }
        }
        if let Ok(mut h) = self.latency.lock() {
            let i = BUCKETS
                .iter()
                .position(|b| seconds <= *b)
                .unwrap_or(BUCKETS.len());
            if let Some(slot) = h.get_mut(i) {
                *slot += 1;
            }
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "microseconds of one request"
        )]
        self.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Counts a lifecycle transition.
    pub fn transition(&self, kind: &str) {
        if let Ok(mut t) = self.transitions.lock() {
            *t.entry(kind.to_owned()).or_default() += 1;
        }
    }

    /// Counts a business event.
    pub fn event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP mandate_decisions_total Decisions by outcome and reason.\n# TYPE mandate_decisions_total counter"
        );
        if let Ok(d) = self.decisions.lock() {
            for ((allow, reason), n) in d.iter() {
                let outcome = if *allow { "allow" } else { "deny" };
                let _ = writeln!(
                    s,
                    "mandate_decisions_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP mandate_decision_seconds Decision latency.\n# TYPE mandate_decision_seconds histogram"
        );
        if let Ok(h) = self.latency.lock() {
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += h.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    s,
                    "mandate_decision_seconds_bucket{{le=\"{b}\"}} {cumulative}"
                );
            }
            cumulative += h.get(BUCKETS.len()).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "mandate_decision_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
            );
            #[expect(clippy::cast_precision_loss, reason = "a metric")]
            let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                s,
                "mandate_decision_seconds_sum {sum}\nmandate_decision_seconds_count {cumulative}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP mandate_transitions_total Mandate lifecycle transitions.\n# TYPE mandate_transitions_total counter"
        );
        if let Ok(t) = self.transitions.lock() {
            for (k, n) in t.iter() {
                let _ = writeln!(s, "mandate_transitions_total{{kind=\"{k}\"}} {n}");
            }
        }
        let _ = writeln!(
            s,
            "# HELP mandate_events_total Business events received.\n# TYPE mandate_events_total counter"
        );
        let _ = writeln!(
            s,
            "mandate_events_total {}",
            self.events.load(Ordering::Relaxed)
        );
        s
    }
}
