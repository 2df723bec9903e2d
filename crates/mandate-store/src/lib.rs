//! # mandate-store
//!
//! The authority's durable state: an embedded SQLite database (WAL,
//! `synchronous = FULL`) behind **one writer thread** that group-commits.
//! Every write is a job; the writer takes every job that is waiting, runs each
//! in its own savepoint inside one transaction, commits once (one fsync for
//! the batch), writes the signed audit checkpoint, and only then answers each
//! job. So a state change or a decision's audit record is durable before it
//! is acknowledged, and throughput stays high under load.
//!
//! Reads use a small pool of their own connections (WAL readers do not block
//! the writer, nor each other).
//!
//! The same store runs on PostgreSQL ([`Store::open_postgres`]): the writer
//! takes a transaction-scoped advisory lock for each batch and reads the
//! audit log's head inside it, so several authority replicas append to one
//! hash chain without forking it. Statements are written once ([`sql`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use crate::sql::{Connection, Dialect};
use mandate_core::keys::SigningKey;

pub mod audit;
pub mod schema;
pub mod sql;

pub use audit::{AuditHead, AuditRecord, VerifyReport};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (or could not be reached).
    #[error("database: {0}")]
    Database(#[from] sql::Error),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The writer thread is gone (the store is shutting down).
    #[error("the store is closed")]
    Closed,
    /// A job refused to commit for a reason of the domain (a conflict, an
    /// unknown id, ...); its changes were rolled back.
    #[error("{0}")]
    Refused(Refusal),
    /// A value could not be encoded for storage.
    #[error("encoding: {0}")]
    Encoding(String),
    /// The batch's transaction did not commit; nothing in it is stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The database's schema cannot be used by this release.
    #[error("schema: {0}")]
    Schema(String),
    /// Stored data could not be read back as what it should be.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

/// Why the authority refused an operation: the kind decides the answer
/// (409, 404, 403, 422), the code is stable for clients, the detail names
/// the field or the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The operation conflicts with the current state (a terminal mandate,
    /// a request decided meanwhile, an event id reused).
    #[error("{detail}")]
    Conflict {
        /// Stable code.
        code: String,
        /// What conflicts.
        detail: String,
    },
    /// The object does not exist (or belongs to another tenant).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The caller may not do this.
    #[error("{detail}")]
    Forbidden {
        /// Why.
        detail: String,
    },
    /// A parameter is malformed (a bad cursor, a limit out of range).
    #[error("{detail}")]
    Malformed {
        /// The parameter and the problem.
        detail: String,
    },
    /// The input is well-formed but cannot be accepted.
    #[error("{detail}")]
    Invalid {
        /// Stable code.
        code: String,
        /// The field and the problem.
        detail: String,
    },
}

impl Refusal {
    /// A conflict with the current state.
    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::Conflict {
            code: code.to_owned(),
            detail: detail.into(),
        }
    }
    /// An unknown object.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }
    /// A malformed parameter.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::Malformed {
            detail: detail.into(),
        }
    }
    /// The caller may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Forbidden {
            detail: detail.into(),
        }
    }
    /// Input that cannot be accepted.
    pub fn invalid(code: &str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            code: code.to_owned(),
            detail: detail.into(),
        }
    }
}

impl StoreError {
    /// A conflict with the current state.
    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::Refused(Refusal::conflict(code, detail))
    }
    /// An unknown object.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::Refused(Refusal::not_found(what))
    }
    /// A malformed parameter.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::Refused(Refusal::malformed(detail))
    }
    /// The caller may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Refused(Refusal::forbidden(detail))
    }
    /// Input that cannot be accepted.
    pub fn invalid(code: &str, detail: impl Into<String>) -> Self {
        Self::Refused(Refusal::invalid(code, detail))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(sql::Error::Sqlite(e))
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        Self::Database(sql::Error::Postgres(e))
    }
}

