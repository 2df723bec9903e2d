//! What the API answers, as types: the handlers serialize these, and the
//! OpenAPI document's response schemas are generated from them
//! ([`super::openapi`]), so the two cannot drift apart.

use mandate_core::decision::Obligation;
use mandate_core::id::MandateId;
use mandate_core::model::MandateClaims;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// An error (RFC 9457 problem details): `application/problem+json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Problem {
    /// `urn:mandate:problem:CODE`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The stable error code (`invalid_request`, `not_found`, `conflict`, …).
    pub code: String,
    /// What is wrong, naming the field.
    pub detail: String,
}

/// `POST /v1/requests`: the request is pending.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestCreated {
    /// The request's id.
    pub id: String,
    /// Always `pending`.
    pub state: PendingState,
    /// SHA-256 of the consent page the principal will be shown.
    pub consent_sha256: String,
}

/// The state of a request just made.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PendingState {
    /// Waiting for the principal.
    Pending,
}

/// `GET /v1/requests/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestView {
    /// The request's id.
    pub id: String,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    /// Whom it is addressed to.
    pub principal: String,
    /// The agent (caller subject) that made it.
    pub agent: String,
    /// The request as made.
    pub request: Value,
    /// SHA-256 of its consent page.
    pub consent_sha256: String,
    /// The mandate issued, once approved.
    pub mandate_id: Option<String>,
    /// The issued mandate's compact JWS, once approved.
    pub mandate: Option<String>,
    /// Why it was denied.
    pub reason: Option<String>,
}

/// `POST /v1/requests/{id}/approve`: the signed mandate.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Approved {
    /// The request's id.
    pub id: String,
    /// Always `approved`.
    pub state: String,
    /// The new mandate's id.
    pub mandate_id: String,
    /// The mandate: a compact JWS (`typ: mandate+jwt`).
    pub mandate: Option<String>,
}

/// `POST /v1/requests/{id}/deny`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Denied {
    /// The request's id.
    pub id: String,
    /// Always `denied`.
    pub state: String,
    /// Why, as the principal said.
    pub reason: Option<String>,
}

/// `POST /v1/mandates/{id}/amend`: the new revision.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Amended {
    /// The new revision's id.
    pub mandate_id: MandateId,
    /// The revision it supersedes.
    pub supersedes: String,
    /// Always `active`.
    pub state: String,
    /// The new revision (compact JWS).
    pub mandate: String,
}

/// `POST /v1/mandates/{id}/children`: the child is known by name.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ChildRegistered {
    /// The child's id.
    pub mandate_id: MandateId,
    /// Its parent.
    pub parent: String,
    /// Always `active`.
    pub state: String,
}

/// `POST /v1/mandates/{id}/discovery`: a one-time grant.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DiscoveryGrant {
    /// The grant's id.
    pub mandate_id: MandateId,
    /// The mandate whose allowance it came from.
    pub parent: String,
    /// Always `true`.
    pub one_time: bool,
    /// The chain to present (parent's chain `~` the grant).
    pub mandate: String,
}

/// `GET /v1/mandates/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MandateView {
    /// The mandate's id.
    pub mandate_id: String,
    /// `active`, `suspended`, `revoked`, `expired`, `completed` or `superseded`.
    pub state: String,
    /// Its parent, for a delegated or discovered mandate.
    pub parent: Option<String>,
    /// Whether a one-time mandate was used.
    pub consumed: bool,
    /// The chain to present (`~`-joined compact JWS, root first).
    pub mandate: String,
    /// The leaf's claims.
    pub claims: MandateClaims,
}

/// A state change (suspend, resume, revoke): the mandate's state after it,
/// and every mandate that changed (a revocation's cascade).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Transition {
    /// The mandate asked about.
    pub mandate_id: String,
    /// Its state now.
    pub state: String,
    /// Every mandate whose state changed (empty when nothing did).
    pub changed: Vec<MandateId>,
}

/// `POST /v1/mandates/{id}/consume`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Consumed {
    /// The one-time mandate.
    pub mandate_id: String,
    /// Always `true` (a second consumption is 409 `one_time_used`).
    pub consumed: bool,
}

/// `POST /v1/events`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventRecorded {
    /// The event's id.
    pub id: String,
    /// Whether this id was seen before (nothing changed again).
    pub replayed: bool,
    /// The mandates it ended.
    pub changed: Vec<MandateId>,
}

/// The tenant's mission facts and their version.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FactsView {
    /// The facts document that conditions read.
    pub facts: Value,
    /// Increases with every change.
    pub version: i64,
}

