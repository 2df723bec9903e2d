//! The schema and its versioned migrations.
//!
//! The version lives in SQLite's `user_version`. Migration `i` (from 1)
//! takes a database from version `i - 1` to `i`, in one transaction with the
//! version bump, so a crash leaves either the old schema or the new one.
//! Version 1 is the schema of the first releases, which did not record a
//! version: its statements are all `IF NOT EXISTS`, so a database they wrote
//! (version 0, tables present) passes through it unchanged and is then
//! upgraded like any other. A database from a newer release is refused
//! rather than written by code that does not know its schema.

use rusqlite::Connection;

use crate::StoreError;

/// The migrations, oldest first: what each does, and its SQL.
const MIGRATIONS: &[(&str, &str)] = &[
    ("the first releases' schema", SCHEMA_1),
    (
        "indexes for listing requests, mandates and audit records by tenant, newest first",
        SCHEMA_2,
    ),
];

/// The schema version this release writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const SCHEMA_2: &str = r"
CREATE INDEX IF NOT EXISTS requests_tenant_created ON requests(tenant, created_ms, id);
CREATE INDEX IF NOT EXISTS mandates_tenant_created ON mandates(tenant, created_ms, id);
CREATE INDEX IF NOT EXISTS audit_tenant_seq ON audit(tenant, seq);
";

const SCHEMA_1: &str = r"
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    principal TEXT NOT NULL,
    agent_sub TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    decided_by TEXT,
    decided_ms INTEGER,
    consent_sha256 TEXT,
    reason TEXT,
    mandate_id TEXT
);
CREATE TABLE IF NOT EXISTS mandates (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    principal TEXT NOT NULL,
    agent_sub TEXT NOT NULL,
    parent_id TEXT,
    state TEXT NOT NULL,
    jws TEXT NOT NULL,
    claims TEXT NOT NULL,
    hard_expiry INTEGER NOT NULL,
    one_time INTEGER NOT NULL DEFAULT 0,
    consumed_ms INTEGER,
    superseded_by TEXT,
    ended_ms INTEGER,
    ended_by TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mandates_parent ON mandates(parent_id);
CREATE INDEX IF NOT EXISTS mandates_tenant_state ON mandates(tenant, state);
CREATE TABLE IF NOT EXISTS facts (
    tenant TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL,
    idempotency_id TEXT NOT NULL,
    type TEXT NOT NULL,
    subject TEXT,
    occurred_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, idempotency_id)
);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    principal TEXT NOT NULL,
    mandate_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    tenant TEXT,
    kind TEXT NOT NULL,
    mandate_id TEXT,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_mandate ON audit(mandate_id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS signals (
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    mandate_id TEXT,
    body TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE TABLE IF NOT EXISTS audit_refs (
    mandate_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (mandate_id, seq)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS audit_refs_no_update BEFORE UPDATE ON audit_refs
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_refs_no_delete BEFORE DELETE ON audit_refs
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS ship_marks (
    tenant TEXT NOT NULL,
    enforcer TEXT NOT NULL,
    source TEXT NOT NULL,
    next INTEGER NOT NULL,
    PRIMARY KEY (tenant, enforcer, source)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    owner TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_acks (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_verifications (
    stream TEXT PRIMARY KEY,
    state TEXT,
    requested_ms INTEGER NOT NULL
);
";

/// The schema version of an open database (0: written before versions were
/// recorded, or empty).
///
/// # Errors
/// When the pragma cannot be read.
pub fn version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Brings the database to [`SCHEMA_VERSION`]; returns the version it had.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Schema(format!(
            "the database has schema version {found}, written by a newer release; this one knows up to {SCHEMA_VERSION} (upgrade mandate, or restore a backup made before the newer release ran)"
        )));
    }
    let fresh = found == 0
        && !conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit')",
            [],
            |r| r.get::<_, bool>(0),
        )?;
    for (i, (what, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = i + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if to == 1 {
            crate::audit::backfill_refs(&tx)?;
        }
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()?;
        if !fresh {
            tracing::info!(version = to, what, "database schema migrated");
        }
    }
    Ok(found)
}
