//! The append-only, hash-chained audit log.
//!
//! Each record is canonical JSON (RFC 8785) of
//! `{"seq", "at_ms", "tenant", "kind", "mandate_id", "body"}`; its hash is
//! `SHA-256(prev_hash || "\n" || record)` in hex, with 64 zeros before the
//! first. After every commit the head (`seq`, `hash`) is signed by the
//! authority and written to a checkpoint file kept apart from the database,
//! so cutting records off the end is detected as well as editing, deleting
//! or reordering them.
//!
//! Decisions shipped from an enforcement point arrive in batches and are
//! kept as one record of kind [`DECISIONS`] per batch (one hash, one row,
//! however many decisions); queries [`expand`] such a record into one
//! `decision` per item, referenced as `SEQ.ITEM`. Every record's mandates
//! (its `mandate_id` and each chain it carries) are indexed in `audit_refs`,
//! which is append-only too and checked by [`verify`].

use std::io::Write as _;
use std::path::Path;

use crate::sql::{Connection, OptionalExtension, params};
use mandate_core::keys::{Algorithm, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::StoreError;

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The JWS `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "audit-checkpoint+jwt";

/// The last record's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// 0 before the first record.
    pub seq: i64,
    /// [`GENESIS`] before the first record.
    pub hash: String,
}

/// The kind of a record that holds a batch of decisions shipped from an
/// enforcement point: `{"enforcer", "source", "first", "records": [...]}`,
/// item `i` being the source's decision number `first + i`.
pub const DECISIONS: &str = "decisions";

/// One audit record as stored, or one decision of a [`DECISIONS`] record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: i64,
    /// When it was committed (ms since the epoch).
    pub at_ms: i64,
    /// The tenant, when there is one.
    pub tenant: Option<String>,
    /// `decision`, `issued`, `revoked`, `event`, ...
    pub kind: String,
    /// The mandate it is about, when there is one.
    pub mandate_id: Option<String>,
    /// The details.
    pub body: Value,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
    /// For one decision out of a [`DECISIONS`] record: its position there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

impl AuditRecord {
    /// How to name it: `SEQ`, or `SEQ.ITEM` for a decision out of a batch.
    #[must_use]
    pub fn reference(&self) -> String {
        match self.item {
            Some(i) => format!("{}.{i}", self.seq),
            None => self.seq.to_string(),
        }
    }
}

fn chain_ids(body: &Value) -> impl Iterator<Item = &str> {
    body.get("chain")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// The kind of a decision the authority took itself, one record each (its
/// body written by `Record::body` in the authority).
pub const DECISION: &str = "decision";

/// Where a decision's index entries start in its chain of `len` mandates,
/// given `registered`: how many of the chain's mandates, from the root, the
/// authority had registered when it decided. The deepest of those is
/// enough: a query about any registered ancestor walks the registered tree
/// down to it (`records_for_tree`, `log_page`). Every mandate after it (an
/// offline attenuation the authority never saw registered) has an entry of
/// its own, since nothing else leads to it. No count, zero, or a count the
/// chain cannot have: the whole chain, as every record before the count
/// existed has it.
fn indexed_from(registered: Option<u64>, len: usize) -> usize {
    match registered.and_then(|k| usize::try_from(k).ok()) {
        Some(k) if k >= 1 && k <= len => k - 1,
        _ => 0,
    }
}

/// The mandates of a record's own `chain` it is indexed under: from the
/// deepest registered one on for a [`DECISION`] that says how many were
/// registered ([`indexed_from`]), the whole chain otherwise.
fn indexed_chain<'a>(kind: &str, body: &'a Value) -> impl Iterator<Item = &'a str> {
    let registered = (kind == DECISION)
        .then(|| body.get("registered").and_then(Value::as_u64))
        .flatten();
    let from = indexed_from(registered, chain_ids(body).count());
    chain_ids(body).skip(from)
}

/// The mandates a record is about, as `audit_refs` indexes them: its
/// `mandate_id`, the mandates of its chain ([`indexed_chain`]), and every
/// mandate of each chain a batch of shipped decisions carries (an
/// enforcement point's word about registration is not taken).
fn refs<'a>(
    kind: &str,
    mandate_id: Option<&'a str>,
    body: &'a Value,
) -> std::collections::BTreeSet<&'a str> {
    let mut out: std::collections::BTreeSet<&str> = mandate_id.into_iter().collect();
    out.extend(indexed_chain(kind, body));
    if kind == DECISIONS {
        for r in body
            .get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(chain_ids(r));
        }
    }
    out
}

/// One `decision` per item of a [`DECISIONS`] record (each with the
/// batch's enforcer and a `record_id` of `SOURCE-N`); any other record as it is.
#[must_use]
pub fn expand(r: AuditRecord) -> Vec<AuditRecord> {
    if r.kind != DECISIONS {
        return vec![r];
    }
    let AuditRecord {
        seq,
        at_ms,
        tenant,
        mut body,
        prev_hash,
        hash,
        ..
    } = r;
    let enforcer = body.get("enforcer").cloned().unwrap_or(Value::Null);
    let source = body
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let first = body.get("first").and_then(Value::as_u64).unwrap_or(0);
    let items = match body.get_mut("records").map(Value::take) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    items
        .into_iter()
        .zip(0u32..)
        .map(|(mut item, i)| {
            let leaf = chain_ids(&item).last().map(str::to_owned);
            if let Some(o) = item.as_object_mut() {
                o.insert("enforcer".into(), enforcer.clone());
                o.insert(
                    "record_id".into(),
                    json!(format!("{source}-{}", first + u64::from(i))),
                );
            }
            AuditRecord {
                seq,
                at_ms,
                tenant: tenant.clone(),
                kind: "decision".into(),
                mandate_id: leaf,
                body: item,
                prev_hash: prev_hash.clone(),
                hash: hash.clone(),
                item: Some(i),
            }
        })
        .collect()
}

/// Canonical JSON (RFC 8785).
///
/// Most records (and every batch of shipped decisions) hold only strings,
/// integers, booleans and objects with ASCII member names; for those,
/// `serde_json`'s own compact output already is the canonical form, several
/// times faster than the general canonicalizer, which handles the rest.
///
/// # Errors
/// Never for values built from JSON; kept fallible for non-finite numbers.
pub fn canonical(v: &Value) -> Result<String, StoreError> {
    if already_canonical(v) {
        return serde_json::to_string(v)
            .map_err(|e| StoreError::Encoding(format!("canonical JSON: {e}")));
    }
    serde_json_canonicalizer::to_string(v)
        .map_err(|e| StoreError::Encoding(format!("canonical JSON: {e}")))
}

/// Whether `serde_json`'s compact output of `v` is its RFC 8785 form:
/// numbers are integers an IEEE double holds exactly (|n| ≤ 2^53, printed
/// the same by both), member names are ASCII (so byte order is UTF-16 order)
/// and appear in increasing order. Strings need nothing: both escape `"`,
/// `\` and the control characters alike (`\b \t \n \f \r`, else `\u00xx`
/// in lower case) and write everything else as it is.
fn already_canonical(v: &Value) -> bool {
    const EXACT: u64 = 1 << 53;
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n
            .as_i64()
            .map(i64::unsigned_abs)
            .or_else(|| n.as_u64())
            .is_some_and(|m| m <= EXACT),
        Value::Array(a) => a.iter().all(already_canonical),
        Value::Object(o) => {
            let mut prev: Option<&str> = None;
            o.iter().all(|(k, v)| {
                let in_order = k.is_ascii() && prev.is_none_or(|p| p < k.as_str());
                prev = Some(k);
                in_order && already_canonical(v)
            })
        }
    }
}