/// A change of the facts: the new document, its version, and the mandates
/// whose conditions now fail (suspended or revoked at once).
#[derive(Debug, Serialize, JsonSchema)]
pub struct FactsChanged {
    /// The facts document now.
    pub facts: Value,
    /// Its version.
    pub version: i64,
    /// The mandates the change suspended or revoked.
    pub changed: Vec<MandateId>,
}

/// AuthZEN batch decisions: one answer per evaluation, in order (fewer when
/// a short-circuit semantic stopped early).
#[derive(Debug, Serialize, JsonSchema)]
pub struct EvaluationsAnswer {
    /// The answers.
    pub evaluations: Vec<DecisionAnswer>,
}

/// An AuthZEN decision (one evaluation).
#[derive(Debug, Serialize, JsonSchema)]
pub struct DecisionAnswer {
    /// Allowed or not.
    pub decision: bool,
    /// Why, and what must happen.
    pub context: DecisionContext,
}

/// A decision's context.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DecisionContext {
    /// The stable reason codes of a deny (empty for an allow).
    pub reasons: Vec<String>,
    /// The presented chain, root first.
    pub chain: Vec<MandateId>,
    /// What the enforcement point must do (suspend, notify, …).
    pub obligations: Vec<Obligation>,
    /// The audit record that holds this decision.
    pub audit_seq: i64,
    /// Why an item of a batch could not be read (it is denied
    /// `invalid_request`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

/// A batch item that could not be read.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ItemError {
    /// 400.
    pub status: u16,
    /// What is wrong, naming the member.
    pub message: String,
}

/// `POST /oauth/token`: a mandate-bound access token (RFC 8693, RFC 9068).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TokenAnswer {
    /// The `at+jwt` access token.
    pub access_token: String,
    /// `urn:ietf:params:oauth:token-type:access_token`.
    pub issued_token_type: String,
    /// `DPoP`: the token is bound to the holder key (`cnf.jkt`).
    pub token_type: String,
    /// Seconds until it expires (at most 300, never past the chain).
    pub expires_in: i64,
}

/// An OAuth error (RFC 6749 §5.2).
#[derive(Debug, Serialize, JsonSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_grant`, `invalid_dpop_proof`, `use_dpop_nonce`, …
    pub error: String,
    /// What is wrong.
    pub error_description: String,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// How many audit records the log holds.
    pub audit_records: i64,
}

/// One request in `GET /v1/requests`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestSummary {
    /// The request's id.
    pub id: String,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    /// Whom it is addressed to.
    pub principal: String,
    /// The agent (caller subject) that made it.
    pub agent: String,
    /// When it was made (ms since the epoch).
    pub created_ms: i64,
    /// The mandate issued, once approved.
    pub mandate_id: Option<String>,
    /// The request as made.
    pub request: Value,
}

/// `GET /v1/requests`: one page, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestList {
    /// The requests.
    pub items: Vec<RequestSummary>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One mandate in `GET /v1/mandates`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MandateSummary {
    /// The mandate's id.
    pub mandate_id: String,
    /// `active`, `suspended`, `revoked`, `expired`, `completed` or `superseded`.
    pub state: String,
    /// Its parent, for a delegated or discovered mandate.
    pub parent: Option<String>,
    /// The principal who granted it.
    pub principal: String,
    /// The agent it was issued to.
    pub agent: String,
    /// The mission's objective.
    pub objective: String,
    /// When the authority recorded it (ms since the epoch).
    pub created_ms: i64,
    /// Its hard expiry (seconds since the epoch).
    pub hard_expiry: i64,
}

/// `GET /v1/mandates`: one page, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MandateList {
    /// The mandates.
    pub items: Vec<MandateSummary>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One audit record in `GET /v1/audit` (a decision out of a shipped batch
/// is one record, named `SEQ.ITEM`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditEntry {
    /// `SEQ` or `SEQ.ITEM`: what `mandate audit explain` takes.
    pub reference: String,
    /// Position in the log.
    pub seq: i64,
    /// When it was committed (ms since the epoch).
    pub at_ms: i64,
    /// `decision`, `issued`, `revoked`, `event`, ...
    pub kind: String,
    /// The mandate it is about.
    pub mandate_id: Option<String>,
    /// The details.
    pub body: Value,
    /// The stored record's chained hash.
    pub hash: String,
}

/// `GET /v1/audit`: one page, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditList {
    /// The records.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}
