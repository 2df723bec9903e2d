//! Decision records, shipped to the authority's audit log in batches.
//!
//! Every decision the enforcement point makes becomes a [`DecisionRecord`],
//! numbered in order within a series (`source`: the stream this run of the
//! enforcement point opened). The authority keeps, per series, the number
//! of the next record it expects, so a batch sent twice (after a timeout,
//! say) is not recorded twice, and records that never arrive show as
//! `missing` in the log. Every record goes through an append-only spool
//! file (see [`Spool`]): appended once per batch interval, shipped from
//! there, oldest first, and the file emptied once all of it was taken.
//! During an outage nothing is rewritten and memory stays bounded; a stop
//! (SIGTERM) makes the spool durable before the process ends, and the next
//! run ships it. What a crash can lose is at most the last batch interval
//! (50 ms) of records not yet appended.
//!
//! While the sender keeps up, it does not read its records back: the
//! collector hands it the records it appended, already serialized, along
//! with the bytes they take in the file (see [`Spool::recent`]). The file
//! is still written first, and read back whenever memory does not hold
//! exactly its unshipped part (records an earlier run left, or more than a
//! chunk waiting during an outage).

use std::collections::VecDeque;
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
/// record as JSON (serialized once, when it is queued; shared, not copied,
/// on its way to the authority).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    source: Arc<str>,
    n: u64,
    record: Arc<str>,
}

/// A spool line.
#[derive(Deserialize)]
struct SpoolLine<'a> {
    /// Borrowed unless it holds an escape.
    #[serde(borrow)]
    source: std::borrow::Cow<'a, str>,
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
    spool: Arc<std::sync::Mutex<Spool>>,
    wake: Arc<Wake>,
}

/// The start of a spool line of the series `source`, up to its number:
/// written once per series, not once per record.
fn line_prefix(source: &str) -> String {
    format!("{{\"source\":{},\"n\":", serde_json::Value::from(source))
}

/// Appends the spool line of record number `n` (its series' `prefix` from
/// [`line_prefix`]) to `text`; returns the line's length in bytes.
fn push_line(text: &mut String, prefix: &str, n: u64, record: &str) -> u64 {
    let start = text.len();
    text.push_str(prefix);
    text.push_str(itoa::Buffer::new().format(n));
    text.push_str(",\"record\":");
    text.push_str(record);
    text.push_str("}\n");
    (text.len() - start) as u64
}

#[cfg(test)]
fn spool_line(p: &Pending) -> String {
    let mut text = String::new();
    push_line(&mut text, &line_prefix(&p.source), p.n, &p.record);
    text
}

/// Parses spool lines (complete lines only); an unreadable one is logged
/// and skipped. Each record comes with the bytes it stands for in the file
/// (its line, and any unreadable lines just before it); the second value is
/// the bytes of unreadable lines at the end.
fn parse_spool(text: &str, path: &Path) -> (Vec<(Pending, u64)>, u64) {
    let mut out = Vec::new();
    let mut carry = 0u64;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        carry += l.len() as u64;
        match serde_json::from_str::<SpoolLine<'_>>(l.trim_end_matches('\n')) {
            Ok(line) => {
                out.push((
                    Pending {
                        source: Arc::from(line.source.as_ref()),
                        n: line.n,
                        record: Arc::from(line.record.get()),
                    },
                    carry,
                ));
                carry = 0;
            }
            Err(e) => {
                tracing::error!(path = %path.display(), line = i + 1, error = %e, "an unreadable line of the decision spool is skipped");
            }
        }
    }
    (out, carry)
}