impl StoreError {
    fn io(path: &Path, e: &std::io::Error) -> Self {
        StoreError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// A write job's view of the database: the open transaction (inside the
/// job's own savepoint) and the audit log.
pub struct Tx<'a> {
    conn: &'a Connection,
    head: &'a mut AuditHead,
    now_ms: i64,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Tx<'_> {
    /// The connection, inside the job's savepoint.
    #[must_use]
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// The commit time of this batch, in milliseconds since the epoch.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Appends an audit record, chained to the previous one.
    ///
    /// # Errors
    /// When the insert fails.
    pub fn audit(
        &mut self,
        tenant: Option<&str>,
        kind: &str,
        mandate_id: Option<&str>,
        body: serde_json::Value,
    ) -> Result<AuditRecord, StoreError> {
        audit::append(
            self.conn,
            self.head,
            self.now_ms,
            tenant,
            kind,
            mandate_id,
            body,
        )
    }

    /// As [`audit`](Self::audit) for a body its caller made canonical
    /// beforehand (off the writer): the record's sequence number. The
    /// record and its hash are the same as `audit` would make.
    ///
    /// # Errors
    /// When the insert fails.
    pub fn audit_canonical(
        &mut self,
        tenant: Option<&str>,
        kind: &str,
        mandate_id: Option<&str>,
        body: &audit::CanonicalBody,
    ) -> Result<i64, StoreError> {
        audit::append_canonical(
            self.conn,
            self.head,
            self.now_ms,
            tenant,
            kind,
            mandate_id,
            body,
        )
    }
}

type JobFn =
    Box<dyn FnOnce(&mut Tx<'_>) -> Result<Box<dyn std::any::Any + Send>, StoreError> + Send>;

struct Job {
    run: JobFn,
    reply: tokio::sync::oneshot::Sender<Result<Box<dyn std::any::Any + Send>, StoreError>>,
    /// Whether the checkpoint must cover this job's commit before it is
    /// answered (it otherwise lags by up to [`CHECKPOINT_EVERY`]).
    checkpoint: bool,
}

/// The store.
pub struct Store {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    /// Read connections: a read takes a free one (or waits for one).
    readers: Vec<Mutex<Connection>>,
    /// Where the next read starts looking for a free reader.
    next_reader: std::sync::atomic::AtomicUsize,
    dir: PathBuf,
    health: Arc<WriterHealth>,
}

/// What the writer last managed to do, for `/healthz`.
#[derive(Debug, Default)]
pub struct WriterHealth {
    /// The last commit failed.
    commit_failing: std::sync::atomic::AtomicBool,
    /// The signed checkpoint lags the log (its write failed after a commit).
    checkpoint_failing: std::sync::atomic::AtomicBool,
}

impl WriterHealth {
    /// Whether the writer commits and checkpoints: `None` when healthy, else
    /// what is failing.
    #[must_use]
    pub fn problem(&self) -> Option<&'static str> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.commit_failing.load(Relaxed) {
            Some("the store cannot commit")
        } else if self.checkpoint_failing.load(Relaxed) {
            Some("the audit checkpoint cannot be written")
        } else {
            None
        }
    }
}

/// Creates `dir` (and its parents) readable by its owner only (0700 on
/// Unix): it holds every mandate chain and the signing keys.
///
/// # Errors
/// When the directory cannot be created or its mode set.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| StoreError::io(dir, &e))?;
    }
    Ok(())
}

/// Makes the database and its WAL and shared-memory files (when present)
/// readable by their owner only. SQLite creates the WAL and `-shm` files
/// with the database file's mode, so creating that one 0600 first covers
/// them; this also tightens files left 0644 by an older version.
fn restrict_database_files(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::io(path, &e))?;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = PathBuf::from(p);
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| StoreError::io(&p, &e))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The database file in a data directory.
#[must_use]
pub fn database_path(dir: &Path) -> PathBuf {
    dir.join("mandate.sqlite3")
}

