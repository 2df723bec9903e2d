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

use crate::StoreError;
use crate::sql::{Connection, Dialect, OptionalExtension as _, params};

/// The migrations, oldest first: what each does, and its SQL.
const MIGRATIONS: &[(&str, &str)] = &[
    ("the first releases' schema", SCHEMA_1),
    (
        "indexes for listing requests, mandates and audit records by tenant, newest first",
        SCHEMA_2,
    ),
    ("DPoP proofs seen by any replica", SCHEMA_3),
    (
        "audit lookups that do not read decisions (a decision writes one index fewer); mandates by what superseded them and by principal",
        SCHEMA_4,
    ),
    (
        "nothing on the embedded store (replicas catching up read only the records that change state on PostgreSQL)",
        SCHEMA_5,
    ),
];

/// The term that picks a mandate's transitions (the records that change its
/// state) out of the audit log, as the partial indexes of [`SCHEMA_4`] are
/// defined with it. A query uses those indexes only when it contains this
/// term exactly, so every such query is built with this macro (and the
/// store's tests check that each one does use its index). It is a chain of
/// `OR`s, not `kind IN (…)`: SQLite evaluates a partial index's condition
/// for every row inserted, decisions included, and an `IN` list of more
/// than two values costs it a temporary table each time (which made every
/// decision's insert about 2.5 times as expensive).
#[macro_export]
#[doc(hidden)]
macro_rules! transition_kinds {
    () => {
        "(kind = 'suspended' OR kind = 'resumed' OR kind = 'revoked' OR kind = 'expired' OR kind = 'completed' OR kind = 'superseded')"
    };
}

/// Lookups that read transitions and business events only, whatever the
/// number of decisions in the log: a mandate's transitions by mandate
/// (how it ended, whether a decision fell inside it), transitions by the
/// event that made them, events by id, a tenant's events newest first. The
/// index of every record by `mandate_id` goes: it was read only for
/// transitions (which now have their own), and every decision wrote to it
/// (`audit_refs` already finds any record by mandate). And two lookups of
/// mandates that read every mandate of the tenant: the mandate another
/// superseded, and a principal's mandates (the audit log a principal sees).
const SCHEMA_4: &str = concat!(
    "DROP INDEX IF EXISTS audit_mandate;\n",
    "CREATE INDEX IF NOT EXISTS audit_transitions ON audit(mandate_id, seq) WHERE ",
    transition_kinds!(),
    ";\n",
    "CREATE INDEX IF NOT EXISTS audit_transitions_by ON audit(json_extract(record, '$.body.by')) WHERE ",
    transition_kinds!(),
    ";\n",
    "CREATE INDEX IF NOT EXISTS audit_events ON audit(json_extract(record, '$.body.id')) WHERE kind = 'event';\n",
    "CREATE INDEX IF NOT EXISTS events_tenant_received ON events(tenant, received_ms);\n",
    "CREATE INDEX IF NOT EXISTS mandates_superseded_by ON mandates(superseded_by) WHERE superseded_by IS NOT NULL;\n",
    "CREATE INDEX IF NOT EXISTS mandates_tenant_principal ON mandates(tenant, principal);\n",
);

/// [`SCHEMA_4`] for PostgreSQL, with the JSON paths as its queries are
/// translated ([`crate::sql::translate`]).
const PG_SCHEMA_4: &str = concat!(
    "DROP INDEX IF EXISTS audit_mandate;\n",
    "CREATE INDEX IF NOT EXISTS audit_transitions ON audit(mandate_id, seq) WHERE ",
    transition_kinds!(),
    ";\n",
    "CREATE INDEX IF NOT EXISTS audit_transitions_by ON audit((record::jsonb #>> '{body,by}')) WHERE ",
    transition_kinds!(),
    ";\n",
    "CREATE INDEX IF NOT EXISTS audit_events ON audit((record::jsonb #>> '{body,id}')) WHERE kind = 'event';\n",
    "CREATE INDEX IF NOT EXISTS events_tenant_received ON events(tenant, received_ms);\n",
    "CREATE INDEX IF NOT EXISTS mandates_superseded_by ON mandates(superseded_by) WHERE superseded_by IS NOT NULL;\n",
    "CREATE INDEX IF NOT EXISTS mandates_tenant_principal ON mandates(tenant, principal);\n",
);

