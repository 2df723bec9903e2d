//! The enforcement point's local copy of mandate state, fed by the
//! authority's signals, with a cursor and a staleness bound.
//!
//! - A SET is applied only if it verifies with the authority's key, names
//!   the authority as `iss` and this stream as `aud`, and carries the next
//!   sequence number. An older one (replayed) is ignored; a newer one means a
//!   signal was missed: the replica is stale until it is resynchronised from
//!   a snapshot.
//! - Terminal states are sticky: no replayed, reordered or forged SET, and
//!   no snapshot, revives a revoked, expired, completed or superseded mandate.
//! - When nothing (not even a heartbeat or an empty poll) has arrived for
//!   longer than the staleness bound, every decision denies `state_stale`.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mandate_core::condition::Facts;
use mandate_core::decision::{Decision, decide};
use mandate_core::id::MandateId;
use mandate_core::keys::{Algorithm, KeySet};
use mandate_core::request::EvaluationRequest;
use mandate_core::state::{MandateState, StateDocument, StateSnapshot};
use mandate_core::timestamp::UnixTime;
use serde_json::Value;

/// The prefix of the authority's event type URIs.
pub const EVENT_PREFIX: &str = "https://schemas.mandate.dev/secevent/v1/";

/// Why a SET was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// Not a valid SET from the authority (signature, `typ`, `iss`, `aud`).
    #[error("SET refused: {0}")]
    Invalid(String),
}

/// What applying a SET did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The next in sequence: applied.
    Applied,
    /// Already seen: ignored.
    Duplicate,
    /// A sequence number was skipped: the replica is stale until resynced.
    Gap,
    /// A heartbeat: contact, nothing to apply.
    Heartbeat,
}

fn is_terminal(s: MandateState) -> bool {
    matches!(
        s,
        MandateState::Revoked
            | MandateState::Expired
            | MandateState::Completed
            | MandateState::Superseded
    )
}

#[derive(Debug)]
struct Inner {
    snapshot: Arc<StateSnapshot>,
    cursor: i64,
    synced: bool,
    gap: bool,
    last_contact: Option<Instant>,
    terminal: std::collections::HashMap<MandateId, MandateState>,
}

/// The replica.
#[derive(Debug)]
pub struct Replica {
    keys: KeySet,
    issuer: String,
    audience: RwLock<String>,
    staleness: Duration,
    inner: RwLock<Inner>,
}

fn is_fresh(inner: &Inner, staleness: Duration) -> bool {
    inner.synced && !inner.gap && inner.last_contact.is_some_and(|t| t.elapsed() <= staleness)
}

impl Replica {
    /// A replica trusting the authority's `keys` and `issuer`, stale until
    /// its first snapshot.
    #[must_use]
    pub fn new(keys: KeySet, issuer: &str, staleness: Duration) -> Self {
        Self {
            keys,
            issuer: issuer.to_owned(),
            audience: RwLock::new(String::new()),
            staleness,
            inner: RwLock::new(Inner {
                snapshot: Arc::new(StateSnapshot::new()),
                cursor: 0,
                synced: false,
                gap: false,
                last_contact: None,
                terminal: std::collections::HashMap::new(),
            }),
        }
    }

    /// Sets the stream audience SETs must carry (`stream:<id>`).
    pub fn set_audience(&self, aud: &str) {
        if let Ok(mut a) = self.audience.write() {
            *a = aud.to_owned();
        }
    }

    /// The last applied sequence number.
    #[must_use]
    pub fn cursor(&self) -> i64 {
        self.inner.read().map(|i| i.cursor).unwrap_or(0)
    }

    /// Whether decisions may be made: synced, no unrepaired gap, and contact
    /// within the staleness bound.
    #[must_use]
    pub fn is_fresh(&self) -> bool {
        self.inner
            .read()
            .is_ok_and(|i| is_fresh(&i, self.staleness))
    }

    /// Whether the replica needs a snapshot (never synced, or a gap).
    #[must_use]
    pub fn needs_snapshot(&self) -> bool {
        self.inner
            .read()
            .map(|i| !i.synced || i.gap)
            .unwrap_or(true)
    }