/// The signed audit checkpoint, kept apart from the log.
#[must_use]
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("audit-checkpoint.jws")
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Every statement the store runs stays prepared (rusqlite keeps 16 by
    // default; the writer alone runs more than that across job kinds, and
    // one evicted is parsed again at its next use).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(Connection::sqlite(conn))
}

/// Prepared statements kept per SQLite connection.
const STATEMENT_CACHE: usize = 256;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;

/// The advisory lock every replica's writer holds while it appends to the
/// audit log (PostgreSQL): one chain, no fork.
pub const WRITER_LOCK: i64 = 0x6d61_6e64_6174_6501;

/// Read connections to the embedded file (WAL: readers run side by side and
/// never block the writer).
const SQLITE_READERS: usize = 2;

/// Read connections to PostgreSQL per replica (beside the writer's and the
/// follower's).
const POSTGRES_READERS: usize = 4;

impl Store {
    /// Opens (creating when needed) the store in `dir`. `checkpoint_key`
    /// signs the audit checkpoint after every commit.
    ///
    /// # Errors
    /// When the directory or database cannot be opened, or the audit log's
    /// head cannot be read.
    pub fn open(dir: &Path, checkpoint_key: SigningKey) -> Result<Self, StoreError> {
        create_private_dir(dir)?;
        let path = database_path(dir);
        restrict_database_files(&path)?;
        let wconn = open_connection(&path)?;
        let readers = (0..SQLITE_READERS)
            .map(|_| open_connection(&path))
            .collect::<Result<_, _>>()?;
        Self::start(dir, wconn, readers, checkpoint_key)
    }