/// The chained hash of a record.
#[must_use]
pub fn chain_hash(prev_hash: &str, canonical_record: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical_record.as_bytes());
    // Lower-case hex of the digest, written in one pass (`hex::encode`
    // collects it a `char` at a time, at ten times the cost).
    format!("{:x}", h.finalize())
}

/// The last record's sequence number and hash.
///
/// # Errors
/// When the query fails.
pub fn head(conn: &Connection) -> Result<AuditHead, StoreError> {
    let last = conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            params![],
            |r| {
                Ok(AuditHead {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            },
        )
        .optional()?;
    Ok(last.unwrap_or(AuditHead {
        seq: 0,
        hash: GENESIS.to_owned(),
    }))
}

pub(crate) fn append(
    conn: &Connection,
    head: &mut AuditHead,
    at_ms: i64,
    tenant: Option<&str>,
    kind: &str,
    mandate_id: Option<&str>,
    body: Value,
) -> Result<AuditRecord, StoreError> {
    let seq = head.seq + 1;
    let record = json!({
        "seq": seq, "at_ms": at_ms, "tenant": tenant, "kind": kind,
        "mandate_id": mandate_id, "body": body,
    });
    let text = canonical(&record)?;
    let body = match record {
        Value::Object(mut o) => o.remove("body").unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let row = Row {
        seq,
        at_ms,
        tenant,
        kind,
        mandate_id,
    };
    let hash = insert(conn, head, &row, &text, refs(kind, mandate_id, &body))?;
    let out = AuditRecord {
        seq,
        at_ms,
        tenant: tenant.map(str::to_owned),
        kind: kind.to_owned(),
        mandate_id: mandate_id.map(str::to_owned),
        body,
        prev_hash: head.hash.clone(),
        hash: hash.clone(),
        item: None,
    };
    *head = AuditHead { seq, hash };
    Ok(out)
}

/// The columns of a record beside its text.
struct Row<'a> {
    seq: i64,
    at_ms: i64,
    tenant: Option<&'a str>,
    kind: &'a str,
    mandate_id: Option<&'a str>,
}

/// Inserts a record's row (its text chained to `head`) and its mandate
/// references; the record's hash. `head` is left for the caller to move.
fn insert<'a>(
    conn: &Connection,
    head: &AuditHead,
    row: &Row<'_>,
    text: &str,
    refs: impl IntoIterator<Item = &'a str>,
) -> Result<String, StoreError> {
    let hash = chain_hash(&head.hash, text);
    conn.prepare_cached(
        "INSERT INTO audit (seq, at_ms, tenant, kind, mandate_id, record, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        row.seq,
        row.at_ms,
        row.tenant,
        row.kind,
        row.mandate_id,
        text,
        head.hash,
        hash
    ])?;
    let mut index = conn.prepare_cached(
        "INSERT INTO audit_refs (mandate_id, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for id in refs {
        index.execute(params![id, row.seq])?;
    }
    Ok(hash)
}

/// A record's body already in canonical form, with the mandates its chains
/// name: made by whoever builds the body (an async worker), so that the
/// single writer only splices it into the record, hashes and inserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalBody {
    text: String,
    refs: Vec<String>,
    /// Whether `refs` follow a decision's `registered` count: such a body
    /// is indexed that way only as a [`DECISION`].
    registered: bool,
}

impl CanonicalBody {
    /// `body` in RFC 8785 form, and the mandates of its `chain` it is
    /// indexed under as a [`DECISION`].
    ///
    /// # Errors
    /// When it cannot be encoded.
    pub fn new(body: &Value) -> Result<Self, StoreError> {
        Ok(Self {
            text: canonical(body)?,
            refs: indexed_chain(DECISION, body).map(str::to_owned).collect(),
            registered: body.get("registered").is_some(),
        })
    }

    /// The mandates of its chain it is indexed under, besides the record's
    /// `mandate_id`.
    #[must_use]
    pub fn refs(&self) -> &[String] {
        &self.refs
    }

    /// The body read back as a value (to change it and make it again).
    ///
    /// # Errors
    /// Never for a body made here; a parse error otherwise.
    pub fn to_value(&self) -> Result<Value, StoreError> {
        serde_json::from_str(&self.text)
            .map_err(|e| StoreError::Encoding(format!("canonical JSON: {e}")))
    }
}

/// Writes a body in RFC 8785 form member by member, for a caller that knows
/// its shape, without building a [`Value`] first (a decision's record is
/// written this way on every decision). Canonical by construction: members
/// must come in strictly increasing order of their ASCII names (one out of
/// order is an error, never a record in another form), and each value is a
/// string, `null`, a list of strings, a nested object written the same way,
/// or a [`Value`] made canonical by [`canonical`]. Strings need no more than
/// `serde_json`'s escaping (see `already_canonical`).
#[derive(Debug, Default)]
pub struct CanonicalObject {
    text: Vec<u8>,
    last: Option<&'static str>,
    refs: Vec<String>,
    registered: Option<u64>,
}

impl CanonicalObject {
    /// An empty object.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens member `name`, after the one before it.
    fn name(&mut self, name: &'static str) -> Result<(), StoreError> {
        if !name.is_ascii() || self.last.is_some_and(|last| last >= name) {
            return Err(StoreError::Encoding(format!(
                "canonical JSON: member {name:?} out of order (after {:?})",
                self.last.unwrap_or_default()
            )));
        }
        self.text
            .push(if self.last.is_none() { b'{' } else { b',' });
        self.last = Some(name);
        self.put(name)?;
        self.text.push(b':');
        Ok(())
    }