#[cfg(test)]
fn read_spool(path: &Path) -> Vec<Pending> {
    parse_spool(&std::fs::read_to_string(path).unwrap_or_default(), path)
        .0
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// The spool: an append-only file of records not yet shipped. The collector
/// appends each interval's records (one write); the sender reads them back
/// from `shipped` on, a bounded chunk at a time, and moves `shipped` on as
/// the authority takes them; once everything is shipped the file is cut to
/// nothing. Nothing is ever rewritten, and memory holds one chunk, however
/// long the authority is away.
#[derive(Debug)]
struct Spool {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Bytes in the file.
    len: u64,
    /// Bytes from the start already shipped.
    shipped: u64,
    /// Whether bytes were appended since the last fsync.
    dirty: bool,
    /// The records of the file's unshipped part (`shipped..len`), in order,
    /// each with the bytes its line takes, when this run appended every one
    /// of them: the sender takes them from here instead of reading and
    /// parsing the file again. `None` while that is not so (records left by
    /// an earlier run, or more than [`CHUNK`] bytes waiting); once the file
    /// is emptied it holds them again.
    recent: Option<VecDeque<(Pending, u64)>>,
    /// Bytes of the lines in `recent`.
    recent_bytes: u64,
}

/// Most bytes of spool read back at once.
const CHUNK: usize = 8 << 20;

impl Spool {
    fn open(path: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path);
        let (file, len) = match file {
            Ok(f) => {
                let len = f.metadata().map_or(0, |m| m.len());
                (Some(f), len)
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the decision spool; decisions are kept in memory only");
                (None, 0)
            }
        };
        Self {
            path,
            file,
            len,
            shipped: 0,
            dirty: false,
            recent: (len == 0).then(VecDeque::new),
            recent_bytes: 0,
        }
    }

    /// Appends `text`, the lines of `records` (each with its line's bytes).
    fn append(&mut self, text: &str, records: Vec<(Pending, u64)>) -> bool {
        let Some(f) = self.file.as_mut() else {
            return false;
        };
        match std::io::Write::write_all(f, text.as_bytes()) {
            Ok(()) => {
                self.len += text.len() as u64;
                self.dirty = true;
                if let Some(recent) = self.recent.as_mut() {
                    self.recent_bytes += text.len() as u64;
                    let whole = records.iter().map(|(_, b)| b).sum::<u64>() == text.len() as u64;
                    if self.recent_bytes > CHUNK as u64 || !whole {
                        // Too many waiting (the authority is away), or
                        // lines that are not these records: from now on
                        // the file is read back, a chunk at a time.
                        self.recent = None;
                        self.recent_bytes = 0;
                    } else {
                        recent.extend(records);
                    }
                }
                true
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "could not append to the decision spool");
                false
            }
        }
    }

    fn sync(&mut self) {
        if let (true, Some(f)) = (self.dirty, self.file.as_ref()) {
            let _ = f.sync_data();
            self.dirty = false;
        }
    }

    /// The next unshipped records (at most about [`CHUNK`] bytes), each with
    /// the bytes it stands for, and the bytes of unreadable lines after them.
    fn next_chunk(&self) -> (Vec<(Pending, u64)>, u64) {
        if let Some(recent) = self.recent.as_ref() {
            // At most a chunk's bytes: `append` keeps it so.
            return (recent.iter().cloned().collect(), 0);
        }
        let Some(f) = self.file.as_ref() else {
            return (Vec::new(), 0);
        };
        let want = usize::try_from(self.len.saturating_sub(self.shipped))
            .unwrap_or(CHUNK)
            .min(CHUNK);
        let mut buf = vec![0u8; want];
        let read = read_at(f, &mut buf, self.shipped);
        buf.truncate(read);
        // Whole lines only.
        let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        buf.truncate(end);
        parse_spool(&String::from_utf8_lossy(&buf), &self.path)
    }

    /// `bytes` more were shipped; the file is emptied once all of it was.
    fn shipped(&mut self, bytes: u64) {
        self.shipped += bytes;
        if let Some(recent) = self.recent.as_mut() {
            // The sender ships whole records from the front.
            let mut left = bytes;
            while left > 0
                && let Some((_, b)) = recent.pop_front()
            {
                left = left.saturating_sub(b);
                self.recent_bytes = self.recent_bytes.saturating_sub(b);
            }
        }
        if self.shipped >= self.len
            && let Some(f) = self.file.as_ref()
            && f.set_len(0).is_ok()
        {
            self.len = 0;
            self.shipped = 0;
            // Nothing unshipped: memory holds all of it (nothing) again.
            self.recent = Some(VecDeque::new());
            self.recent_bytes = 0;
        }
    }
}

