//! Decision records, shipped to the authority's audit log in batches.
//!
//! Every decision the enforcement point makes becomes a [`DecisionRecord`],
//! numbered in order within a series (`source`: the stream this run of the
//! enforcement point opened). The authority keeps, per series, the number
//! of the next record it expects, so a batch sent twice (after a timeout,
//! say) is not recorded twice, and records that never arrive show as
//! `missing` in the log. When the authority cannot be reached the pending
//! records are written to a spool file (atomically: temporary file, fsync,
//! rename) and sent, oldest first, once it answers again; the spool is also
//! written on shutdown. What is lost on a crash is at most the last batch
//! interval (50 ms) of records not yet spooled (the end of that run's
//! series, so the authority cannot count them as missing).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use mandate_core::id::MandateId;
use serde::{Deserialize, Serialize};

use crate::client::AuthorityClient;

/// How often pending records are sent.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// Most records in one batch (the authority takes up to 10,000).
pub const BATCH: usize = 10_000;
/// Most bytes of records in one batch, to start with (the authority's
/// default `shipment_limit` is 8 MiB); halved whenever the authority
/// answers 413, down to [`MIN_BATCH_BYTES`].
pub const BATCH_BYTES: usize = 4 << 20;
/// The smallest byte budget of a batch (one record is always sent).
pub const MIN_BATCH_BYTES: usize = 4 * 1024;

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// One decision, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// When it was made (ms since the epoch, the enforcement point's clock).
    pub at_ms: u64,
    /// The enforcement point (the gateway's listen address).
    pub gateway: String,
    /// The request's method.
    pub method: String,
    /// The request's path.
    pub path: String,
    /// The mandate chain presented, root first (empty when none verified).
    pub chain: Vec<MandateId>,
    /// The outcome.
    pub decision: Outcome,
    /// The reason codes of a deny.
    pub reasons: Vec<String>,
}

/// A record waiting to be shipped: its series, its number there, and the
/// record as JSON (serialized once, when it is queued).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    source: Arc<str>,
    n: u64,
    record: String,
}

/// A spool line.
#[derive(Deserialize)]
struct SpoolLine<'a> {
    source: &'a str,
    n: u64,
    #[serde(borrow)]
    record: &'a serde_json::value::RawValue,
}

enum Msg {
    Record(DecisionRecord),
    Flush(mpsc::Sender<()>),
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

/// The shipper's handle.
#[derive(Debug)]
pub struct Shipper {
    tx: mpsc::Sender<Msg>,
}

fn read_spool(path: &Path) -> Vec<Pending> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        match serde_json::from_str::<SpoolLine<'_>>(l) {
            Ok(l) => out.push(Pending {
                source: Arc::from(l.source),
                n: l.n,
                record: l.record.get().to_owned(),
            }),
            Err(e) => {
                tracing::error!(path = %path.display(), line = i + 1, error = %e, "an unreadable line of the decision spool is skipped");
            }
        }
    }
    out
}

fn write_spool(path: &Path, pending: &[Pending]) {
    if pending.is_empty() {
        let _ = std::fs::remove_file(path);
        return;
    }
    let tmp = path.with_extension("tmp");
    // The records are JSON already: each line is written as a `SpoolLine`.
    let mut text = String::new();
    for p in pending {
        text.push_str(&format!(
            "{{\"source\":{},\"n\":{},\"record\":{}}}\n",
            serde_json::Value::from(&*p.source),
            p.n,
            p.record
        ));
    }
    let ok = std::fs::File::create(&tmp).and_then(|mut f| {
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()
    });
    if ok.is_ok() {
        let _ = std::fs::rename(&tmp, path);
    } else {
        tracing::error!(path = %path.display(), "could not write the decision spool");
    }
}

/// How many records from the front of `pending` go in one batch: the same
/// series, consecutive numbers, at most [`BATCH`] and `budget` bytes (but
/// at least one).
fn batch_len(pending: &[Pending], budget: usize) -> usize {
    let Some(head) = pending.first() else {
        return 0;
    };
    let mut bytes = 0;
    pending
        .iter()
        .take(BATCH)
        .zip(head.n..)
        .take_while(|(p, n)| {
            bytes += p.record.len() + 1;
            p.source == head.source && p.n == *n && (bytes <= budget || *n == head.n)
        })
        .count()
}

/// The body of `POST /v1/audit/decisions` for a batch.
fn shipment(batch: &[Pending]) -> String {
    let (source, first) = batch.first().map_or(("", 0), |p| (&*p.source, p.n));
    let mut body = format!(
        r#"{{"source":{},"first":{first},"records":["#,
        serde_json::Value::from(source)
    );
    for (i, p) in batch.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&p.record);
    }
    body.push_str("]}");
    body
}