    fn put<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), StoreError> {
        serde_json::to_writer(&mut self.text, v)
            .map_err(|e| StoreError::Encoding(format!("canonical JSON: {e}")))
    }

    /// Member `name`: a string, or `null`.
    ///
    /// # Errors
    /// A name out of order.
    pub fn string(&mut self, name: &'static str, v: Option<&str>) -> Result<&mut Self, StoreError> {
        self.name(name)?;
        self.put(&v)?;
        Ok(self)
    }

    /// Member `name`: a list of strings.
    ///
    /// # Errors
    /// A name out of order.
    pub fn strings<S: AsRef<str>>(
        &mut self,
        name: &'static str,
        v: &[S],
    ) -> Result<&mut Self, StoreError> {
        self.name(name)?;
        self.text.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.text.push(b',');
            }
            self.put(s.as_ref())?;
        }
        self.text.push(b']');
        Ok(self)
    }

    /// Member `chain`: the mandates of a chain, root first, which the record
    /// is then found by (as [`CanonicalBody::new`] finds them in a body's
    /// `chain`).
    ///
    /// # Errors
    /// A name out of order.
    pub fn chain<S: AsRef<str>>(&mut self, ids: &[S]) -> Result<&mut Self, StoreError> {
        self.strings("chain", ids)?;
        self.refs
            .extend(ids.iter().map(|id| id.as_ref().to_owned()));
        Ok(self)
    }

    /// Member `registered`: how many of the chain's mandates, from the
    /// root, the authority had registered when it decided; the record is
    /// then indexed under the deepest of them and the ones after it, not
    /// under every mandate of the chain ([`indexed_from`]).
    ///
    /// # Errors
    /// A name out of order.
    pub fn registered(&mut self, count: u64) -> Result<&mut Self, StoreError> {
        self.name("registered")?;
        self.put(&count)?;
        self.registered = Some(count);
        Ok(self)
    }

    /// Member `name`: any value, in its canonical form.
    ///
    /// # Errors
    /// A name out of order; a value that cannot be encoded.
    pub fn value(&mut self, name: &'static str, v: &Value) -> Result<&mut Self, StoreError> {
        self.name(name)?;
        self.text.extend_from_slice(canonical(v)?.as_bytes());
        Ok(self)
    }

    /// Member `name`: an object, written by `f` the same way.
    ///
    /// # Errors
    /// A name out of order, here or in `f`.
    pub fn object(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Self) -> Result<(), StoreError>,
    ) -> Result<&mut Self, StoreError> {
        self.name(name)?;
        let mut inner = Self {
            text: std::mem::take(&mut self.text),
            last: None,
            refs: Vec::new(),
            registered: None,
        };
        // Whatever `f` wrote before a refusal stands, closed: a refused
        // member is never written, so the text stays canonical either way.
        let written = f(&mut inner);
        inner.close();
        self.text = inner.text;
        written?;
        Ok(self)
    }

    fn close(&mut self) {
        if self.last.is_none() {
            self.text.push(b'{');
        }
        self.text.push(b'}');
    }

    /// The body.
    ///
    /// # Errors
    /// Never for what the members wrote (it is UTF-8).
    pub fn finish(mut self) -> Result<CanonicalBody, StoreError> {
        self.close();
        let text = String::from_utf8(self.text)
            .map_err(|e| StoreError::Encoding(format!("canonical JSON: {e}")))?;
        let mut refs = self.refs;
        refs.drain(..indexed_from(self.registered, refs.len()));
        Ok(CanonicalBody {
            text,
            refs,
            registered: self.registered.is_some(),
        })
    }
}

/// The canonical text of a record whose body is already canonical: the
/// members in RFC 8785 order (`at_ms`, `body`, `kind`, `mandate_id`, `seq`,
/// `tenant`), the body's text as it is. Equal to [`canonical`] of the
/// record as [`append`] builds it (a canonical object inside a canonical
/// object is canonical); `a_spliced_record_is_the_canonical_record` holds
/// them together.
fn spliced_record(
    seq: i64,
    at_ms: i64,
    tenant: Option<&str>,
    kind: &str,
    mandate_id: Option<&str>,
    body: &CanonicalBody,
) -> Result<String, StoreError> {
    // Integers below 2^53, strings and null: compact JSON is canonical.
    fn enc<T: Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
        serde_json::to_string(v).map_err(|e| StoreError::Encoding(format!("canonical JSON: {e}")))
    }
    Ok(format!(
        "{{\"at_ms\":{},\"body\":{},\"kind\":{},\"mandate_id\":{},\"seq\":{},\"tenant\":{}}}",
        enc(&at_ms)?,
        body.text,
        enc(kind)?,
        enc(&mandate_id)?,
        enc(&seq)?,
        enc(&tenant)?,
    ))
}

/// As [`append`], for a body made canonical beforehand: the record's
/// sequence number.
pub(crate) fn append_canonical(
    conn: &Connection,
    head: &mut AuditHead,
    at_ms: i64,
    tenant: Option<&str>,
    kind: &str,
    mandate_id: Option<&str>,
    body: &CanonicalBody,
) -> Result<i64, StoreError> {
    const EXACT: i64 = 1 << 53;
    if !(0..=EXACT).contains(&at_ms) || kind == DECISIONS || (body.registered && kind != DECISION) {
        // Never the case for a decision; the general path says what is
        // wrong, or indexes the body by its kind's rule.
        let value: Value = serde_json::from_str(&body.text)
            .map_err(|e| StoreError::Encoding(format!("canonical body: {e}")))?;
        return append(conn, head, at_ms, tenant, kind, mandate_id, value).map(|r| r.seq);
    }
    let seq = head.seq + 1;
    let text = spliced_record(seq, at_ms, tenant, kind, mandate_id, body)?;
    let mut refs: std::collections::BTreeSet<&str> = mandate_id.into_iter().collect();
    refs.extend(body.refs.iter().map(String::as_str));
    let row = Row {
        seq,
        at_ms,
        tenant,
        kind,
        mandate_id,
    };
    let hash = insert(conn, head, &row, &text, refs)?;
    *head = AuditHead { seq, hash };
    Ok(seq)
}

/// Indexes the records of a log written before the mandate index existed.
pub(crate) fn backfill_refs(conn: &Connection) -> Result<(), StoreError> {
    let needed: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM audit) AND NOT EXISTS (SELECT 1 FROM audit_refs)",
        params![],
        |r| r.get(0),
    )?;
    if !needed {
        return Ok(());
    }
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
    let mut insert = conn.prepare(
        "INSERT INTO audit_refs (mandate_id, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for r in stmt.query_map(params![], row_to_record)? {
        let r = r?;
        for id in refs(&r.kind, r.mandate_id.as_deref(), &r.body) {
            insert.execute(params![id, r.seq])?;
        }
    }
    Ok(())
}

/// A signed checkpoint's payload: the log's head, how many records it has,
/// and the SHA-256 of the previous checkpoint (its JWS text), so that
/// checkpoints form a chain and an older one restored in place of a newer
/// one is detected by anyone holding the newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last record's sequence number.
    pub seq: i64,
    /// The last record's hash.
    pub hash: String,
    /// Records in the log (equal to `seq`).
    #[serde(default)]
    pub records: i64,
    /// SHA-256 (hex) of the previous checkpoint's JWS; [`GENESIS`] for the first.
    #[serde(default)]
    pub prev: String,
}

/// The SHA-256 (hex) of a checkpoint's JWS text.
#[must_use]
pub fn checkpoint_digest(jws: &str) -> String {
    hex::encode(Sha256::digest(jws.trim().as_bytes()))
}

/// The digest of the checkpoint now in `path` ([`GENESIS`] when none).
pub(crate) fn current_checkpoint_digest(path: &Path) -> String {
    std::fs::read_to_string(path).map_or_else(|_| GENESIS.to_owned(), |t| checkpoint_digest(&t))
}

pub(crate) fn write_checkpoint(
    path: &Path,
    head: &AuditHead,
    key: &SigningKey,
    prev: &mut String,
) -> Result<(), StoreError> {
    let cp = Checkpoint {
        seq: head.seq,
        hash: head.hash.clone(),
        records: head.seq,
        prev: prev.clone(),
    };
    let payload = serde_json::to_vec(&cp).map_err(|e| StoreError::Encoding(e.to_string()))?;
    let jws = mandate_core::jws::sign(key, CHECKPOINT_TYP, &payload);
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| StoreError::io(path, &e);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(jws.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    *prev = checkpoint_digest(&jws);
    Ok(())
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Whether the log is intact and matches the checkpoint.
    pub intact: bool,
    /// Records checked.
    pub records: i64,
    /// The last record's hash.
    pub head_hash: String,
    /// The checkpoint's sequence number, when one was found.
    pub checkpoint_seq: Option<i64>,
    /// The first problem: the record's sequence number and what is wrong.
    pub first_problem: Option<(i64, String)>,
}

fn read_checkpoint(path: &Path, key: &VerifyingKey) -> Result<Option<AuditHead>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("checkpoint unreadable: {e}")),
    };
    decode_checkpoint(&text, key).map(|cp| {
        Some(AuditHead {
            seq: cp.seq,
            hash: cp.hash,
        })
    })
}