#[cfg(unix)]
fn read_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> usize {
    use std::os::unix::fs::FileExt as _;
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(
            buf.get_mut(done..).unwrap_or_default(),
            offset + done as u64,
        ) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done
}

#[cfg(not(unix))]
fn read_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> usize {
    use std::io::{Read as _, Seek as _};
    let Ok(mut f) = f.try_clone() else { return 0 };
    if f.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return 0;
    }
    f.read(buf).unwrap_or(0)
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

/// Ships what it can of `pending`, oldest first; stops at the first
/// failure. Returns how many records went. `budget` is the batch byte
/// budget, halved when the authority finds a batch too large.
fn ship_some(client: &AuthorityClient, pending: &[Pending], budget: &mut usize) -> usize {
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
    shipped
}

/// Bytes the first `n` records of a chunk stand for.
fn bytes_of(chunk: &[(Pending, u64)], n: usize) -> u64 {
    chunk.iter().take(n).map(|(_, b)| b).sum()
}

impl Shipper {
    /// Starts shipping for the series `source`; records left in `spool` by
    /// an earlier run are sent first.
    ///
    /// Two threads: the collector numbers each record, and every
    /// [`INTERVAL`] appends what arrived to the spool (one write; fsync at
    /// most once a second, and on [`flush`](Self::flush)); the sender ships
    /// from the spool. A hanging authority holds up only the sender, never
    /// the spooling, so stopping while it hangs keeps every decision.
    #[must_use]
    pub fn start(client: AuthorityClient, spool: PathBuf, source: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Msg>();
        let source: Arc<str> = Arc::from(source);
        let spool = Arc::new(std::sync::Mutex::new(Spool::open(spool)));
        let wake = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let (spool2, wake2) = (Arc::clone(&spool), Arc::clone(&wake));
        let _ = std::thread::Builder::new()
            .name("mandate-shipper".into())
            .spawn(move || send_loop(&client, &spool2, &wake2));
        let (spool3, wake3) = (Arc::clone(&spool), Arc::clone(&wake));
        let _ = std::thread::Builder::new()
            .name("mandate-spooler".into())
            .spawn(move || collect_loop(&rx, &source, &spool3, &wake3));
        Self { tx, spool, wake }
    }

    /// Queues a decision record.
    pub fn record(&self, record: DecisionRecord) {
        let _ = self.tx.send(Msg::Record(record));
    }