    /// Records contact with the authority (an empty poll, a heartbeat).
    pub fn touch(&self) {
        if let Ok(mut i) = self.inner.write() {
            i.last_contact = Some(Instant::now());
        }
    }

    /// Installs a snapshot: the state document and the sequence it reflects.
    /// Terminal states already known stay terminal.
    ///
    /// # Errors
    /// When the document's facts cannot be converted.
    pub fn install(&self, cursor: i64, doc: StateDocument) -> Result<(), String> {
        let mut snap = StateSnapshot::from_document(doc).map_err(|e| e.to_string())?;
        let mut inner = self
            .inner
            .write()
            .map_err(|_| "replica lock poisoned".to_owned())?;
        for (id, st) in &inner.terminal {
            snap.set_state(id.clone(), *st);
        }
        inner.snapshot = Arc::new(snap);
        inner.cursor = cursor;
        inner.synced = true;
        inner.gap = false;
        inner.last_contact = Some(Instant::now());
        Ok(())
    }

    /// Verifies and applies one SET.
    ///
    /// # Errors
    /// When the SET is not a valid SET of the authority for this stream.
    pub fn apply_set(&self, set: &str) -> Result<Applied, SetError> {
        let algs: BTreeSet<Algorithm> = [Algorithm::EdDSA, Algorithm::ES256].into();
        let d = mandate_core::jws::decode(set.trim(), &algs, "secevent+jwt")
            .map_err(|e| SetError::Invalid(e.to_string()))?;
        let key = d
            .kid
            .as_deref()
            .and_then(|k| self.keys.get(k))
            .ok_or_else(|| SetError::Invalid("unknown kid".into()))?;
        if key.algorithm() != d.alg || !key.verify(d.signing_input.as_bytes(), &d.signature) {
            return Err(SetError::Invalid("signature does not verify".into()));
        }
        let claims: Value =
            serde_json::from_slice(&d.payload).map_err(|e| SetError::Invalid(e.to_string()))?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(SetError::Invalid("iss".into()));
        }
        let aud = self.audience.read().map(|a| a.clone()).unwrap_or_default();
        if !aud.is_empty() && claims.get("aud").and_then(Value::as_str) != Some(aud.as_str()) {
            return Err(SetError::Invalid("aud".into()));
        }
        let Some((uri, event)) = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|e| e.iter().next())
        else {
            return Err(SetError::Invalid("events".into()));
        };
        let kind = uri
            .strip_prefix(EVENT_PREFIX)
            .ok_or_else(|| SetError::Invalid(format!("unknown event type `{uri}`")))?;
        let seq = event
            .get("seq")
            .and_then(Value::as_i64)
            .ok_or_else(|| SetError::Invalid("seq".into()))?;
        let mut inner = self
            .inner
            .write()
            .map_err(|_| SetError::Invalid("replica lock poisoned".into()))?;
        inner.last_contact = Some(Instant::now());
        if kind == "heartbeat" {
            let head = event.get("head").and_then(Value::as_i64).unwrap_or(seq);
            if head > inner.cursor {
                inner.gap = true;
                return Ok(Applied::Gap);
            }
            return Ok(Applied::Heartbeat);
        }
        if seq <= inner.cursor {
            return Ok(Applied::Duplicate);
        }
        let next = seq == inner.cursor + 1;
        let mandate = event
            .get("mandate_id")
            .and_then(Value::as_str)
            .and_then(|m| MandateId::new(m).ok());
        let state = MandateState::from_name(kind);
        // Out of order, only what restricts is applied (terminal states);
        // everything else waits for the resync.
        if !next {
            inner.gap = true;
            if let Some(id) = mandate.filter(|_| is_terminal(state)) {
                inner.terminal.insert(id.clone(), state);
                Arc::make_mut(&mut inner.snapshot).set_state(id, state);
            }
            return Ok(Applied::Gap);
        }
        let snap = Arc::make_mut(&mut inner.snapshot);
        let mut record_terminal = None;
        match (kind, mandate) {
            // Terminal is sticky: nothing after it revives a mandate.
            ("issued" | "resumed", Some(id)) if !is_terminal(snap.state(&id)) => {
                snap.set_state(id, MandateState::Active);
            }
            ("suspended", Some(id)) if !is_terminal(snap.state(&id)) => {
                snap.set_state(id, MandateState::Suspended);
            }
            ("revoked" | "expired" | "completed" | "superseded", Some(id)) => {
                snap.set_state(id.clone(), state);
                record_terminal = Some((id, state));
            }
            ("consumed", Some(id)) => snap.consume(id),
            ("facts-changed", _) => {
                if let Some(f) = event
                    .get("facts")
                    .cloned()
                    .and_then(|f| Facts::from_json(f).ok())
                {
                    snap.set_facts(f);
                }
            }
            ("business-event", _) => {
                let ty = event
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let subject = event.get("subject").and_then(Value::as_str);
                let at = event
                    .get("occurred_ms")
                    .and_then(Value::as_i64)
                    .and_then(|ms| UnixTime::from_secs(ms.div_euclid(1000)).ok());
                snap.add_event_at(ty, subject, at);
            }
            _ => {}
        }
        if let Some((id, st)) = record_terminal {
            inner.terminal.insert(id, st);
        }
        inner.cursor = seq;
        Ok(Applied::Applied)
    }

    /// A mandate's state, or `None` when the replica is stale.
    #[must_use]
    pub fn state_of(&self, id: &MandateId) -> Option<MandateState> {
        self.fresh_snapshot().map(|s| s.state(id))
    }

    /// The current snapshot, or `None` when stale.
    #[must_use]
    pub fn fresh_snapshot(&self) -> Option<Arc<StateSnapshot>> {
        let inner = self.inner.read().ok()?;
        is_fresh(&inner, self.staleness).then(|| Arc::clone(&inner.snapshot))
    }
}