/// Verifies a checkpoint's signature with the authority's key and reads it.
///
/// # Errors
/// When it is not a checkpoint signed by `key`.
pub fn decode_checkpoint(text: &str, key: &VerifyingKey) -> Result<Checkpoint, String> {
    let algs = [Algorithm::EdDSA, Algorithm::ES256].into();
    let d = mandate_core::jws::decode(text.trim(), &algs, CHECKPOINT_TYP)
        .map_err(|e| format!("checkpoint: {e}"))?;
    if d.alg != key.algorithm() || !key.verify(d.signing_input.as_bytes(), &d.signature) {
        return Err("checkpoint: signature does not verify".into());
    }
    serde_json::from_slice(&d.payload).map_err(|e| format!("checkpoint: {e}"))
}

/// Checks the log against a checkpoint someone kept (a copy fetched from
/// `/v1/audit/checkpoint` earlier, or from a signal): the log must still
/// hold the record it names, with that hash. A log truncated and rolled back
/// to an older checkpoint verifies against its own (older) checkpoint, but
/// not against the newer one kept elsewhere.
///
/// # Errors
/// When the database cannot be read.
pub fn verify_against(
    conn: &Connection,
    kept: &str,
    key: &VerifyingKey,
) -> Result<Option<String>, StoreError> {
    let cp = match decode_checkpoint(kept, key) {
        Ok(cp) => cp,
        Err(e) => return Ok(Some(format!("the kept checkpoint: {e}"))),
    };
    if cp.seq == 0 {
        return Ok(None);
    }
    let hash: Option<String> = conn
        .query_row(
            "SELECT hash FROM audit WHERE seq = ?1",
            params![cp.seq],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match hash {
        None => Some(format!(
            "the kept checkpoint names record {} but the log does not have it (truncated or rolled back)",
            cp.seq
        )),
        Some(h) if h != cp.hash => Some(format!(
            "record {} does not match the kept checkpoint (rewritten)",
            cp.seq
        )),
        Some(_) => None,
    })
}

/// Checks the whole log: sequence, chaining, each record's hash and columns,
/// and the signed checkpoint.
///
/// # Errors
/// When the database cannot be read.
pub fn verify(
    conn: &Connection,
    checkpoint: &Path,
    key: &VerifyingKey,
) -> Result<VerifyReport, StoreError> {
    let mut indexed: std::collections::BTreeMap<i64, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for (seq, id) in conn.query("SELECT seq, mandate_id FROM audit_refs", params![], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })? {
        indexed.entry(seq).or_default().insert(id);
    }
    type Stored = (
        i64,
        i64,
        Option<String>,
        String,
        Option<String>,
        String,
        String,
        String,
    );
    let rows: Vec<Stored> = conn.query(
        "SELECT seq, at_ms, tenant, kind, mandate_id, record, prev_hash, hash FROM audit ORDER BY seq",
        params![],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        },
    )?;
    let mut expect_seq = 1i64;
    let mut prev = GENESIS.to_owned();
    let mut problem: Option<(i64, String)> = None;
    let mut hashes: Vec<String> = Vec::new();
    for (seq, at_ms, tenant, kind, mandate_id, record, prev_hash, hash) in rows {
        if problem.is_none() {
            let parsed: Option<Value> = serde_json::from_str(&record).ok();
            problem = if seq != expect_seq {
                Some((
                    seq,
                    format!("expected record {expect_seq}: a record is missing or out of order"),
                ))
            } else if prev_hash != prev {
                Some((seq, "does not chain to the previous record".into()))
            } else if chain_hash(&prev, &record) != hash {
                Some((seq, "its content does not match its hash (edited)".into()))
            } else if parsed.as_ref().is_none_or(|p| {
                p["seq"] != json!(seq)
                    || p["at_ms"] != json!(at_ms)
                    || p["tenant"] != json!(tenant)
                    || p["kind"] != json!(kind)
                    || p["mandate_id"] != json!(mandate_id)
            }) {
                Some((seq, "its columns do not match its record (edited)".into()))
            } else if parsed.as_ref().is_some_and(|p| {
                let body = p.get("body").unwrap_or(&Value::Null);
                let want = refs(&kind, mandate_id.as_deref(), body);
                let have = indexed.remove(&seq).unwrap_or_default();
                !want.iter().copied().eq(have.iter().map(String::as_str))
            }) {
                Some((
                    seq,
                    "its entries in the mandate index do not match it (edited)".into(),
                ))
            } else {
                None
            };
        }
        prev = hash.clone();
        hashes.push(hash);
        expect_seq = seq + 1;
    }
    let records = i64::try_from(hashes.len()).unwrap_or(i64::MAX);
    let mut checkpoint_seq = None;
    if problem.is_none() {
        match read_checkpoint(checkpoint, key) {
            Err(e) => problem = Some((records, e)),
            Ok(None) if records > 0 => {
                problem = Some((records, "no checkpoint, but the log has records".into()))
            }
            Ok(None) => {}
            Ok(Some(cp)) => {
                checkpoint_seq = Some(cp.seq);
                let at = usize::try_from(cp.seq - 1).ok().and_then(|i| hashes.get(i));
                if cp.seq > records {
                    problem = Some((
                        records,
                        format!(
                            "the checkpoint names record {} but the log ends at {records} (truncated)",
                            cp.seq
                        ),
                    ));
                } else if cp.seq > 0 && at != Some(&cp.hash) {
                    problem = Some((cp.seq, "does not match the signed checkpoint".into()));
                }
            }
        }
    }
    if problem.is_none()
        && let Some((seq, _)) = indexed.first_key_value()
    {
        problem = Some((
            *seq,
            "the mandate index names a record the log does not have".into(),
        ));
    }
    Ok(VerifyReport {
        intact: problem.is_none(),
        records,
        head_hash: prev,
        checkpoint_seq,
        first_problem: problem,
    })
}