/// The audit kinds that change nothing a replica holds in memory: a
/// replica catching up on the log ([`CATCH_UP`]) skips them, and on
/// PostgreSQL reads the rest through an index that leaves them out
/// ([`PG_SCHEMA_5`]), so the query and the index share this text.
#[macro_export]
#[doc(hidden)]
macro_rules! inert_kinds {
    () => {
        "('decision', 'decisions', 'refused', 'consent_shown', 'requested', 'request_denied', 'widening_approved', 'discovery_refused')"
    };
}

/// What a replica reads of the log between the head it has applied (`$1`)
/// and the current head (`$2`) on PostgreSQL: the records that change
/// state, in order, with the text of each business event.
pub const CATCH_UP: &str = concat!(
    "SELECT kind, tenant, mandate_id, CASE WHEN kind = 'event' THEN record END FROM audit WHERE seq > $1 AND seq <= $2 AND kind NOT IN ",
    inert_kinds!(),
    " ORDER BY seq"
);

/// A replica that was away reads the state changes since, not every
/// decision since: an index of the records that are not inert, by `seq`
/// (decisions never enter it).
const PG_SCHEMA_5: &str = concat!(
    "CREATE INDEX IF NOT EXISTS audit_state_changes ON audit(seq) WHERE kind NOT IN ",
    inert_kinds!(),
    ";\n"
);

/// On the embedded store nothing: one process, no replica reads the log to
/// catch up (and SQLite would pay for a `NOT IN` list's condition on every
/// row inserted, as [`transition_kinds`] explains).
const SCHEMA_5: &str = "";