/// Decides with the replica: a stale replica denies `state_stale`.
#[must_use]
pub fn decide_with(
    verifier: &mandate_core::chain::Verifier,
    replica: &Replica,
    presented: &str,
    request: &EvaluationRequest,
    token: Option<&str>,
    now: UnixTime,
) -> Decision {
    let chain = match verifier.verify(presented) {
        Ok(c) => c,
        Err(e) => return Decision::from_chain_error(&e),
    };
    match replica.fresh_snapshot() {
        Some(snap) => decide(&chain, request, token, &snap, now),
        None => Decision {
            allow: false,
            reasons: vec!["state_stale".into()],
            chain: chain.ids(),
            obligations: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_authority::signals::{Signal, to_set};
    use mandate_core::keys::SigningKey;
    use serde_json::json;

    fn authority() -> SigningKey {
        SigningKey::from_seed(Algorithm::EdDSA, [1; 32])
    }

    fn replica() -> Replica {
        let mut keys = KeySet::new();
        keys.insert(authority().verifying_key().unwrap());
        let r = Replica::new(keys, "https://mandate.test", Duration::from_secs(60));
        r.set_audience("stream:s1");
        r.install(0, StateDocument::default()).unwrap();
        r
    }

    fn set_by(key: &SigningKey, seq: i64, kind: &str, id: &str) -> String {
        let s = Signal {
            seq,
            kind: kind.into(),
            mandate_id: Some(id.into()),
            body: json!({"mandate_id": id, "state": kind}),
            at_ms: 0,
        };
        to_set(key, "https://mandate.test", "stream:s1", "acme", &s)
    }

    fn set(seq: i64, kind: &str, id: &str) -> String {
        set_by(&authority(), seq, kind, id)
    }

    fn state(r: &Replica, id: &str) -> MandateState {
        r.fresh_snapshot().map_or(MandateState::Unknown, |s| {
            s.state(&MandateId::new(id).unwrap())
        })
    }

    #[test]
    fn applies_signals_in_order_and_ignores_replays() {
        let r = replica();
        assert_eq!(
            r.apply_set(&set(1, "suspended", "m1")).unwrap(),
            Applied::Applied
        );
        assert_eq!(state(&r, "m1"), MandateState::Suspended);
        assert_eq!(
            r.apply_set(&set(2, "resumed", "m1")).unwrap(),
            Applied::Applied
        );
        assert_eq!(state(&r, "m1"), MandateState::Active);
        assert_eq!(
            r.apply_set(&set(1, "suspended", "m1")).unwrap(),
            Applied::Duplicate
        );
        assert_eq!(state(&r, "m1"), MandateState::Active);
        assert!(r.is_fresh());
    }

    #[test]
    fn a_gap_makes_the_replica_stale_until_a_snapshot() {
        let r = replica();
        assert_eq!(
            r.apply_set(&set(2, "suspended", "m1")).unwrap(),
            Applied::Gap
        );
        assert!(!r.is_fresh());
        assert!(r.needs_snapshot());
        r.install(2, StateDocument::default()).unwrap();
        assert!(r.is_fresh());
    }

    #[test]
    fn terminal_states_are_sticky_against_replay_reorder_and_snapshots() {
        let r = replica();
        r.apply_set(&set(1, "revoked", "m1")).unwrap();
        assert_eq!(
            r.apply_set(&set(2, "resumed", "m1")).unwrap(),
            Applied::Applied
        );
        assert_eq!(state(&r, "m1"), MandateState::Revoked);
        // Out of order, a terminal signal still restricts at once.
        assert_eq!(
            r.apply_set(&set(9, "completed", "m2")).unwrap(),
            Applied::Gap
        );
        let doc: StateDocument =
            serde_json::from_value(json!({"states": {"m1": "active", "m2": "active"}})).unwrap();
        r.install(9, doc).unwrap();
        assert_eq!(state(&r, "m1"), MandateState::Revoked);
        assert_eq!(state(&r, "m2"), MandateState::Completed);
    }

    #[test]
    fn forged_and_misaddressed_sets_are_refused() {
        let r = replica();
        let intruder = SigningKey::from_seed(Algorithm::EdDSA, [9; 32]).with_kid(authority().kid());
        assert!(r.apply_set(&set_by(&intruder, 1, "resumed", "m1")).is_err());
        let s = Signal {
            seq: 1,
            kind: "revoked".into(),
            mandate_id: Some("m1".into()),
            body: json!({}),
            at_ms: 0,
        };
        assert!(
            r.apply_set(&to_set(
                &authority(),
                "https://mandate.test",
                "stream:other",
                "acme",
                &s
            ))
            .is_err()
        );
        assert!(
            r.apply_set(&to_set(
                &authority(),
                "https://evil.test",
                "stream:s1",
                "acme",
                &s
            ))
            .is_err()
        );
        assert!(r.apply_set("not a set").is_err());
        assert_eq!(r.cursor(), 0);
    }

    #[test]
    fn a_heartbeat_ahead_of_the_cursor_reveals_a_missed_signal() {
        let r = replica();
        let hb = Signal {
            seq: 3,
            kind: "heartbeat".into(),
            mandate_id: None,
            body: json!({"head": 3}),
            at_ms: 0,
        };
        assert_eq!(
            r.apply_set(&to_set(
                &authority(),
                "https://mandate.test",
                "stream:s1",
                "acme",
                &hb
            ))
            .unwrap(),
            Applied::Gap
        );
        assert!(!r.is_fresh());
    }

    #[test]
    fn a_replica_that_never_synced_or_lost_contact_is_stale() {
        let mut keys = KeySet::new();
        keys.insert(authority().verifying_key().unwrap());
        let r = Replica::new(keys, "https://mandate.test", Duration::from_millis(30));
        assert!(!r.is_fresh());
        r.install(0, StateDocument::default()).unwrap();
        assert!(r.is_fresh());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!r.is_fresh());
        r.touch();
        assert!(r.is_fresh());
    }
}
