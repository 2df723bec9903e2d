//! The schema, created on first open.

use rusqlite::Connection;

use crate::StoreError;

const SCHEMA: &str = r"
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

pub(crate) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)?;
    crate::audit::backfill_refs(conn)
}