/// Proofs of possession seen, by replay key, until they expire: on a shared
/// database, a proof accepted by one replica is refused by every other.
const SCHEMA_3: &str = r"
CREATE TABLE IF NOT EXISTS pop_seen (key TEXT PRIMARY KEY, exp_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS pop_seen_exp ON pop_seen(exp_ms);
";

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

/// The PostgreSQL schema: the same tables, columns and meaning; `BIGINT`
/// for integers, the append-only rule as a trigger function.
const PG_SCHEMA_1: &str = r"
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, principal TEXT NOT NULL, agent_sub TEXT NOT NULL,
    body TEXT NOT NULL, state TEXT NOT NULL, created_ms BIGINT NOT NULL, decided_by TEXT,
    decided_ms BIGINT, consent_sha256 TEXT, reason TEXT, mandate_id TEXT
);
CREATE TABLE IF NOT EXISTS mandates (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, principal TEXT NOT NULL, agent_sub TEXT NOT NULL,
    parent_id TEXT, state TEXT NOT NULL, jws TEXT NOT NULL, claims TEXT NOT NULL,
    hard_expiry BIGINT NOT NULL, one_time BIGINT NOT NULL DEFAULT 0, consumed_ms BIGINT,
    superseded_by TEXT, ended_ms BIGINT, ended_by TEXT, created_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS mandates_parent ON mandates(parent_id);
CREATE INDEX IF NOT EXISTS mandates_tenant_state ON mandates(tenant, state);
CREATE TABLE IF NOT EXISTS facts (tenant TEXT PRIMARY KEY, doc TEXT NOT NULL, version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL, idempotency_id TEXT NOT NULL, type TEXT NOT NULL, subject TEXT,
    occurred_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tenant, idempotency_id)
);
CREATE TABLE IF NOT EXISTS notifications (
    id BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, principal TEXT NOT NULL,
    mandate_id TEXT NOT NULL, body TEXT NOT NULL, created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, tenant TEXT, kind TEXT NOT NULL,
    mandate_id TEXT, record TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_mandate ON audit(mandate_id);
CREATE OR REPLACE FUNCTION mandate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
DROP TRIGGER IF EXISTS audit_append_only ON audit;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION mandate_append_only();
DROP TRIGGER IF EXISTS audit_truncate ON audit;
CREATE TRIGGER audit_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION mandate_append_only();
CREATE TABLE IF NOT EXISTS signals (
    tenant TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, mandate_id TEXT,
    body TEXT NOT NULL, at_ms BIGINT NOT NULL, PRIMARY KEY (tenant, seq)
);
CREATE TABLE IF NOT EXISTS audit_refs (mandate_id TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (mandate_id, seq));
DROP TRIGGER IF EXISTS audit_refs_append_only ON audit_refs;
CREATE TRIGGER audit_refs_append_only BEFORE UPDATE OR DELETE ON audit_refs
    FOR EACH ROW EXECUTE FUNCTION mandate_append_only();
CREATE TABLE IF NOT EXISTS ship_marks (
    tenant TEXT NOT NULL, enforcer TEXT NOT NULL, source TEXT NOT NULL, next BIGINT NOT NULL,
    PRIMARY KEY (tenant, enforcer, source)
);
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, owner TEXT NOT NULL, config TEXT NOT NULL,
    status TEXT NOT NULL, cursor BIGINT NOT NULL, created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_acks (stream TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (stream, seq));
CREATE TABLE IF NOT EXISTS stream_verifications (stream TEXT PRIMARY KEY, state TEXT, requested_ms BIGINT NOT NULL);
";

/// PostgreSQL's migrations, numbered as SQLite's.
const PG_MIGRATIONS: &[(&str, &str)] = &[
    ("the first releases' schema", PG_SCHEMA_1),
    (
        "indexes for listing requests, mandates and audit records by tenant, newest first",
        SCHEMA_2,
    ),
    ("DPoP proofs seen by any replica", SCHEMA_3),
    (
        "audit lookups that do not read decisions (a decision writes one index fewer); mandates by what superseded them and by principal",
        PG_SCHEMA_4,
    ),
    (
        "replicas catching up read only the records that change state",
        PG_SCHEMA_5,
    ),
];

/// Held while a replica migrates, so two starting together do not race.
const MIGRATION_LOCK: i64 = 0x6d61_6e64_6174_6502;

/// The schema version of an open database (0: written before versions were
/// recorded, or empty).
///
/// # Errors
/// When the version cannot be read.
pub fn version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = match conn.dialect() {
        Dialect::Sqlite => conn.query_row("PRAGMA user_version", params![], |r| r.get(0))?,
        Dialect::Postgres => {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS mandate_schema (id INT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
            )?;
            conn.query_row(
                "SELECT version FROM mandate_schema WHERE id = 1",
                params![],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0)
        }
    };
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// Brings the database to [`SCHEMA_VERSION`]; returns the version it had.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let pg = conn.dialect() == Dialect::Postgres;
    if pg {
        conn.execute("SELECT pg_advisory_lock(?1)", params![MIGRATION_LOCK])?;
    }
    let r = migrate_locked(conn);
    if pg {
        let _ = conn.execute("SELECT pg_advisory_unlock(?1)", params![MIGRATION_LOCK]);
    }
    r
}

fn migrate_locked(conn: &Connection) -> Result<u32, StoreError> {
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Schema(format!(
            "the database has schema version {found}, written by a newer release; this one knows up to {SCHEMA_VERSION} (upgrade mandate, or restore a backup made before the newer release ran)"
        )));
    }
    let (migrations, exists) = match conn.dialect() {
        Dialect::Sqlite => (
            MIGRATIONS,
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit')",
        ),
        Dialect::Postgres => (
            PG_MIGRATIONS,
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'audit')",
        ),
    };
    let fresh = found == 0 && !conn.query_row(exists, params![], |r| r.get::<_, bool>(0usize))?;
    for (i, (what, sql)) in migrations.iter().enumerate().skip(found as usize) {
        let to = i + 1;
        conn.execute_batch("BEGIN")?;
        let step = (|| -> Result<(), StoreError> {
            conn.execute_batch(sql)?;
            if to == 1 {
                crate::audit::backfill_refs(conn)?;
            }
            match conn.dialect() {
                Dialect::Sqlite => conn.execute_batch(&format!("PRAGMA user_version = {to}"))?,
                Dialect::Postgres => {
                    conn.execute(
                        "INSERT INTO mandate_schema (id, version) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET version = ?1",
                        params![to],
                    )?;
                }
            }
            Ok(())
        })();
        match step {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        if !fresh {
            tracing::info!(version = to, what, "database schema migrated");
        }
    }
    Ok(found)
}
