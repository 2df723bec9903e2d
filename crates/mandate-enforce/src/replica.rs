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
//! - When nothing *new* (the next SET, a fresh heartbeat, or an empty poll
//!   answered by the authority) has arrived for longer than the staleness
//!   bound, every decision denies `state_stale`. A replayed SET or heartbeat
//!   is not news: it never refreshes liveness. A heartbeat counts only when
//!   its `beat` is higher than any seen and its `iat` is recent.
//! - A SET's `iat` may not be in the future (beyond [`IAT_LEEWAY`]).
//! - A signal that verifies but cannot be applied (facts this replica cannot
//!   convert, say) makes the replica stale until a snapshot: it is never
//!   skipped while the cursor moves on.
//! - A `stream-updated` SET saying the stream is paused or disabled makes
//!   the replica stale at once: silence by pause is not freshness.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mandate_core::condition::Facts;
use mandate_core::decision::{Decision, decide};
use mandate_core::id::MandateId;
use mandate_core::keys::{Algorithm, KeySet};
use mandate_core::pop;

/// The SSF 1.0 verification event type.
pub const SSF_VERIFICATION: &str =
    "https://schemas.openid.net/secevent/ssf/event-type/verification";
use mandate_core::request::EvaluationRequest;
use mandate_core::state::{MandateState, StateDocument, StateSnapshot};
use mandate_core::timestamp::UnixTime;
use serde_json::Value;

/// The prefix of the authority's event type URIs.
pub const EVENT_PREFIX: &str = "https://schemas.mandate.dev/secevent/v1/";

/// How far in the future a SET's `iat` may be (clock skew).
pub const IAT_LEEWAY: Duration = Duration::from_secs(60);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

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
    /// A fresh heartbeat: contact, nothing to apply.
    Heartbeat,
    /// The transmitter paused or disabled the stream: stale until it resumes.
    Paused,
    /// The SSF verification event this receiver asked for: nothing to apply.
    Verification,
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
    /// The highest heartbeat `beat` seen: a heartbeat at or below it is a replay.
    last_beat: i64,
    /// The stream was paused or disabled by the transmitter.
    paused: bool,
    /// The latest audit checkpoint the authority published (a JWS).
    checkpoint: Option<String>,
    terminal: std::collections::HashMap<MandateId, MandateState>,
}

/// The replica.
#[derive(Debug)]
pub struct Replica {
    keys: RwLock<Arc<KeySet>>,
    /// A SET named a `kid` not among the keys (a rotation not yet fetched).
    unknown_kid: std::sync::atomic::AtomicBool,
    issuer: String,
    audience: RwLock<String>,
    staleness: Duration,
    inner: RwLock<Inner>,
}

fn is_fresh(inner: &Inner, staleness: Duration) -> bool {
    inner.synced
        && !inner.gap
        && !inner.paused
        && inner.last_contact.is_some_and(|t| t.elapsed() <= staleness)
}