    /// Makes everything queued so far durable in the spool, then waits
    /// (up to `timeout` in all) for the sender to ship it. What is not
    /// shipped by then stays in the spool for the next run.
    pub fn flush(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_err() || wait.recv_timeout(timeout).is_err() {
            return;
        }
        let target = self.spool.lock().map_or(0, |sp| sp.len);
        notify(&self.wake);
        while std::time::Instant::now() < deadline {
            let drained = self
                .spool
                .lock()
                .map_or(true, |sp| sp.len == 0 || sp.shipped >= target);
            if drained {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

type Wake = (std::sync::Mutex<bool>, std::sync::Condvar);

fn notify(wake: &Wake) {
    if let Ok(mut w) = wake.0.lock() {
        *w = true;
        wake.1.notify_one();
    }
}

fn collect_loop(
    rx: &mpsc::Receiver<Msg>,
    source: &Arc<str>,
    spool: &std::sync::Mutex<Spool>,
    wake: &Wake,
) {
    let mut next = 0u64;
    let mut last_sync = std::time::Instant::now();
    let prefix = line_prefix(source);
    loop {
        let mut text = String::new();
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        let mut closed = false;
        let mut take = |m: Msg,
                        text: &mut String,
                        records: &mut Vec<(Pending, u64)>,
                        flushes: &mut Vec<mpsc::Sender<()>>| match m {
            Msg::Record(r) => {
                if let Ok(record) = serde_json::to_string(&r) {
                    let record = Arc::<str>::from(record);
                    let bytes = push_line(text, &prefix, next, &record);
                    records.push((
                        Pending {
                            source: Arc::clone(source),
                            n: next,
                            record,
                        },
                        bytes,
                    ));
                    next += 1;
                }
            }
            Msg::Flush(done) => flushes.push(done),
        };
        // Once per interval, whatever the rate: a decision does not wake
        // this thread (a wake-up per decision costs the enforcement point's
        // latency more than the record itself on a small machine).
        std::thread::sleep(INTERVAL);
        loop {
            match rx.try_recv() {
                Ok(m) => take(m, &mut text, &mut records, &mut flushes),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if let Ok(mut sp) = spool.lock() {
            if !text.is_empty() {
                sp.append(&text, records);
            }
            if !flushes.is_empty() || closed || last_sync.elapsed() >= Duration::from_secs(1) {
                sp.sync();
                last_sync = std::time::Instant::now();
            }
        }
        if !text.is_empty() {
            notify(wake);
        }
        for done in flushes {
            let _ = done.send(());
        }
        if closed {
            return;
        }
        if text.is_empty() {
            continue;
        }
        // Gather a batch interval's worth before spooling again.
        std::thread::sleep(INTERVAL);
    }
}

fn send_loop(client: &AuthorityClient, spool: &std::sync::Mutex<Spool>, wake: &Wake) {
    let mut budget = BATCH_BYTES;
    let mut backoff = INTERVAL;
    loop {
        let (chunk, unreadable) = spool.lock().map(|sp| sp.next_chunk()).unwrap_or_default();
        if chunk.is_empty() && unreadable > 0 {
            if let Ok(mut sp) = spool.lock() {
                sp.shipped(unreadable);
            }
            continue;
        }
        let pending: Vec<Pending> = chunk.iter().map(|(p, _)| p.clone()).collect();
        if pending.is_empty() {
            // Nothing to send: wait to be woken (or look again shortly).
            if let Ok(w) = wake.0.lock()
                && let Ok((mut w, _)) = wake
                    .1
                    .wait_timeout_while(w, Duration::from_secs(1), |w| !*w)
            {
                *w = false;
            }
            continue;
        }
        let sent = ship_some(client, &pending, &mut budget);
        if sent > 0
            && let Ok(mut sp) = spool.lock()
        {
            sp.shipped(bytes_of(&chunk, sent));
        }
        if sent < pending.len() {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        } else {
            backoff = INTERVAL;
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
            record: Arc::from(
                serde_json::to_string(&DecisionRecord {
                    at_ms: 1,
                    gateway: "g".into(),
                    method: "GET".into(),
                    path: "/".into(),
                    chain: vec![MandateId::new("mnd-1").unwrap()],
                    decision: Outcome::Allow,
                    reasons: Vec::new(),
                })
                .unwrap(),
            ),
        }
    }

    /// The spool lines of `records`, and each record with its line's bytes.
    fn lines(records: &[Pending]) -> (String, Vec<(Pending, u64)>) {
        let text: String = records.iter().map(spool_line).collect();
        let with = records
            .iter()
            .map(|r| (r.clone(), spool_line(r).len() as u64))
            .collect();
        (text, with)
    }

    #[test]
    fn the_records_held_in_memory_are_those_the_file_would_give() {
        let dir = std::env::temp_dir().join(format!("spool-mem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.spool");
        let _ = std::fs::remove_file(&path);
        let mut sp = Spool::open(path.clone());
        let (text, records) = lines(&[p("a\"b", 0), p("a\"b", 1), p("a\"b", 2)]);
        sp.append(&text, records);
        assert!(sp.recent.is_some(), "this run appended every record");
        let from_memory = sp.next_chunk();
        let from_file = parse_spool(&std::fs::read_to_string(&path).unwrap(), &path);
        assert_eq!(from_memory, from_file);
        sp.shipped(bytes_of(&from_memory.0, 1));
        let rest = sp.next_chunk().0;
        assert_eq!(
            rest,
            from_file.0[1..].to_vec(),
            "shipped records leave memory"
        );
        // Lines that are not the records given (never so in the collector)
        // send the sender back to the file, which still has them.
        sp.append("not json\n", Vec::new());
        assert!(sp.recent.is_none());
        let (chunk, unreadable) = sp.next_chunk();
        assert_eq!((chunk, unreadable), (rest, 9));
        let _ = std::fs::remove_dir_all(&dir);
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
    fn the_spool_keeps_series_numbers_and_records_and_only_appends() {
        let dir = std::env::temp_dir().join(format!("spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.spool");
        let _ = std::fs::remove_file(&path);
        let mut sp = Spool::open(path.clone());
        let first = vec![p("a", 7), p("b", 0)];
        let (text, records) = lines(&first);
        sp.append(&text, records);
        assert_eq!(read_spool(&path), first);
        // More records are appended after what is there, never rewritten.
        let before = std::fs::read(&path).unwrap();
        let (text, records) = lines(&[p("b", 1)]);
        sp.append(&text, records);
        let after = std::fs::read(&path).unwrap();
        assert!(after.starts_with(&before));
        let (chunk, trailing) = sp.next_chunk();
        assert_eq!(chunk.len(), 3);
        assert_eq!((bytes_of(&chunk, 3), trailing), (after.len() as u64, 0));
        // Shipping part of it moves the read position, not the file.
        sp.shipped(bytes_of(&chunk, 2));
        assert_eq!(sp.next_chunk().0, vec![(p("b", 1), chunk[2].1)]);
        assert_eq!(std::fs::read(&path).unwrap(), after);
        // Once all of it is shipped the file is emptied.
        sp.shipped(bytes_of(&chunk[2..], 1));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // A reopened spool (a restart) reads what an earlier run left, past
        // a line it cannot read.
        sp.append("not json\n", Vec::new());
        let (text, records) = lines(&[p("c", 0)]);
        sp.append(&text, records);
        drop(sp);
        let (chunk, _) = Spool::open(path.clone()).next_chunk();
        assert_eq!(chunk.len(), 1);
        assert_eq!(chunk[0].0, p("c", 0));
        assert_eq!(chunk[0].1, std::fs::metadata(&path).unwrap().len());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stopping_while_the_authority_hangs_keeps_every_decision_in_the_spool() {
        // An "authority" that accepts connections and never answers.
        let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = hang.local_addr().unwrap();
        let held = std::thread::spawn(move || {
            let conns: Vec<_> = hang.incoming().take(4).collect();
            std::thread::sleep(Duration::from_secs(3));
            drop(conns);
        });
        let dir = std::env::temp_dir().join(format!("spool-hang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.spool");
        let _ = std::fs::remove_file(&path);
        let client = AuthorityClient::new(&format!("http://{addr}"), "token");
        let shipper = Shipper::start(client, path.clone(), "run-1");
        for i in 0..2_000u64 {
            shipper.record(DecisionRecord {
                at_ms: i,
                gateway: "g".into(),
                method: "GET".into(),
                path: "/".into(),
                chain: vec![MandateId::new("mnd-1").unwrap()],
                decision: Outcome::Allow,
                reasons: Vec::new(),
            });
            if i == 1_000 {
                // The first batch is on its way to the hanging authority.
                std::thread::sleep(Duration::from_millis(150));
            }
        }
        shipper.flush(Duration::from_millis(300));
        let kept = read_spool(&path);
        assert_eq!(kept.len(), 2_000, "decisions lost while the authority hung");
        assert!(
            kept.iter()
                .zip(0..)
                .all(|(p, n)| p.n == n && &*p.source == "run-1")
        );
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