fn row_to_record(r: &crate::sql::Row<'_>) -> crate::sql::Result<AuditRecord> {
    let record: String = r.get(5)?;
    let body = serde_json::from_str::<Value>(&record)
        .map(|v| v.get("body").cloned().unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Ok(AuditRecord {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        tenant: r.get(2)?,
        kind: r.get(3)?,
        mandate_id: r.get(4)?,
        body,
        prev_hash: r.get(6)?,
        hash: r.get(7)?,
        item: None,
    })
}

const COLUMNS: &str = "seq, at_ms, tenant, kind, mandate_id, record, prev_hash, hash";

/// Every record about a mandate or any descendant (known to the authority,
/// or presented in a decision's chain), in order, with batches of shipped
/// decisions [expanded](expand) to the decisions about the tree.
///
/// # Errors
/// When the query fails.
pub fn records_for_tree(
    conn: &Connection,
    mandate_id: &str,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE tree(id) AS (SELECT ?1 UNION SELECT m.id FROM mandates m JOIN tree t ON m.parent_id = t.id)
         SELECT id FROM tree",
    )?;
    let tree = stmt
        .query_map(params![mandate_id], |r| r.get::<_, String>(0))?
        .collect::<Result<std::collections::BTreeSet<String>, _>>()?;
    let ids = serde_json::to_string(&tree).map_err(|e| StoreError::Encoding(e.to_string()))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit WHERE seq IN
           (SELECT seq FROM audit_refs WHERE mandate_id IN (SELECT value FROM json_each(?1)))
           AND (tenant IS NOT DISTINCT FROM (SELECT tenant FROM mandates WHERE id = ?2)
                OR NOT EXISTS (SELECT 1 FROM mandates WHERE id = ?2))
         ORDER BY seq"
    ))?;
    // Only the mandate's own tenant's records: another tenant's enforcer
    // cannot write into this timeline by naming the id.
    let rows = stmt.query_map(params![ids, mandate_id], row_to_record)?;
    let mut out = Vec::new();
    for r in rows {
        let r = r?;
        if r.kind == DECISIONS {
            out.extend(
                expand(r)
                    .into_iter()
                    .filter(|d| chain_ids(&d.body).any(|id| tree.contains(id))),
            );
        } else {
            out.push(r);
        }
    }
    Ok(out)
}

/// When a decision was made: an enforcement point's own time (`body.at_ms`)
/// for decisions shipped from there, which reach the log after the fact;
/// the record's commit time otherwise.
#[must_use]
pub fn decided_at(r: &AuditRecord) -> i64 {
    r.body
        .get("at_ms")
        .and_then(Value::as_i64)
        .unwrap_or(r.at_ms)
}

/// Whether decision `d` came after lifecycle record `end`: by sequence for
/// the authority's own decisions, by decision time for shipped ones.
fn after(d: &AuditRecord, end: &AuditRecord) -> bool {
    if d.body.get("at_ms").is_some() {
        decided_at(d) >= end.at_ms
    } else {
        d.seq > end.seq
    }
}

/// The record that ended a mandate (`revoked`, `expired`, `completed` or
/// `superseded`, the first if more than one), in the mandate's own tenant.
/// It reads the mandate's transitions only (the `audit_transitions` index),
/// never its decisions, so it costs the same after a million decisions.
///
/// # Errors
/// When the query fails.
pub fn ended(conn: &Connection, mandate_id: &str) -> Result<Option<AuditRecord>, StoreError> {
    Ok(conn
        .query_row(ENDED, params![mandate_id], row_to_record)
        .optional()?)
}

/// [`ended`]'s query (a constant, for the test that reads its plan).
pub(crate) const ENDED: &str = concat!(
    "SELECT seq, at_ms, tenant, kind, mandate_id, record, prev_hash, hash FROM audit
       WHERE mandate_id = ?1 AND ",
    crate::transition_kinds!(),
    " AND kind IN ('revoked', 'expired', 'completed', 'superseded')
       AND (tenant IS NOT DISTINCT FROM (SELECT tenant FROM mandates WHERE id = ?1)
            OR NOT EXISTS (SELECT 1 FROM mandates WHERE id = ?1))
     ORDER BY seq LIMIT 1"
);

/// The record that ended a mandate ([`ended`]), and every decision
/// attempted under it or its delegations afterwards (shipped decisions are
/// placed by the time they were made). The mandate's tree is read only
/// when it has ended.
///
/// # Errors
/// When the query fails.
pub fn after_end(
    conn: &Connection,
    mandate_id: &str,
) -> Result<(Option<AuditRecord>, Vec<AuditRecord>), StoreError> {
    let Some(end) = ended(conn, mandate_id)? else {
        return Ok((None, Vec::new()));
    };
    let later = records_for_tree(conn, mandate_id)?
        .into_iter()
        .filter(|r| r.kind == "decision" && after(r, &end))
        .collect();
    Ok((Some(end), later))
}

/// The business events (`event` records) that changed any of `records`:
/// those named by a transition's `by` (`event:<id>`), each from the
/// transition's own tenant. Event ids come from the sources, so another
/// tenant may hold an event with the same id; it is never returned.
///
/// # Errors
/// When the query fails.
pub fn events_behind(
    conn: &Connection,
    records: &[AuditRecord],
) -> Result<Vec<AuditRecord>, StoreError> {
    let named: std::collections::BTreeSet<(Option<&str>, &str)> = records
        .iter()
        .filter_map(|r| {
            let by = r.body.get("by").and_then(Value::as_str)?;
            Some((r.tenant.as_deref(), by.strip_prefix("event:")?))
        })
        .collect();
    let mut stmt = conn.prepare_cached(EVENT_BY_ID)?;
    let mut out = Vec::new();
    for (tenant, id) in named {
        out.extend(
            stmt.query_map(params![id, tenant], row_to_record)?
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    Ok(out)
}

/// The mandates a business event changed in `tenant`, with what became of
/// each (`completed`, `suspended`, `revoked`), in log order: the
/// transitions whose `by` names the event (`event:<id>`), found by the
/// `audit_transitions_by` index.
///
/// # Errors
/// When the query fails.
pub fn changed_by_event(
    conn: &Connection,
    tenant: &str,
    event_id: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let by = format!("event:{event_id}");
    Ok(conn
        .prepare_cached(CHANGED_BY_EVENT)?
        .query_map(params![tenant, by], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get::<_, String>(1)?,
            ))
        })?
        .collect::<Result<_, _>>()?)
}

/// [`changed_by_event`]'s query.
pub(crate) const CHANGED_BY_EVENT: &str = concat!(
    "SELECT mandate_id, kind FROM audit
       WHERE json_extract(record, '$.body.by') = ?2 AND ",
    crate::transition_kinds!(),
    " AND tenant = ?1 AND kind IN ('completed', 'suspended', 'revoked') ORDER BY seq"
);

/// [`events_behind`]'s query, by the `audit_events` index.
pub(crate) const EVENT_BY_ID: &str =
    "SELECT seq, at_ms, tenant, kind, mandate_id, record, prev_hash, hash FROM audit
   WHERE kind = 'event' AND json_extract(record, '$.body.id') = ?1
     AND tenant IS NOT DISTINCT FROM ?2";