impl Replica {
    /// A replica trusting the authority's `keys` and `issuer`, stale until
    /// its first snapshot.
    #[must_use]
    pub fn new(keys: KeySet, issuer: &str, staleness: Duration) -> Self {
        Self {
            keys: RwLock::new(Arc::new(keys)),
            unknown_kid: std::sync::atomic::AtomicBool::new(false),
            issuer: issuer.to_owned(),
            audience: RwLock::new(String::new()),
            staleness,
            inner: RwLock::new(Inner {
                snapshot: Arc::new(StateSnapshot::new()),
                cursor: 0,
                synced: false,
                gap: false,
                last_contact: None,
                last_beat: 0,
                paused: false,
                checkpoint: None,
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

    /// Records contact with the authority: an answer to a request this
    /// replica made (an empty poll). Never call it for something a third
    /// party could have sent.
    pub fn touch(&self) {
        if let Ok(mut i) = self.inner.write() {
            i.last_contact = Some(Instant::now());
            i.paused = false;
        }
    }

    /// The latest signed audit checkpoint the authority published on this
    /// stream, to keep: `mandate audit verify --against` checks a log
    /// against it.
    #[must_use]
    pub fn audit_checkpoint(&self) -> Option<String> {
        self.inner.read().ok().and_then(|i| i.checkpoint.clone())
    }

    /// Marks the stream as not delivering (paused, disabled, or refused by
    /// the authority): stale until contact resumes.
    pub fn mark_paused(&self) {
        if let Ok(mut i) = self.inner.write() {
            i.paused = true;
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

    /// Trusts `keys` for SETs from now on (the authority's rotated keys).
    pub fn set_keys(&self, keys: KeySet) {
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(keys);
        }
    }

    /// Whether a SET named an unknown `kid` since the last call (clears it).
    pub fn take_unknown_kid(&self) -> bool {
        self.unknown_kid
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Verifies and applies one SET.
    ///
    /// # Errors
    /// When the SET is not a valid SET of the authority for this stream.
    pub fn apply_set(&self, set: &str) -> Result<Applied, SetError> {
        let algs: BTreeSet<Algorithm> = [Algorithm::EdDSA, Algorithm::ES256].into();
        let d = mandate_core::jws::decode(set.trim(), &algs, "secevent+jwt")
            .map_err(|e| SetError::Invalid(e.to_string()))?;
        let keys = self.keys.read().map(|k| Arc::clone(&k)).unwrap_or_default();
        let Some(key) = d.kid.as_deref().and_then(|k| keys.get(k)) else {
            self.unknown_kid
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(SetError::Invalid("unknown kid".into()));
        };
        if key.algorithm() != d.alg || !key.verify(d.signing_input.as_bytes(), &d.signature) {
            return Err(SetError::Invalid("signature does not verify".into()));
        }
        let claims: Value = match serde_json::from_slice(&d.payload) {
            Ok(c) => c,
            Err(e) => {
                // Signed by the authority yet unreadable here: a signal this
                // replica cannot apply. Stale until a snapshot, never skipped.
                self.mark_gap();
                return Err(SetError::Invalid(e.to_string()));
            }
        };
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
        if uri == SSF_VERIFICATION {
            return Ok(Applied::Verification);
        }
        let kind = uri
            .strip_prefix(EVENT_PREFIX)
            .ok_or_else(|| SetError::Invalid(format!("unknown event type `{uri}`")))?;
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or_else(|| SetError::Invalid("iat: missing".into()))?;
        let now = unix_now();
        let leeway = i64::try_from(IAT_LEEWAY.as_secs()).unwrap_or(60);
        if iat > now.saturating_add(leeway) {
            return Err(SetError::Invalid("iat: in the future".into()));
        }
        let seq = event
            .get("seq")
            .and_then(Value::as_i64)
            .ok_or_else(|| SetError::Invalid("seq".into()))?;
        let mut inner = self
            .inner
            .write()
            .map_err(|_| SetError::Invalid("replica lock poisoned".into()))?;
        if kind == "stream-updated" {
            let status = event.get("status").and_then(Value::as_str);
            if status != Some("enabled") {
                inner.paused = true;
                return Ok(Applied::Paused);
            }
            return Ok(Applied::Duplicate);
        }
        if kind == "heartbeat" {
            // Liveness only from a heartbeat that is itself new: a higher
            // beat than any seen, issued within the staleness bound.
            let beat = event.get("beat").and_then(Value::as_i64).unwrap_or(0);
            let recent = iat
                >= now
                    .saturating_sub(i64::try_from(self.staleness.as_secs()).unwrap_or(0))
                    .saturating_sub(leeway.min(5));
            // A missed signal is revealed by any verified heartbeat, old or
            // new: restricting needs no freshness.
            let head = event.get("head").and_then(Value::as_i64).unwrap_or(seq);
            if head > inner.cursor {
                inner.gap = true;
                return Ok(Applied::Gap);
            }
            if beat <= inner.last_beat || !recent {
                return Ok(Applied::Duplicate);
            }
            inner.last_beat = beat;
            inner.last_contact = Some(Instant::now());
            inner.paused = false;
            return Ok(Applied::Heartbeat);
        }
        if seq <= inner.cursor {
            // A replay: not news, no contact.
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
        let mut record_checkpoint = None;
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
            ("audit-checkpoint", _) => {
                record_checkpoint = event
                    .get("checkpoint")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            ("facts-changed", _) => {
                match event.get("facts").cloned().map(Facts::from_json) {
                    Some(Ok(f)) => snap.set_facts(f),
                    _ => {
                        // Facts this replica cannot hold: deciding on the old
                        // ones would allow what the authority denies.
                        inner.gap = true;
                        return Ok(Applied::Gap);
                    }
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
        if record_checkpoint.is_some() {
            inner.checkpoint = record_checkpoint;
        }
        inner.cursor = seq;
        inner.last_contact = Some(Instant::now());
        inner.paused = false;
        Ok(Applied::Applied)
    }

    /// Marks a signal from the authority's own channel as unusable here:
    /// stale until resynchronised from a snapshot.
    pub fn mark_gap(&self) {
        if let Ok(mut i) = self.inner.write() {
            i.gap = true;
        }
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

/// Runs `f` — a decision whose conditions iterate, so it may take up to the
/// evaluation budget — without holding up the async worker it was called
/// on (`block_in_place` on a multi-threaded runtime); anything else runs
/// inline.
pub fn off_worker<T>(expensive: bool, f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if expensive && multi {
        tokio::task::block_in_place(f)
    } else {
        f()
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
    proved: &Proved<'_>,
    now: UnixTime,
) -> Decision {
    let chain = match verifier.verify(presented) {
        Ok(c) => c,
        Err(e) => return Decision::from_chain_error(&e),
    };
    let pop_failure = pop::check(&chain, &proved.possession, proved.cache, now);
    decide_verified(&chain, replica, request, token, pop_failure, now)
}

/// Decides with the replica for a chain already verified, possession
/// already checked (`pop_failure`, the reason it was not proved).
#[must_use]
pub fn decide_verified(
    chain: &mandate_core::chain::VerifiedChain,
    replica: &Replica,
    request: &EvaluationRequest,
    token: Option<&str>,
    pop_failure: Option<pop::PopError>,
    now: UnixTime,
) -> Decision {
    let mut d = match replica.fresh_snapshot() {
        Some(snap) => off_worker(chain.iterates(), || {
            decide(chain, request, token, &snap, now)
        }),
        None => Decision {
            allow: false,
            reasons: vec!["state_stale".into()],
            chain: chain.shared_ids(),
            obligations: Vec::new(),
        },
    };
    if let Some(e) = pop_failure {
        d.deny_also(e.code());
    }
    d
}

/// How the caller of [`decide_with`] established possession of the leaf's
/// holder key, and the replay cache its proofs go to.
#[derive(Debug, Clone, Copy)]
pub struct Proved<'a> {
    /// The proof (or why none is needed).
    pub possession: pop::Possession<'a>,
    /// Where proofs are remembered.
    pub cache: &'a pop::ReplayCache,
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

    fn now_ms() -> i64 {
        unix_now() * 1000
    }

    fn heartbeat(beat: i64, at_ms: i64) -> String {
        let hb = Signal {
            seq: 0,
            kind: "heartbeat".into(),
            mandate_id: None,
            body: json!({"head": 0, "beat": beat}),
            at_ms,
        };
        to_set(
            &authority(),
            "https://mandate.test",
            "stream:s1",
            "acme",
            &hb,
        )
    }

    fn short_lived() -> Replica {
        let mut keys = KeySet::new();
        keys.insert(authority().verifying_key().unwrap());
        let r = Replica::new(keys, "https://mandate.test", Duration::from_millis(300));
        r.set_audience("stream:s1");
        r.install(0, StateDocument::default()).unwrap();
        r
    }

    #[test]
    fn a_replayed_set_or_heartbeat_does_not_keep_a_cut_off_replica_fresh() {
        let r = short_lived();
        let old_set = set(1, "suspended", "m1");
        assert_eq!(r.apply_set(&old_set).unwrap(), Applied::Applied);
        let old_beat = heartbeat(now_ms(), now_ms());
        assert_eq!(r.apply_set(&old_beat).unwrap(), Applied::Heartbeat);
        // Cut off from the authority, an attacker replays what it captured.
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(60));
            assert_eq!(r.apply_set(&old_set).unwrap(), Applied::Duplicate);
            assert_eq!(r.apply_set(&old_beat).unwrap(), Applied::Duplicate);
        }
        assert!(!r.is_fresh(), "replays kept the replica fresh");
        // A new heartbeat is news.
        assert_eq!(
            r.apply_set(&heartbeat(now_ms() + 1_000, now_ms())).unwrap(),
            Applied::Heartbeat
        );
        assert!(r.is_fresh());
    }

    #[test]
    fn a_heartbeat_issued_long_ago_or_a_set_from_the_future_is_no_news() {
        let r = short_lived();
        std::thread::sleep(Duration::from_millis(400));
        let an_hour_ago = now_ms() - 3_600_000;
        assert_eq!(
            r.apply_set(&heartbeat(i64::MAX - 1, an_hour_ago)).unwrap(),
            Applied::Duplicate
        );
        assert!(!r.is_fresh());
        let future = Signal {
            seq: 1,
            kind: "suspended".into(),
            mandate_id: Some("m1".into()),
            body: json!({"mandate_id": "m1"}),
            at_ms: now_ms() + 3_600_000,
        };
        let set = to_set(
            &authority(),
            "https://mandate.test",
            "stream:s1",
            "acme",
            &future,
        );
        assert!(r.apply_set(&set).is_err());
        assert_eq!(r.cursor(), 0);
    }

    #[test]
    fn facts_the_replica_cannot_hold_make_it_stale_instead_of_being_skipped() {
        let r = replica();
        let mut deep = json!(1);
        // Deeper than facts may be, yet within what a SET may carry.
        for _ in 0..26 {
            deep = json!({ "a": deep });
        }
        let s = Signal {
            seq: 1,
            kind: "facts-changed".into(),
            mandate_id: None,
            body: json!({"facts": {"x": deep}}),
            at_ms: now_ms(),
        };
        let set = to_set(
            &authority(),
            "https://mandate.test",
            "stream:s1",
            "acme",
            &s,
        );
        assert_eq!(r.apply_set(&set).unwrap(), Applied::Gap);
        assert!(!r.is_fresh());
        assert!(r.needs_snapshot());
        assert_eq!(r.cursor(), 0);
    }

    #[test]
    fn a_paused_stream_makes_the_replica_stale_at_once() {
        let r = replica();
        let s = Signal {
            seq: 0,
            kind: "stream-updated".into(),
            mandate_id: None,
            body: json!({"status": "paused", "reason": "maintenance"}),
            at_ms: now_ms(),
        };
        let set = to_set(
            &authority(),
            "https://mandate.test",
            "stream:s1",
            "acme",
            &s,
        );
        assert_eq!(r.apply_set(&set).unwrap(), Applied::Paused);
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