/// Ships what it can, oldest first; stops at the first failure. `budget` is
/// the batch byte budget, halved when the authority finds a batch too large.
fn ship_pending(client: &AuthorityClient, pending: &mut Vec<Pending>, budget: &mut usize) {
    let mut shipped = 0;
    while shipped < pending.len() {
        let rest = pending.get(shipped..).unwrap_or_default();
        let n = batch_len(rest, *budget);
        let Some(batch) = rest.get(..n) else {
            break;
        };
        match client.ship(shipment(batch)) {
            Ok(true) => shipped += n,
            Ok(false) if *budget > MIN_BATCH_BYTES => *budget = (*budget / 2).max(MIN_BATCH_BYTES),
            Ok(false) => {
                tracing::error!(
                    pending = pending.len() - shipped,
                    "the authority refuses even the smallest batch as too large; decisions spooled"
                );
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = pending.len() - shipped, "authority unreachable; decisions spooled");
                break;
            }
        }
    }
    pending.drain(..shipped);
}

impl Shipper {
    /// Starts the shipping thread for the series `source`; records left in
    /// `spool` by an earlier run are sent first.
    #[must_use]
    pub fn start(client: AuthorityClient, spool: PathBuf, source: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Msg>();
        let source: Arc<str> = Arc::from(source);
        let _ = std::thread::Builder::new()
            .name("mandate-shipper".into())
            .spawn(move || {
                let mut pending = read_spool(&spool);
                let mut spooled = !pending.is_empty();
                let mut next = 0u64;
                let mut budget = BATCH_BYTES;
                let mut take = |pending: &mut Vec<Pending>, record: DecisionRecord| {
                    let Ok(record) = serde_json::to_string(&record) else {
                        return;
                    };
                    pending.push(Pending {
                        source: Arc::clone(&source),
                        n: next,
                        record,
                    });
                    next += 1;
                };
                loop {
                    let mut flush: Option<mpsc::Sender<()>> = None;
                    let mut closed = false;
                    match rx.recv_timeout(INTERVAL) {
                        Ok(Msg::Record(r)) => take(&mut pending, r),
                        Ok(Msg::Flush(done)) => flush = Some(done),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => closed = true,
                    }
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Msg::Record(r) => take(&mut pending, r),
                            Msg::Flush(done) => flush = Some(done),
                        }
                    }
                    ship_pending(&client, &mut pending, &mut budget);
                    if !pending.is_empty() || spooled {
                        write_spool(&spool, &pending);
                        spooled = !pending.is_empty();
                    }
                    let flushed = flush.is_some();
                    if let Some(done) = flush {
                        let _ = done.send(());
                    }
                    if closed {
                        return;
                    }
                    // Gather a batch interval's worth before sending again.
                    if !flushed {
                        std::thread::sleep(INTERVAL);
                    }
                }
            });
        Self { tx }
    }

    /// Queues a decision record.
    pub fn record(&self, record: DecisionRecord) {
        let _ = self.tx.send(Msg::Record(record));
    }

    /// Sends (or spools) everything queued so far, waiting up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn p(source: &str, n: u64) -> Pending {
        Pending {
            source: Arc::from(source),
            n,
            record: serde_json::to_string(&DecisionRecord {
                at_ms: 1,
                gateway: "g".into(),
                method: "GET".into(),
                path: "/".into(),
                chain: vec![MandateId::new("mnd-1").unwrap()],
                decision: Outcome::Allow,
                reasons: Vec::new(),
            })
            .unwrap(),
        }
    }

    #[test]
    fn a_batch_is_one_series_of_consecutive_records() {
        let old_run = [p("a", 7), p("a", 8), p("b", 0), p("b", 1), p("b", 3)];
        assert_eq!(batch_len(&old_run, BATCH_BYTES), 2);
        assert_eq!(
            batch_len(&old_run[2..], BATCH_BYTES),
            2,
            "a hole in the numbers ends a batch"
        );
        assert_eq!(batch_len(&old_run[4..], BATCH_BYTES), 1);
        assert_eq!(batch_len(&[], BATCH_BYTES), 0);
        let many: Vec<Pending> = (0..(BATCH as u64 + 5)).map(|n| p("c", n)).collect();
        assert_eq!(batch_len(&many, usize::MAX), BATCH);
        let size = many[0].record.len() + 1;
        assert_eq!(
            batch_len(&many, 3 * size),
            3,
            "the byte budget ends a batch"
        );
        assert_eq!(batch_len(&many, 1), 1, "one record always goes");
    }

    #[test]
    fn a_shipment_is_the_series_the_first_number_and_the_records() {
        let body: serde_json::Value =
            serde_json::from_str(&shipment(&[p("a\"b", 7), p("a\"b", 8)])).unwrap();
        assert_eq!(body["source"], "a\"b");
        assert_eq!(body["first"], 7);
        assert_eq!(body["records"].as_array().unwrap().len(), 2);
        assert_eq!(body["records"][1]["chain"], serde_json::json!(["mnd-1"]));
    }

    #[test]
    fn the_spool_keeps_series_numbers_and_records() {
        let dir = std::env::temp_dir().join(format!("spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.spool");
        let pending = vec![p("a", 7), p("b", 0)];
        write_spool(&path, &pending);
        assert_eq!(read_spool(&path), pending);
        write_spool(&path, &[]);
        assert!(!path.exists(), "an empty spool is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