    /// Opens the store on the PostgreSQL database at `url`
    /// (`postgres://USER@HOST:PORT/DB`), migrating its schema; `dir` keeps
    /// this replica's signed audit checkpoint.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub fn open_postgres(
        dir: &Path,
        url: &str,
        checkpoint_key: SigningKey,
    ) -> Result<Self, StoreError> {
        create_private_dir(dir)?;
        let (w, readers) = std::thread::scope(|sc| {
            sc.spawn(|| -> Result<_, StoreError> {
                let w = Connection::Postgres(sql::PgConn::connect(url)?);
                let readers = (0..POSTGRES_READERS)
                    .map(|_| Ok(Connection::Postgres(sql::PgConn::connect(url)?)))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok((w, readers))
            })
            .join()
            .unwrap_or_else(|_| Err(StoreError::Closed))
        })?;
        Self::start(dir, w, readers, checkpoint_key)
    }

    fn start(
        dir: &Path,
        mut wconn: Connection,
        readers: Vec<Connection>,
        checkpoint_key: SigningKey,
    ) -> Result<Self, StoreError> {
        // PostgreSQL's client must not run inside an async runtime: the
        // migration and every read run on a plain thread.
        let head = std::thread::scope(|sc| {
            sc.spawn(|| -> Result<AuditHead, StoreError> {
                schema::migrate(&mut wconn)?;
                audit::head(&wconn)
            })
            .join()
            .unwrap_or_else(|_| Err(StoreError::Closed))
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let checkpoint = checkpoint_path(dir);
        let health = Arc::new(WriterHealth::default());
        let h = Arc::clone(&health);
        let writer = thread::Builder::new()
            .name("mandate-store-writer".into())
            .spawn(move || writer_loop(&wconn, head, &rx, &checkpoint, &checkpoint_key, &h))
            .map_err(|e| StoreError::io(dir, &e))?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            readers: readers.into_iter().map(Mutex::new).collect(),
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            dir: dir.to_owned(),
            health,
        })
    }

    /// Which database the store is on.
    #[must_use]
    pub fn dialect(&self) -> Dialect {
        self.readers
            .first()
            .and_then(|r| r.lock().ok())
            .map_or(Dialect::Sqlite, |r| r.dialect())
    }

    /// The data directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the writer can write (see [`WriterHealth::problem`]).
    #[must_use]
    pub fn health(&self) -> &WriterHealth {
        &self.health
    }

    /// Runs `f` in the next group commit and returns its result once the
    /// batch is durable. When `f` fails, its changes (and audit records) are
    /// rolled back and the others in the batch still commit.
    ///
    /// # Errors
    /// `f`'s error, or a commit failure.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f, false).await
    }

    /// Makes the signed audit checkpoint cover every commit answered so far
    /// (it is otherwise written up to [`CHECKPOINT_EVERY`] after a commit),
    /// so that a caller reading it next gets the current head.
    ///
    /// # Errors
    /// When the writer has stopped. A checkpoint that cannot be written is
    /// not an error here: it is retried, and reported by the writer's health.
    pub async fn checkpoint_now(&self) -> Result<(), StoreError> {
        self.submit(|_| Ok(()), true).await
    }

    async fn submit<T, F>(&self, f: F, checkpoint: bool) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            run: Box::new(move |tx| f(tx).map(|v| Box::new(v) as Box<dyn std::any::Any + Send>)),
            reply,
            checkpoint,
        };
        {
            let jobs = self.jobs.lock().map_err(|_| StoreError::Closed)?;
            jobs.as_ref()
                .ok_or(StoreError::Closed)?
                .send(job)
                .map_err(|_| StoreError::Closed)?;
        }
        let out = rx.await.map_err(|_| StoreError::Closed)??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Closed)
    }

    /// A free read connection, else (all busy) the next one in turn once it
    /// is free.
    fn reader(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        let n = self.readers.len();
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..n {
            if let Some(r) = self.readers.get((start + i) % n)
                && let Ok(guard) = r.try_lock()
            {
                return Ok(guard);
            }
        }
        self.readers
            .get(start % n.max(1))
            .ok_or(StoreError::Closed)?
            .lock()
            .map_err(|_| StoreError::Closed)
    }

    /// Runs a read on a reader connection (on PostgreSQL, on a plain
    /// thread: its client does not run inside an async runtime).
    ///
    /// # Errors
    /// The query's error.
    pub fn read<T: Send>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let conn = self.reader()?;
        match &*conn {
            Connection::Sqlite(_) => f(&conn),
            Connection::Postgres(_) => {
                let c: &Connection = &conn;
                std::thread::scope(|sc| {
                    sc.spawn(move || f(c))
                        .join()
                        .unwrap_or_else(|_| Err(StoreError::Closed))
                })
            }
        }
    }

    /// Stops accepting writes, lets the writer finish every job already
    /// queued (each is committed and answered), and waits for it.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut w) = self.writer.lock()
            && let Some(h) = w.take()
        {
            let _ = h.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs one batch in one transaction, each job in its own savepoint.
fn run_batch(
    conn: &Connection,
    head: &mut AuditHead,
    batch: &mut [Job],
    results: &mut Vec<Result<Box<dyn std::any::Any + Send>, StoreError>>,
) -> Result<(), StoreError> {
    // Statements that need no answer travel together (one round trip to
    // PostgreSQL): the lock with BEGIN, each job's savepoint with the
    // previous job's release, the last release and the notification with
    // COMMIT.
    match conn.dialect() {
        Dialect::Sqlite => {
            // Statements prepared once per connection (as between jobs).
            conn.execute("BEGIN IMMEDIATE", &[])?;
            conn.execute("SAVEPOINT job", &[])?;
        }
        Dialect::Postgres => {
            // One writer at a time across replicas; the head is read under
            // the lock, after whatever another replica appended.
            conn.execute_batch(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})"
            ))?;
            *head = audit::head(conn)?;
            conn.execute_batch("SAVEPOINT job")?;
        }
    }
    let first_seq = head.seq;
    let now = now_ms();
    let last = batch.len().saturating_sub(1);
    for (i, job) in batch.iter_mut().enumerate() {
        let run = std::mem::replace(&mut job.run, Box::new(|_| Err(StoreError::Closed)));
        let saved = head.clone();
        let r = {
            let mut t = Tx {
                conn,
                head,
                now_ms: now,
            };
            run(&mut t)
        };
        // The next job's savepoint opens with this one's end.
        let next = if i == last { "" } else { "; SAVEPOINT job" };
        match r {
            Ok(v) => {
                if i != last {
                    between_jobs(conn, &["RELEASE SAVEPOINT job"], next)?;
                }
                results.push(Ok(v));
            }
            Err(e) => {
                between_jobs(
                    conn,
                    &["ROLLBACK TO SAVEPOINT job", "RELEASE SAVEPOINT job"],
                    next,
                )?;
                *head = saved;
                results.push(Err(e));
            }
        }
    }
    // The last job's savepoint is still open when it succeeded.
    let open = matches!(results.last(), Some(Ok(_))) || batch.is_empty();
    let release = if open { "RELEASE SAVEPOINT job; " } else { "" };
    if conn.dialect() == Dialect::Postgres && head.seq != first_seq {
        // Delivered at commit to every replica listening: they read what
        // changed from the log (and catch up from it after a missed one).
        conn.execute_batch(&format!(
            "{release}SELECT pg_notify('{CHANGES_CHANNEL}', '{}'); COMMIT",
            head.seq
        ))?;
    } else if conn.dialect() == Dialect::Postgres {
        conn.execute_batch(&format!("{release}COMMIT"))?;
    } else {
        if open {
            conn.execute("RELEASE SAVEPOINT job", &[])?;
        }
        conn.execute("COMMIT", &[])?;
    }
    Ok(())
}