/// Every record as stored, in order (for export as JSON lines: each line
/// hashes as the log does).
///
/// # Errors
/// When the query fails.
pub fn all(conn: &Connection) -> Result<Vec<AuditRecord>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
    let rows = stmt.query_map(params![], row_to_record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every record in order, with batches of shipped decisions [expanded](expand).
///
/// # Errors
/// When the query fails.
pub fn all_expanded(conn: &Connection) -> Result<Vec<AuditRecord>, StoreError> {
    Ok(all(conn)?.into_iter().flat_map(expand).collect())
}

/// Parses a decision's reference: `SEQ` or `SEQ.ITEM`.
///
/// # Errors
/// When it is neither.
pub fn parse_reference(text: &str) -> Result<(i64, Option<u32>), String> {
    let bad = || format!("`{text}` is not SEQ or SEQ.ITEM");
    let (seq, item) = match text.split_once('.') {
        Some((s, i)) => (s, Some(i.parse::<u32>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let seq = seq.parse::<i64>().map_err(|_| bad())?;
    if seq < 1 {
        return Err(bad());
    }
    Ok((seq, item))
}

/// A mandate's transitions in log order, by the `audit_transitions` index.
pub(crate) const TRANSITIONS: &str = concat!(
    "SELECT seq, at_ms, tenant, kind, mandate_id, record, prev_hash, hash FROM audit
       WHERE mandate_id = ?1 AND ",
    crate::transition_kinds!(),
    " ORDER BY seq"
);

/// Whether the decision recorded at `seq` (item `item` of a batch) fell
/// inside a valid mandate: for every mandate of its chain, the last lifecycle
/// record before it. Returns the decision and, when the chain was not valid
/// then, the record that had ended or suspended it.
///
/// # Errors
/// When the query fails.
pub fn decision_validity(
    conn: &Connection,
    seq: i64,
    item: Option<u32>,
) -> Result<Option<(AuditRecord, Option<AuditRecord>)>, StoreError> {
    let record = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM audit WHERE seq = ?1"),
            params![seq],
            row_to_record,
        )
        .optional()?;
    let decision = match (record, item) {
        (Some(r), None) if r.kind == "decision" => Some(r),
        (Some(r), Some(i)) if r.kind == DECISIONS => expand(r).into_iter().nth(i as usize),
        _ => None,
    };
    let Some(decision) = decision else {
        return Ok(None);
    };
    let chain: Vec<String> = decision
        .body
        .get("chain")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut stmt = conn.prepare_cached(TRANSITIONS)?;
    let mut invalid = None;
    for id in &chain {
        let records = stmt
            .query_map(params![id], row_to_record)?
            .collect::<Result<Vec<_>, _>>()?;
        let last = records.into_iter().rev().find(|r| after(&decision, r));
        if let Some(r) = last.filter(|r| r.kind != "resumed") {
            invalid = Some(r);
            break;
        }
    }
    Ok(Some((decision, invalid)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn general(v: &Value) -> String {
        serde_json_canonicalizer::to_string(v).unwrap()
    }

    /// A member written out of order is refused, not written.
    #[test]
    fn a_canonical_object_refuses_members_out_of_order() {
        let mut o = CanonicalObject::new();
        o.string("b", Some("x")).unwrap();
        assert!(o.string("a", None).is_err());
        assert!(o.string("b", None).is_err());
        assert!(o.string("é", None).is_err());
        let mut o = CanonicalObject::new();
        let nested = o.object("n", |r| {
            r.string("z", None)?;
            r.string("y", None)?;
            Ok(())
        });
        assert!(nested.is_err());
        // What was refused is not there; what came before it still is.
        o.string("o", Some("after")).unwrap();
        assert_eq!(o.finish().unwrap().text, r#"{"n":{"z":null},"o":"after"}"#);
    }

    proptest! {
        /// What a canonical object writes is what `canonical` makes of the
        /// same body built as a value, chain and all.
        #[test]
        fn a_canonical_object_is_the_canonical_form_of_its_value(
            a in any::<String>(),
            b in prop::option::of(any::<String>()),
            chain in prop::collection::vec("[a-z0-9.-]{1,20}", 0..4),
            list in prop::collection::vec(any::<String>(), 0..4),
            inner in value(),
            empty in any::<bool>(),
            registered in prop::option::of(0u64..6),
        ) {
            let mut o = CanonicalObject::new();
            o.string("a", Some(&a)).unwrap()
                .string("b", b.as_deref()).unwrap()
                .chain(&chain).unwrap()
                .object("d", |r| {
                    if !empty {
                        r.string("x", Some(&a))?.strings("y", &list)?;
                    }
                    Ok(())
                }).unwrap()
                .strings("list", &list).unwrap();
            if let Some(k) = registered {
                o.registered(k).unwrap();
            }
            o.value("v", &inner).unwrap();
            let body = o.finish().unwrap();
            let d = if empty { json!({}) } else { json!({"x": a, "y": list}) };
            let mut v = json!({"a": a, "b": b, "chain": chain, "d": d, "list": list, "v": inner});
            if let Some(k) = registered {
                v["registered"] = json!(k);
            }
            let reference = CanonicalBody::new(&v).unwrap();
            prop_assert_eq!(&body.text, &reference.text);
            prop_assert_eq!(&body.refs, &reference.refs);
        }

        /// A record's hash is the lower-case hex of SHA-256 over the
        /// previous hash, a newline and the record, as logs written by every
        /// earlier release have it.
        #[test]
        fn the_chain_hash_is_lower_hex_of_sha256(prev in "[0-9a-f]{0,64}", record in ".{0,300}") {
            let mut input = format!("{prev}\n").into_bytes();
            input.extend_from_slice(record.as_bytes());
            prop_assert_eq!(chain_hash(&prev, &record), hex::encode(Sha256::digest(&input)));
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_canonicalizer_on_hard_cases() {
        for text in [
            r#"{"b":1,"a":[true,null,"x"],"c":{"z":-9007199254740992,"y":9007199254740992}}"#,
            r#"{"s":"\u0000\u0001\b\t\n\u000b\f\r\u001f\"\\/\u007f\u2028é😀"}"#,
            r#"{"big":9007199254740993,"neg":-9007199254740993,"u":18446744073709551615}"#,
            r#"{"f":1.5,"e":1e21,"z":-0.0,"small":1e-7}"#,
            r#"{"é":1,"z":2,"\ue000":3,"😀":4}"#,
            r#"[{},[],"",0,-1]"#,
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(canonical(&v).unwrap(), general(&v), "{text}");
        }
        let batch: Value = serde_json::from_str(
            r#"{"records":[{"at_ms":1764460000000,"chain":["mnd-1"],"decision":"allow"}]}"#,
        )
        .unwrap();
        assert!(
            already_canonical(&batch),
            "a batch of decisions takes the fast path"
        );
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1_000_000i64..1_000_000).prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[ -~]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof!["[a-z_]{0,6}", any::<String>()],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn canonical_is_rfc_8785_whichever_path_it_takes(v in value()) {
            prop_assert_eq!(canonical(&v).unwrap(), general(&v));
        }

        #[test]
        fn a_spliced_record_is_the_canonical_record(
            body in value(),
            seq in 1i64..(1 << 53),
            at_ms in 0i64..(1 << 53),
            tenant in prop::option::of(any::<String>()),
            kind in prop_oneof!["[a-z_]{1,12}", any::<String>()],
            mandate_id in prop::option::of(any::<String>()),
        ) {
            // What the writer hashes when a worker canonicalized the body
            // must be what it hashes when it builds the record itself, and
            // what `verify` recomputes.
            let record = json!({
                "seq": seq, "at_ms": at_ms, "tenant": tenant, "kind": kind,
                "mandate_id": mandate_id, "body": body,
            });
            let pre = super::CanonicalBody::new(&body).unwrap();
            let spliced = super::spliced_record(
                seq, at_ms, tenant.as_deref(), &kind, mandate_id.as_deref(), &pre,
            ).unwrap();
            prop_assert_eq!(&spliced, &general(&record));
            prop_assert_eq!(spliced, canonical(&record).unwrap());
        }
    }
}

/// Where a page of the log stops: strictly before record `seq` (before item
/// `item` of it, for a batch of shipped decisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The record.
    pub seq: i64,
    /// The item of a batch; `None` for a whole record.
    pub item: Option<u32>,
}

impl Position {
    /// Where `r` stands.
    #[must_use]
    pub fn of(r: &AuditRecord) -> Self {
        Self {
            seq: r.seq,
            item: r.item,
        }
    }

    /// Whether `r` comes after this position in newest-first order.
    fn precedes(self, r: &AuditRecord) -> bool {
        r.seq < self.seq
            || (r.seq == self.seq && matches!((self.item, r.item), (Some(a), Some(b)) if b < a))
    }
}

/// One page of a tenant's log, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    /// The records (batches expanded), newest first.
    pub records: Vec<AuditRecord>,
    /// Where the next page starts, when the log may go on.
    pub next: Option<Position>,
}

/// Records scanned at most for one page; a page that filters out most of
/// the log ends early with a position to go on from.
pub const SCAN_BUDGET: usize = 5_000;

/// A page of `tenant`'s log, newest first, batches of shipped decisions
/// expanded: up to `limit` records before `before` that `keep` accepts,
/// restricted to the tree of `mandate` (itself and its descendants) when
/// given. At most [`SCAN_BUDGET`] stored records are read; `next` is set
/// whenever records may remain.
///
/// # Errors
/// When the query fails.
pub fn page(
    conn: &Connection,
    tenant: &str,
    mandate: Option<&str>,
    before: Option<Position>,
    limit: usize,
    mut keep: impl FnMut(&AuditRecord) -> bool,
) -> Result<LogPage, StoreError> {
    const CHUNK: i64 = 256;
    let tree: Option<std::collections::BTreeSet<String>> = match mandate {
        Some(id) => {
            let mut stmt = conn.prepare_cached(
                "WITH RECURSIVE tree(id) AS (SELECT ?1 UNION SELECT m.id FROM mandates m JOIN tree t ON m.parent_id = t.id)
                 SELECT id FROM tree",
            )?;
            Some(
                stmt.query_map(params![id], |r| r.get::<_, String>(0))?
                    .collect::<Result<_, _>>()?,
            )
        }
        None => None,
    };
    let ids = match &tree {
        Some(t) => Some(serde_json::to_string(t).map_err(|e| StoreError::Encoding(e.to_string()))?),
        None => None,
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit WHERE tenant = ?1 AND seq <= ?2
           AND (CAST(?3 AS TEXT) IS NULL OR seq IN
                (SELECT seq FROM audit_refs WHERE mandate_id IN (SELECT value FROM json_each(?3))))
         ORDER BY seq DESC LIMIT ?4"
    ))?;
    let mut upto = before.map_or(i64::MAX, |p| p.seq);
    let mut scanned = 0usize;
    let mut out = Vec::new();
    loop {
        let rows = stmt
            .query_map(params![tenant, upto, ids, CHUNK], row_to_record)?
            .collect::<Result<Vec<_>, _>>()?;
        let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) == CHUNK;
        for r in rows {
            scanned += 1;
            let seq = r.seq;
            upto = seq - 1;
            let mut items = expand(r);
            items.reverse();
            for item in items {
                if before.is_some_and(|p| !p.precedes(&item)) {
                    continue;
                }
                if let Some(t) = &tree
                    && item.item.is_some()
                    && !chain_ids(&item.body).any(|id| t.contains(id))
                {
                    continue;
                }
                if !keep(&item) {
                    continue;
                }
                out.push(item);
                if out.len() == limit {
                    let next = out.last().map(Position::of);
                    return Ok(LogPage { records: out, next });
                }
            }
            if scanned >= SCAN_BUDGET && upto > 0 {
                return Ok(LogPage {
                    records: out,
                    next: Some(Position { seq, item: None }),
                });
            }
        }
        if !full || upto < 1 {
            return Ok(LogPage {
                records: out,
                next: None,
            });
        }
    }
}

#[cfg(test)]
mod lookups {
    //! What a console page, a timeline or an explanation asks of the log
    //! reads transitions and business events, never the decisions, however
    //! many of those the log holds.
    #![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

    use super::*;
    use crate::Store;

    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        conn.sqlite_plan(sql).unwrap().unwrap()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mandate-lookups-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn key() -> SigningKey {
        SigningKey::from_seed(Algorithm::EdDSA, [7; 32])
    }

    #[test]
    fn each_lookup_goes_through_its_index_and_never_scans_the_log() {
        let dir = temp("plans");
        let store = Store::open(&dir, key()).unwrap();
        let checks = [
            (ENDED, "audit_transitions"),
            (TRANSITIONS, "audit_transitions"),
            (CHANGED_BY_EVENT, "audit_transitions_by"),
            (EVENT_BY_ID, "audit_events"),
        ];
        store
            .read(|c| {
                for (sql, index) in checks {
                    let steps = plan(c, sql);
                    assert!(
                        steps.iter().any(|s| s.contains(&format!("INDEX {index} "))),
                        "{sql}\n{steps:?}"
                    );
                    assert!(
                        !steps.iter().any(|s| s.starts_with("SCAN audit")),
                        "{sql}\n{steps:?}"
                    );
                }
                // The index of every record by mandate is gone: decisions
                // are found by `audit_refs`, transitions by their own index.
                let gone: bool = c.query_row(
                    "SELECT NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'audit_mandate')",
                    params![],
                    |r| r.get(0),
                )?;
                assert!(gone);
                Ok(())
            })
            .unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The same lookups on PostgreSQL (where `scripts/test` gives a
    /// throwaway cluster): with sequential scans priced out, each one is an
    /// index scan of its own index, so the partial indexes' conditions are
    /// ones PostgreSQL proves from the queries.
    #[test]
    fn on_postgresql_each_lookup_can_use_its_index() {
        let Some(url) = crate::test_postgres("store_lookups") else {
            return;
        };
        let dir = temp("pg-plans");
        let store = Store::open_postgres(&dir, &url, key()).unwrap();
        let checks = [
            (ENDED, "audit_transitions", 1),
            (TRANSITIONS, "audit_transitions", 1),
            (CHANGED_BY_EVENT, "audit_transitions_by", 2),
            (EVENT_BY_ID, "audit_events", 2),
        ];
        store
            .read(|c| {
                c.execute_batch("SET enable_seqscan = off")?;
                for (sql, index, n) in checks {
                    let args = ["x", "y"];
                    let params: Vec<&dyn crate::sql::ToValue> = args
                        .iter()
                        .take(n)
                        .map(|a| a as &dyn crate::sql::ToValue)
                        .collect();
                    let steps: Vec<String> = c
                        .prepare(&format!("EXPLAIN {sql}"))?
                        .query_map(&params, |r| r.get::<_, String>(0))?
                        .collect::<Result<_, _>>()?;
                    assert!(
                        steps
                            .iter()
                            .any(|s| s.contains(&format!("Index Scan using {index} on audit"))),
                        "{sql}\n{steps:#?}"
                    );
                }
                c.execute_batch("RESET enable_seqscan")?;
                Ok(())
            })
            .unwrap();
        std::thread::spawn(move || drop(store)).join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A replica back after a while reads the state changes since, through
    /// the index that decisions never enter, not every decision since: with
    /// PostgreSQL free to choose (its statistics fresh), the catch-up over
    /// a log of 3,000 decisions and four transitions takes that index, and
    /// gets the four.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgresql_a_replica_catching_up_reads_state_changes_not_decisions() {
        let Some(url) = crate::test_postgres("store_catch_up") else {
            return;
        };
        let dir = temp("pg-catch-up");
        let store = Store::open_postgres(&dir, &url, key()).unwrap();
        store
            .write(|tx| {
                for i in 0..3000 {
                    tx.audit(
                        Some("t"),
                        DECISION,
                        Some("m1"),
                        json!({"chain": ["m1"], "i": i}),
                    )?;
                    if i % 1000 == 500 {
                        tx.audit(Some("t"), "suspended", Some("m1"), json!({}))?;
                    }
                }
                tx.audit(Some("t"), "revoked", Some("m1"), json!({}))?;
                Ok(())
            })
            .await
            .unwrap();
        let (steps, kinds) = tokio::task::spawn_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute("ANALYZE audit").unwrap();
            let (from, head) = (0i64, i64::MAX);
            let steps: Vec<String> = c
                .query(
                    &format!("EXPLAIN {}", crate::schema::CATCH_UP),
                    &[&from, &head],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let kinds: Vec<String> = c
                .query(crate::schema::CATCH_UP, &[&from, &head])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            (steps, kinds)
        })
        .await
        .unwrap();
        assert!(
            steps.iter().any(|s| s.contains("audit_state_changes")),
            "{steps:#?}"
        );
        assert_eq!(kinds, ["suspended", "suspended", "suspended", "revoked"]);
        std::thread::spawn(move || drop(store)).join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn how_a_mandate_ended_is_found_among_its_decisions() {
        let dir = temp("ended");
        let store = Store::open(&dir, key()).unwrap();
        let decide = |n: usize| {
            (0..n)
                .map(|i| serde_json::json!({"chain": ["m1"], "i": i}))
                .collect::<Vec<_>>()
        };
        let (before, after) = (decide(300), decide(7));
        store
            .write(move |tx| {
                for b in before {
                    tx.audit(Some("t"), "decision", Some("m1"), b)?;
                }
                tx.audit(Some("t"), "decision", Some("m2"), json!({"chain": ["m2"]}))?;
                tx.audit(
                    Some("t"),
                    "suspended",
                    Some("m1"),
                    json!({"by": "event:e1"}),
                )?;
                tx.audit(Some("t"), "resumed", Some("m1"), json!({}))?;
                tx.audit(Some("t"), "event", None, json!({"id": "e2"}))?;
                tx.audit(Some("t"), "revoked", Some("m1"), json!({"by": "event:e2"}))?;
                tx.audit(Some("t"), "completed", Some("m1"), json!({}))?;
                for b in after {
                    tx.audit(Some("t"), "decision", Some("m1"), b)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        store
            .read(|c| {
                let end = ended(c, "m1")?.unwrap();
                assert_eq!((end.kind.as_str(), end.seq), ("revoked", 305));
                assert_eq!(ended(c, "m2")?, None);
                let (end, later) = after_end(c, "m1")?;
                assert_eq!(end.map(|r| r.seq), Some(305));
                assert_eq!(later.len(), 7);
                assert!(later.iter().all(|r| r.kind == "decision" && r.seq > 306));
                assert_eq!(after_end(c, "m2")?, (None, Vec::new()));
                let kinds: Vec<String> = c
                    .prepare_cached(TRANSITIONS)?
                    .query_map(params!["m1"], |r| r.get::<_, String>(3))?
                    .collect::<Result<_, _>>()?;
                assert_eq!(kinds, ["suspended", "resumed", "revoked", "completed"]);
                assert_eq!(
                    changed_by_event(c, "t", "e2")?,
                    [("m1".to_owned(), "revoked".to_owned())]
                );
                assert_eq!(
                    changed_by_event(c, "t", "e1")?,
                    [("m1".to_owned(), "suspended".to_owned())]
                );
                assert_eq!(changed_by_event(c, "other", "e2")?, []);
                let shown = events_behind(c, &[end_of(c, "m1")])?;
                assert_eq!(shown.len(), 1);
                assert_eq!(shown[0].body["id"], "e2");
                Ok(())
            })
            .unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The mandates `audit_refs` files record `seq` under.
    fn filed(c: &Connection, seq: i64) -> Vec<String> {
        c.query(
            "SELECT mandate_id FROM audit_refs WHERE seq = ?1 ORDER BY mandate_id",
            params![seq],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decision_is_filed_under_its_deepest_registered_mandate_and_nothing_else_is() {
        let dir = temp("registered");
        let store = Store::open(&dir, key()).unwrap();
        const CHAIN: [&str; 3] = ["r", "r.c", "r.c.g"];
        let counted = |n: Value| json!({"chain": CHAIN, "registered": n});
        let mut o = CanonicalObject::new();
        o.chain(&CHAIN).unwrap().registered(3).unwrap();
        let written = o.finish().unwrap();
        assert_eq!(written.refs(), ["r.c.g"]);
        let as_value = CanonicalBody::new(&counted(json!(3))).unwrap();
        let seqs = store
            .write(move |tx| {
                let leaf = Some("r.c.g");
                Ok([
                    tx.audit(Some("t"), DECISION, leaf, counted(json!(2)))?.seq,
                    tx.audit(Some("t"), DECISION, leaf, counted(json!(1)))?.seq,
                    tx.audit(Some("t"), DECISION, leaf, counted(json!(0)))?.seq,
                    tx.audit(Some("t"), DECISION, leaf, counted(json!(4)))?.seq,
                    tx.audit(Some("t"), DECISION, leaf, counted(json!("3")))?
                        .seq,
                    tx.audit(Some("t"), DECISION, leaf, json!({"chain": CHAIN}))?
                        .seq,
                    // Only a decision the authority took is filed by its count.
                    tx.audit(Some("t"), "action_search", leaf, counted(json!(3)))?
                        .seq,
                    tx.audit(
                        Some("t"),
                        DECISIONS,
                        None,
                        json!({"records": [counted(json!(3))]}),
                    )?
                    .seq,
                    tx.audit_canonical(Some("t"), DECISION, leaf, &written)?,
                    tx.audit_canonical(Some("t"), "action_search", leaf, &as_value)?,
                ])
            })
            .await
            .unwrap();
        let all = CHAIN;
        let expected: [&[&str]; 10] = [
            &["r.c", "r.c.g"],
            &all,
            &all,
            &all,
            &all,
            &all,
            &all,
            &all,
            &["r.c.g"],
            &all,
        ];
        store
            .read(move |c| {
                for (seq, want) in seqs.iter().zip(expected) {
                    assert_eq!(filed(c, *seq), want, "record {seq}");
                }
                Ok(())
            })
            .unwrap();
        // Stopped, the writer has signed its last checkpoint.
        std::thread::spawn(move || drop(store)).join().unwrap();
        let c = crate::open_read_only(&dir).unwrap();
        let report = verify(
            &c,
            &crate::checkpoint_path(&dir),
            &key().verifying_key().unwrap(),
        )
        .unwrap();
        assert!(report.intact, "{report:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn end_of(c: &Connection, id: &str) -> AuditRecord {
        ended(c, id).unwrap().unwrap()
    }
}
