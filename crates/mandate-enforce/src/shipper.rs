//! Decision records, shipped to the authority's audit log in batches.
//!
//! Every decision the enforcement point makes becomes a record with an id
//! unique to this enforcement point's run; the authority stores each id once,
//! so a batch sent twice (after a timeout, say) is not recorded twice. When
//! the authority cannot be reached the pending records are written to a spool
//! file (atomically: temporary file, fsync, rename) and sent, oldest first,
//! once it answers again; the spool is also written on shutdown. What is lost
//! on a crash is at most the last batch interval (200 ms) of records not yet
//! spooled.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::AuthorityClient;

/// How often pending records are sent.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// Most records in one batch.
pub const BATCH: usize = 1000;

enum Msg {
    Record(Value),
    Flush(mpsc::Sender<()>),
}

/// The shipper's handle.
#[derive(Debug)]
pub struct Shipper {
    tx: mpsc::Sender<Msg>,
    prefix: String,
    counter: AtomicU64,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

fn read_spool(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn write_spool(path: &Path, pending: &[Value]) {
    if pending.is_empty() {
        let _ = std::fs::remove_file(path);
        return;
    }
    let tmp = path.with_extension("tmp");
    let text: String = pending.iter().map(|v| format!("{v}\n")).collect();
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

impl Shipper {
    /// Starts the shipping thread; records left in `spool` by an earlier run
    /// are sent first.
    #[must_use]
    pub fn start(client: AuthorityClient, spool: PathBuf, prefix: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Msg>();
        let _ = std::thread::Builder::new().name("mandate-shipper".into()).spawn(move || {
            let mut pending = read_spool(&spool);
            let mut spooled = !pending.is_empty();
            loop {
                let mut flush: Option<mpsc::Sender<()>> = None;
                let mut closed = false;
                match rx.recv_timeout(INTERVAL) {
                    Ok(Msg::Record(v)) => pending.push(v),
                    Ok(Msg::Flush(done)) => flush = Some(done),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => closed = true,
                }
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Record(v) => pending.push(v),
                        Msg::Flush(done) => flush = Some(done),
                    }
                }
                while !pending.is_empty() {
                    let n = pending.len().min(BATCH);
                    match client.ship(pending.get(..n).unwrap_or_default()) {
                        Ok(()) => {
                            pending.drain(..n);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, pending = pending.len(), "authority unreachable; decisions spooled");
                            break;
                        }
                    }
                }
                if !pending.is_empty() || spooled {
                    write_spool(&spool, &pending);
                    spooled = !pending.is_empty();
                }
                if let Some(done) = flush {
                    let _ = done.send(());
                }
                if closed {
                    return;
                }
            }
        });
        Self {
            tx,
            prefix: prefix.to_owned(),
            counter: AtomicU64::new(0),
        }
    }

    /// Queues a decision record.
    pub fn record(&self, record: Value) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Record(
            json!({"id": format!("{}-{n}", self.prefix), "record": record}),
        ));
    }

    /// Sends (or spools) everything queued so far, waiting up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}