/// Ends one job's savepoint with `statements` and opens the next job's when
/// `next` is `"; SAVEPOINT job"`. SQLite runs each as a statement prepared
/// once per connection (parsing them for every job cost more than the job's
/// own writes); PostgreSQL gets them in one round trip.
fn between_jobs(conn: &Connection, statements: &[&str], next: &str) -> Result<(), StoreError> {
    match conn.dialect() {
        Dialect::Sqlite => {
            for sql in statements {
                conn.execute(sql, &[])?;
            }
            if !next.is_empty() {
                conn.execute("SAVEPOINT job", &[])?;
            }
            Ok(())
        }
        Dialect::Postgres => Ok(conn.execute_batch(&format!("{}{next}", statements.join("; ")))?),
    }
}

/// The channel replicas listen on for commits (PostgreSQL).
pub const CHANGES_CHANNEL: &str = "mandate_changes";

/// How long a commit may go uncovered by a checkpoint. Checkpoints are
/// written after the commit has been answered (a commit is durable on its
/// own), at most this often, and whenever the writer stops; so answering a
/// commit waits for one fsync, not three (the checkpoint file and its
/// directory).
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// How long a checkpoint that could not be written waits to be tried again.
const CHECKPOINT_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

fn writer_loop(
    conn: &Connection,
    mut head: AuditHead,
    rx: &mpsc::Receiver<Job>,
    checkpoint: &Path,
    key: &SigningKey,
    health: &WriterHealth,
) {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;
    // The checkpoint lags the log: written when `due` comes, until it
    // succeeds; `None` when it covers the head.
    let mut due: Option<Instant> = None;
    let mut last_written = Instant::now().checked_sub(CHECKPOINT_EVERY);
    // Each checkpoint names the one before it.
    let mut prev_checkpoint = audit::current_checkpoint_digest(checkpoint);
    let mut write_checkpoint =
        |head: &AuditHead, due: &mut Option<Instant>, last_written: &mut Option<Instant>| {
            match audit::write_checkpoint(checkpoint, head, key, &mut prev_checkpoint) {
                Ok(()) => {
                    *due = None;
                    *last_written = Some(Instant::now());
                    health.checkpoint_failing.store(false, Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit checkpoint not written; retrying");
                    *due = Some(Instant::now() + CHECKPOINT_RETRY);
                    health.checkpoint_failing.store(true, Relaxed);
                }
            }
        };
    loop {
        let wait = due.map_or(std::time::Duration::from_secs(1), |d| {
            d.saturating_duration_since(Instant::now())
        });
        let first = match rx.recv_timeout(wait) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if due.is_some_and(|d| d <= Instant::now()) {
                    write_checkpoint(&head, &mut due, &mut last_written);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stopping: the last commits are covered before the writer ends.
                if due.is_some() {
                    write_checkpoint(&head, &mut due, &mut last_written);
                }
                break;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let before = head.clone();
        let mut results = Vec::with_capacity(batch.len());
        let committed = run_batch(conn, &mut head, &mut batch, &mut results);
        match committed {
            Ok(()) => {
                health.commit_failing.store(false, Relaxed);
                if head.seq != before.seq && due.is_none() {
                    let next = last_written.map_or_else(Instant::now, |t| t + CHECKPOINT_EVERY);
                    due = Some(next);
                }
                // A job that asked for it has the checkpoint cover the head
                // before anyone in its batch is answered.
                let asked = batch.iter().any(|j| j.checkpoint);
                if due.is_some() && asked {
                    write_checkpoint(&head, &mut due, &mut last_written);
                }
                // Committed is durable: the answer is success whatever
                // happens to the checkpoint, and the head stays where the
                // log is. A checkpoint that cannot be written is retried and
                // reported by health, never turned into a failed write.
                for (job, r) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
                if due.is_some_and(|d| d <= Instant::now()) {
                    write_checkpoint(&head, &mut due, &mut last_written);
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                health.commit_failing.store(true, Relaxed);
                // Whatever the failure, the writer's head is what is on disk.
                head = audit::head(conn).unwrap_or(before);
                let msg = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(StoreError::Commit(msg.clone())));
                }
            }
        }
    }
}

/// Opens a data directory's database read-only (for `mandate audit`).
///
/// # Errors
/// When the database does not exist or cannot be opened.
pub fn open_read_only(dir: &Path) -> Result<Connection, StoreError> {
    let path = database_path(dir);
    if !path.is_file() {
        return Err(StoreError::Io {
            path: path.display().to_string(),
            message: "no database here (is this a data directory?)".into(),
        });
    }
    Ok(Connection::sqlite(rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?))
}

/// Connects to a PostgreSQL store (for `mandate audit --database`). Call it
/// and use the connection outside any async runtime.
///
/// # Errors
/// When the database cannot be reached.
pub fn connect_postgres(url: &str) -> Result<Connection, StoreError> {
    Ok(Connection::Postgres(sql::PgConn::connect(url)?))
}

/// A fresh, empty PostgreSQL database named after `name` on the cluster
/// `scripts/test` gives the tests (`MANDATE_TEST_POSTGRES`), and its URL;
/// `None` where there is none. Made on a thread of its own (the client
/// blocks, and may be called from an async test).
#[cfg(test)]
pub(crate) fn test_postgres(name: &str) -> Option<String> {
    #![allow(clippy::unwrap_used, reason = "test code")]
    let base = std::env::var("MANDATE_TEST_POSTGRES").ok()?;
    let name = format!("{name}_{}", std::process::id());
    let url = format!("{}/{name}", base.rsplit_once('/')?.0);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let c = sql::Connection::Postgres(sql::PgConn::connect(&base).unwrap());
            c.execute_batch(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .unwrap();
            c.execute_batch(&format!("CREATE DATABASE {name}")).unwrap();
        })
        .join()
        .unwrap();
    });
    Some(url)
}

#[cfg(test)]
mod batch_tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

    use std::sync::Arc;

    use mandate_core::keys::{Algorithm, SigningKey};

    use super::{Store, StoreError, audit, checkpoint_path};

    fn key() -> SigningKey {
        SigningKey::from_seed(Algorithm::EdDSA, [9; 32])
    }

    /// Forty jobs in one group commit, every other one failing after it
    /// appended an audit record: the failures leave nothing behind, the
    /// others commit, and the log is one intact chain.
    async fn a_failed_job_leaves_nothing_and_its_batch_commits(
        store: &Arc<Store>,
        dir: &std::path::Path,
    ) {
        // The first job holds the writer so the others queue into one batch.
        let slow = {
            let s = Arc::clone(store);
            tokio::spawn(async move {
                s.write(|tx| {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    tx.audit(Some("t"), "first", None, serde_json::json!({}))?;
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let jobs: Vec<_> = (0..40)
            .map(|i| {
                let s = Arc::clone(store);
                tokio::spawn(async move {
                    s.write(move |tx| {
                        tx.audit(Some("t"), "job", None, serde_json::json!({"i": i}))?;
                        if i % 2 == 1 {
                            return Err(StoreError::conflict("odd", format!("job {i} fails")));
                        }
                        Ok(i)
                    })
                    .await
                })
            })
            .collect();
        slow.await.unwrap().unwrap();
        for (i, j) in jobs.into_iter().enumerate() {
            match (i % 2, j.await.unwrap()) {
                (0, Ok(n)) => assert_eq!(n, i),
                (1, Err(StoreError::Refused(r))) => assert!(r.to_string().contains("fails"), "{r}"),
                (_, other) => panic!("job {i}: {other:?}"),
            }
        }
        let report = store
            .read(|c| {
                let kept: Vec<i64> = audit::page(c, "t", None, None, 100, |_| true)?
                    .records
                    .into_iter()
                    .filter(|r| r.kind == "job")
                    .map(|r| r.body["i"].as_i64().unwrap())
                    .collect();
                assert_eq!(kept.len(), 20, "{kept:?}");
                assert!(kept.iter().all(|i| i % 2 == 0), "{kept:?}");
                audit::verify(c, &checkpoint_path(dir), &key().verifying_key().unwrap())
            })
            .unwrap();
        assert!(report.first_problem.is_none(), "{:?}", report.first_problem);
        assert_eq!(report.records, 21);
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mandate-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// The checkpoint lags a commit by up to `CHECKPOINT_EVERY`; asked for,
    /// it covers every commit answered before, at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_asked_for_covers_every_commit_answered_before() {
        let dir = temp("checkpoint-now");
        let store = Store::open(&dir, key()).unwrap();
        let public = key().verifying_key().unwrap();
        for round in 1..=20_i64 {
            // Commits well inside the lag: the writer has not checkpointed
            // them on its own yet.
            for i in 0..3 {
                store
                    .write(move |tx| {
                        tx.audit(Some("t"), "job", None, serde_json::json!({"i": i}))?;
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
            store.checkpoint_now().await.unwrap();
            let text = std::fs::read_to_string(checkpoint_path(&dir)).unwrap();
            let cp = audit::decode_checkpoint(&text, &public).unwrap();
            assert_eq!(cp.seq, round * 3, "round {round}");
        }
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_the_embedded_file_a_failed_job_leaves_nothing_and_its_batch_commits() {
        let dir = temp("batch-sqlite");
        let store = Arc::new(Store::open(&dir, key()).unwrap());
        a_failed_job_leaves_nothing_and_its_batch_commits(&store, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgresql_a_failed_job_leaves_nothing_and_its_batch_commits() {
        // Runs where scripts/test gives it a throwaway cluster.
        let Some(url) = super::test_postgres("store_batch") else {
            return;
        };
        let dir = temp("batch-pg");
        let store = Arc::new(Store::open_postgres(&dir, &url, key()).unwrap());
        a_failed_job_leaves_nothing_and_its_batch_commits(&store, &dir).await;
        // PostgreSQL's client closes its connections blocking: not on a
        // runtime thread.
        std::thread::spawn(move || drop(store)).join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
