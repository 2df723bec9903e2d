//! The OpenAPI 3.1 document, generated: every request and response schema
//! comes from the Rust type the handler parses or answers with (`schemars`
//! over the serde types: a renamed member, a default, `deny_unknown_fields`
//! are the schema's as they are the parser's), and the operations from the
//! table below. Built once, served at `/openapi.json`; a test checks that it
//! names every route the router has and no other, and schemathesis checks
//! the server against it.

use std::sync::OnceLock;

use mandate_core::request::EvaluationRequest;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::{authzen, events, lifecycle, requests, ssf, wire};

/// What an operation takes.
enum Body {
    None,
    Json(Value),
    Form(Value),
}

/// A success answer.
enum Answer {
    Json(Value),
    Text(&'static str),
    Empty,
}

struct Op {
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    roles: Option<&'static str>,
    params: Vec<Value>,
    body: Body,
    ok: Vec<(u16, &'static str, Answer)>,
    errors: &'static [u16],
}

fn op(method: &'static str, path: &'static str, tag: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path,
        tag,
        summary,
        roles: None,
        params: Vec::new(),
        body: Body::None,
        ok: Vec::new(),
        errors: &[],
    }
}

impl Op {
    fn roles(mut self, r: &'static str) -> Self {
        self.roles = Some(r);
        self
    }
    fn path_param(mut self, name: &str, what: &str) -> Self {
        self.params
            .push(json!({"name": name, "in": "path", "required": true,
            "description": what, "schema": {"type": "string"}}));
        self
    }
    fn query(mut self, name: &str, what: &str) -> Self {
        self.params
            .push(json!({"name": name, "in": "query", "required": false,
            "description": what, "schema": {"type": "string"}}));
        self
    }
    fn json(mut self, schema: Value) -> Self {
        self.body = Body::Json(schema);
        self
    }
    fn form(mut self, schema: Value) -> Self {
        self.body = Body::Form(schema);
        self
    }
    fn ok(mut self, status: u16, what: &'static str, answer: Answer) -> Self {
        self.ok.push((status, what, answer));
        self
    }
    fn errors(mut self, codes: &'static [u16]) -> Self {
        self.errors = codes;
        self
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("summary".into(), json!(self.summary));
        o.insert("tags".into(), json!([self.tag]));
        if let Some(r) = self.roles {
            o.insert("description".into(), json!(format!("Roles: {r}")));
            o.insert("security".into(), json!([{"bearer": []}]));
        }
        if !self.params.is_empty() {
            o.insert("parameters".into(), Value::Array(self.params.clone()));
        }
        match &self.body {
            Body::None => {}
            Body::Json(s) => {
                o.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"application/json": {"schema": s}}}),
                );
            }
            Body::Form(s) => {
                o.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": s}}}),
                );
            }
        }
        let mut responses = Map::new();
        for (status, what, answer) in &self.ok {
            let r = match answer {
                Answer::Json(s) => {
                    json!({"description": what, "content": {"application/json": {"schema": s}}})
                }
                Answer::Text(t) => json!({"description": what, "content": {*t: {}}}),
                Answer::Empty => json!({"description": what}),
            };
            responses.insert(status.to_string(), r);
        }
        for e in self.errors {
            responses.insert(
                e.to_string(),
                json!({"$ref": "#/components/responses/Problem"}),
            );
        }
        o.insert("responses".into(), Value::Object(responses));
        Value::Object(o)
    }
}

struct Schemas(SchemaGenerator);

impl Schemas {
    /// A reference to `T`'s schema (added to `components/schemas`).
    fn of<T: JsonSchema>(&mut self) -> Value {
        serde_json::to_value(self.0.subschema_for::<T>()).unwrap_or(Value::Null)
    }
}

const AUTH: &[u16] = &[400, 401, 403, 404];

#[allow(clippy::too_many_lines, reason = "one entry per operation")]
fn operations(s: &mut Schemas) -> Vec<Op> {
    let decision = s.of::<wire::DecisionAnswer>();
    let transition = s.of::<wire::Transition>();
    let reason = s.of::<lifecycle::Reason>();
    let object = json!({"type": "object"});
    vec![
        op("get", "/healthz", "operations", "Liveness and audit record count")
            .ok(200, "Serving", Answer::Json(s.of::<wire::Health>()))
            .ok(503, "Degraded: a checkpoint could not be written (problem+json)", Answer::Text("application/problem+json")),
        op("get", "/metrics", "operations", "OpenMetrics: HTTP requests by route, decisions by outcome and reason, latency, transitions, process")
            .ok(200, "OpenMetrics text", Answer::Text("application/openmetrics-text")),
        op("get", "/openapi.json", "operations", "This document")
            .ok(200, "The document", Answer::Json(object.clone())),
        op("get", "/.well-known/jwks.json", "operations", "The authority's public keys (verify mandates offline)")
            .ok(200, "A JWK set", Answer::Json(json!({"type": "object", "required": ["keys"],
                "properties": {"keys": {"type": "array", "items": s.of::<mandate_core::keys::PublicJwk>()}}}))),
        op("get", "/.well-known/authzen-configuration", "decisions", "AuthZEN PDP metadata")
            .ok(200, "Metadata", Answer::Json(json!({"type": "object", "required": ["policy_decision_point", "access_evaluation_endpoint"],
                "properties": {"policy_decision_point": {"type": "string"}, "access_evaluation_endpoint": {"type": "string"},
                    "access_evaluations_endpoint": {"type": "string"}, "search_action_endpoint": {"type": "string"}}}))),
        op("get", "/.well-known/oauth-authorization-server", "tokens", "Authorization server metadata (RFC 8414): token and introspection endpoints, DPoP algorithms")
            .ok(200, "Metadata", Answer::Json(json!({"type": "object", "required": ["issuer", "token_endpoint", "introspection_endpoint", "jwks_uri"],
                "properties": {"issuer": {"type": "string"}, "token_endpoint": {"type": "string"}, "introspection_endpoint": {"type": "string"},
                    "jwks_uri": {"type": "string"}, "grant_types_supported": {"type": "array", "items": {"type": "string"}},
                    "dpop_signing_alg_values_supported": {"type": "array", "items": {"type": "string"}}}}))),
        op("post", "/oauth/token", "tokens", "Token exchange (RFC 8693): the mandate (subject_token; type urn:ietf:params:oauth:token-type:jwt for one mandate, urn:mandate:params:oauth:token-type:mandate-chain for a ~-joined chain) and a DPoP header by the leaf's holder key, for a DPoP-bound at+jwt access token (RFC 9068) of at most 300 s that ends no later than the chain. Optional narrowing: resource, authorization_details. Errors are RFC 6749 JSON.")
            .form(json!({"type": "object", "required": ["grant_type", "subject_token", "subject_token_type"],
                "properties": {"grant_type": {"type": "string", "enum": ["urn:ietf:params:oauth:grant-type:token-exchange"]},
                    "subject_token": {"type": "string"}, "subject_token_type": {"type": "string"},
                    "requested_token_type": {"type": "string"}, "resource": {"type": "string"},
                    "authorization_details": {"type": "string", "description": "JSON array, within the leaf's"}}}))
            .ok(200, "The access token", Answer::Json(s.of::<wire::TokenAnswer>()))
            .ok(400, "An OAuth error", Answer::Json(s.of::<wire::OAuthError>()))
            .ok(401, "A DPoP error (use_dpop_nonce, invalid_dpop_proof)", Answer::Json(s.of::<wire::OAuthError>()))
            .ok(500, "An OAuth server_error", Answer::Json(s.of::<wire::OAuthError>())),
        op("post", "/oauth/introspect", "tokens", "Token introspection (RFC 7662): active only while the token is unexpired and every mandate of its chain is in force, in the caller's tenant")
            .roles("enforcer")
            .form(json!({"type": "object", "required": ["token"],
                "properties": {"token": {"type": "string"}, "token_type_hint": {"type": "string"}}}))
            .ok(200, "Whether it is active, and its claims when it is", Answer::Json(json!({"type": "object", "required": ["active"],
                "properties": {"active": {"type": "boolean"}}})))
            .errors(&[400, 401, 403]),
        op("post", "/access/v1/evaluation", "decisions", "Decide one action (AuthZEN). The mandate travels in subject.properties.mandate, an access token in subject.properties.access_token, and the agent's DPoP proof in context.dpop with the method and URL it was sent for (context.htm, context.htu). A deny is 200 with decision false and the reason codes; every decision is audited before it is answered.")
            .roles("enforcer")
            .json(s.of::<EvaluationRequest>())
            .ok(200, "The decision", Answer::Json(decision.clone()))
            .errors(AUTH),
        op("post", "/access/v1/evaluations", "decisions", "Decide a batch (AuthZEN), with options.evaluations_semantic execute_all | deny_on_first_deny | permit_on_first_permit; without evaluations, the single evaluation")
            .roles("enforcer")
            .json(s.of::<authzen::Batch>())
            .ok(200, "The decisions, in order (or one decision)", Answer::Json(json!({"oneOf": [decision.clone(),
                {"type": "object", "required": ["evaluations"], "properties": {"evaluations": {"type": "array", "items": decision}}}]})))
            .errors(AUTH),
        op("post", "/access/v1/search/action", "decisions", "Action search (AuthZEN Search API): which actions the agent may take on this resource now; each is decided as an evaluation would be (with the one DPoP proof in context.dpop). Nothing is consumed; the search is audited.")
            .roles("enforcer")
            .json(s.of::<authzen::ActionSearch>())
            .ok(200, "The allowed actions", Answer::Json(json!({"type": "object", "required": ["results"],
                "properties": {"results": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
                    "page": {"type": "object"}}})))
            .errors(&[400, 401, 403, 413, 415]),
        op("get", "/v1/requests", "requests", "List requests, newest first, one page at a time (cursor pagination: pass `next` back as `cursor`)")
            .roles("agent (own), principal (addressed), admin")
            .query("state", "pending | approved | denied")
            .query("principal", "Addressed to a principal whose name contains this")
            .query("limit", "1 to 500 (default 50)")
            .query("cursor", "The `next` of the previous page")
            .ok(200, "A page", Answer::Json(s.of::<wire::RequestList>()))
            .errors(&[400, 401, 403]),
        op("get", "/v1/mandates", "mandates", "List mandates, newest first, one page at a time")
            .roles("agent (own), principal (granted), admin, enforcer")
            .query("state", "active | suspended | revoked | expired | completed | superseded")
            .query("agent", "Issued to an agent whose id contains this")
            .query("principal", "Granted by a principal whose name contains this")
            .query("limit", "1 to 500 (default 50)")
            .query("cursor", "The `next` of the previous page")
            .ok(200, "A page", Answer::Json(s.of::<wire::MandateList>()))
            .errors(&[400, 401, 403]),
        op("get", "/v1/audit", "audit", "Search the audit log, newest first, one page at a time; decisions shipped in batches are listed one by one (SEQ.ITEM)")
            .roles("principal (mandates granted), admin")
            .query("mandate", "About this mandate or any descendant")
            .query("agent", "Agent id contains")
            .query("outcome", "allow | deny")
            .query("from", "Decided at or after (RFC 3339)")
            .query("to", "Decided at or before (RFC 3339)")
            .query("limit", "1 to 500 (default 50)")
            .query("cursor", "The `next` of the previous page")
            .ok(200, "A page", Answer::Json(s.of::<wire::AuditList>()))
            .errors(&[400, 401, 403]),
        op("post", "/v1/requests", "requests", "An agent requests a mandate; pending until the principal decides. Returns the consent hash of what will be shown.")
            .roles("agent")
            .json(s.of::<requests::MandateRequest>())
            .ok(201, "Pending", Answer::Json(s.of::<wire::RequestCreated>()))
            .errors(&[400, 401, 403, 422]),
        op("get", "/v1/requests/{id}", "requests", "A request, with the issued mandate once approved")
            .roles("agent (own), principal (addressed), admin")
            .path_param("id", "The request")
            .ok(200, "The request", Answer::Json(s.of::<wire::RequestView>()))
            .errors(AUTH),
        op("post", "/v1/requests/{id}/approve", "requests", "Approve: records who, when and the consent hash; the authority signs the mandate")
            .roles("principal (addressed), admin")
            .path_param("id", "The request")
            .json(s.of::<requests::Approval>())
            .ok(200, "The mandate", Answer::Json(s.of::<wire::Approved>()))
            .errors(&[400, 401, 403, 404, 409]),
        op("post", "/v1/requests/{id}/deny", "requests", "Deny with a reason")
            .roles("principal (addressed), admin")
            .path_param("id", "The request")
            .json(s.of::<requests::Denial>())
            .ok(200, "Denied", Answer::Json(s.of::<wire::Denied>()))
            .errors(&[400, 401, 403, 404, 409]),
        op("get", "/v1/mandates/{id}", "mandates", "A mandate: state, claims, presented chain")
            .roles("agent (own), principal (granted), admin, enforcer")
            .path_param("id", "The mandate")
            .ok(200, "The mandate", Answer::Json(s.of::<wire::MandateView>()))
            .errors(AUTH),
        op("post", "/v1/mandates/{id}/suspend", "mandates", "Suspend (idempotent)")
            .roles("principal (granted), admin; agents are refused and audited")
            .path_param("id", "The mandate")
            .json(reason.clone())
            .ok(200, "Its state now", Answer::Json(transition.clone()))
            .errors(&[400, 401, 403, 404, 409]),
        op("post", "/v1/mandates/{id}/resume", "mandates", "Resume a suspended mandate; 409 from a terminal state")
            .roles("principal (granted), admin")
            .path_param("id", "The mandate")
            .json(reason.clone())
            .ok(200, "Its state now", Answer::Json(transition.clone()))
            .errors(&[400, 401, 403, 404, 409]),
        op("post", "/v1/mandates/{id}/revoke", "mandates", "Revoke, cascading to every known descendant (idempotent)")
            .roles("principal (granted), admin")
            .path_param("id", "The mandate")
            .json(reason)
            .ok(200, "Its state now, and every mandate the cascade changed", Answer::Json(transition))
            .errors(&[400, 401, 403, 404, 409]),
        op("post", "/v1/mandates/{id}/amend", "mandates", "A new revision supersedes this one; 409 after it ended")
            .roles("principal (granted), admin")
            .path_param("id", "The mandate")
            .json(s.of::<lifecycle::Amendment>())
            .ok(200, "The new revision", Answer::Json(s.of::<wire::Amended>()))
            .errors(&[400, 401, 403, 404, 409, 422]),
        op("post", "/v1/mandates/{id}/children", "mandates", "Register a child derived offline, so revocation reaches it by name")
            .roles("agent (holder)")
            .path_param("id", "The parent")
            .json(s.of::<lifecycle::ChildRegistration>())
            .ok(200, "Registered", Answer::Json(s.of::<wire::ChildRegistered>()))
            .errors(&[400, 401, 403, 404, 409, 422]),
        op("post", "/v1/mandates/{id}/discovery", "mandates", "Ask for a one-time grant for a discovered tool, checked against the grant's discovery allowance")
            .roles("agent (holder)")
            .path_param("id", "The mandate whose allowance is used")
            .json(s.of::<lifecycle::DiscoveryRequest>())
            .ok(200, "The one-time grant", Answer::Json(s.of::<wire::DiscoveryGrant>()))
            .errors(&[400, 401, 403, 404, 409]),
        op("post", "/v1/mandates/{id}/consume", "mandates", "Consume a one-time mandate: 200 once, then 409 one_time_used")
            .roles("enforcer")
            .path_param("id", "The one-time mandate")
            .ok(200, "Consumed now", Answer::Json(s.of::<wire::Consumed>()))
            .errors(&[401, 403, 404, 409, 422]),
        op("get", "/v1/facts", "facts", "The tenant's mission facts")
            .roles("admin, enforcer, principal")
            .ok(200, "The facts", Answer::Json(s.of::<wire::FactsView>()))
            .errors(AUTH),
        op("put", "/v1/facts", "facts", "Replace the facts; conditions of live mandates are re-evaluated at once")
            .roles("admin")
            .json(json!({"type": "object", "description": "The facts document (a JSON object, at most 24 levels deep)"}))
            .ok(200, "The facts now", Answer::Json(s.of::<wire::FactsChanged>()))
            .errors(&[400, 401, 403, 422]),
        op("patch", "/v1/facts", "facts", "Merge-patch the facts (RFC 7386); conditions re-evaluated at once")
            .roles("admin")
            .json(json!({"type": "object", "description": "A JSON merge patch"}))
            .ok(200, "The facts now", Answer::Json(s.of::<wire::FactsChanged>()))
            .errors(&[400, 401, 403, 422]),
        op("post", "/v1/events", "events", "A business event: ends exactly the mandates whose terminal events name its type and subject; replaying its id changes nothing (200)")
            .roles("event_source, admin")
            .json(s.of::<events::Event>())
            .ok(202, "Recorded", Answer::Json(s.of::<wire::EventRecorded>()))
            .ok(200, "A replay: already recorded", Answer::Json(s.of::<wire::EventRecorded>()))
            .errors(&[400, 401, 403, 409, 422]),
        op("post", "/v1/webhooks/github/{source}", "events", "GitHub webhook (X-Hub-Signature-256 HMAC): pull_request closed+merged becomes pull_request.merged about github:OWNER/REPO#N")
            .path_param("source", "The configured [[webhook]] name")
            .ok(202, "Recorded", Answer::Json(object.clone()))
            .ok(200, "Ignored or replayed", Answer::Json(object.clone()))
            .errors(&[400, 401, 404]),
        op("get", "/.well-known/ssf-configuration", "signals", "Shared Signals transmitter metadata")
            .ok(200, "Metadata", Answer::Json(json!({"type": "object", "required": ["issuer", "jwks_uri", "delivery_methods_supported"],
                "properties": {"spec_version": {"type": "string"}, "issuer": {"type": "string"}, "jwks_uri": {"type": "string"},
                    "delivery_methods_supported": {"type": "array", "items": {"type": "string"}}}}))),
        op("post", "/ssf/streams", "signals", "Create a stream (poll by default, or push with delivery.endpoint_url); it starts at the current sequence")
            .roles("enforcer")
            .json(s.of::<ssf::StreamRequest>())
            .ok(201, "The stream's configuration", Answer::Json(stream()))
            .errors(AUTH),
        op("get", "/ssf/streams", "signals", "Read one stream (stream_id) or every stream the caller manages")
            .roles("enforcer")
            .query("stream_id", "One stream")
            .ok(200, "A configuration, or a list of them", Answer::Json(json!({"oneOf": [stream(), {"type": "array", "items": stream()}]})))
            .errors(AUTH),
        op("patch", "/ssf/streams", "signals", "Update events_requested or description")
            .roles("enforcer")
            .json(s.of::<ssf::StreamRequest>())
            .ok(200, "The configuration now", Answer::Json(stream()))
            .errors(AUTH),
        op("put", "/ssf/streams", "signals", "Replace the configuration (a switch to push starts delivery)")
            .roles("enforcer")
            .json(s.of::<ssf::StreamRequest>())
            .ok(200, "The configuration now", Answer::Json(stream()))
            .errors(AUTH),
        op("delete", "/ssf/streams", "signals", "Delete a stream")
            .roles("enforcer")
            .query("stream_id", "The stream")
            .ok(204, "Deleted", Answer::Empty)
            .errors(AUTH),
        op("get", "/ssf/status", "signals", "A stream's status")
            .roles("enforcer")
            .query("stream_id", "The stream")
            .ok(200, "Its status", Answer::Json(status()))
            .errors(AUTH),
        op("post", "/ssf/status", "signals", "Set status: enabled, paused or disabled (with the receiver's reason)")
            .roles("enforcer")
            .json(s.of::<ssf::StatusUpdate>())
            .ok(200, "Its status now", Answer::Json(status()))
            .errors(AUTH),
        op("post", "/ssf/subjects/add", "signals", "Record a subject on the stream (streams carry every tenant signal)")
            .roles("enforcer")
            .json(s.of::<ssf::SubjectChange>())
            .ok(200, "Recorded", Answer::Empty)
            .errors(AUTH),
        op("post", "/ssf/subjects/remove", "signals", "Remove a recorded subject")
            .roles("enforcer")
            .json(s.of::<ssf::SubjectChange>())
            .ok(204, "Removed", Answer::Empty)
            .errors(AUTH),
        op("post", "/ssf/verify", "signals", "Ask for a verification event on this stream")
            .roles("enforcer")
            .json(s.of::<ssf::Verify>())
            .ok(204, "Requested", Answer::Empty)
            .errors(AUTH),
        op("post", "/ssf/poll/{id}", "signals", "RFC 8936 poll: ack (per jti), ack_through (extension), setErrs, maxEvents, returnImmediately, timeout_secs (extension, at most 10); returns sets in delivery order and moreAvailable")
            .roles("enforcer")
            .path_param("id", "The stream")
            .json(s.of::<ssf::Poll>())
            .ok(200, "The SETs", Answer::Json(json!({"type": "object", "required": ["sets", "moreAvailable"],
                "properties": {"sets": {"type": "object", "additionalProperties": {"type": "string"}}, "moreAvailable": {"type": "boolean"}}})))
            .errors(AUTH),
        op("get", "/ssf/streams/{id}/snapshot", "signals", "A consistent snapshot of the tenant's state and the sequence it reflects")
            .roles("enforcer")
            .path_param("id", "The stream")
            .ok(200, "The snapshot", Answer::Json(object.clone()))
            .errors(AUTH),
        op("post", "/v1/audit/decisions", "decisions", "Decisions made at an enforcement point, in batches: one audit record per batch; each decision is stored once however often it is sent")
            .roles("enforcer")
            .json(s.of::<authzen::Shipment>())
            .ok(200, "accepted, duplicates (numbers already recorded) and next (the number expected next)", Answer::Json(object))
            .errors(&[400, 401, 403, 413]),
        op("get", "/v1/audit/checkpoint", "audit", "The audit log's current signed checkpoint (a JWS: head sequence and hash, record count, previous checkpoint's digest); keep copies to detect a rollback with `mandate audit verify --against`")
            .roles("any")
            .ok(200, "The checkpoint", Answer::Text("application/jwt"))
            .errors(&[401, 404]),
    ]
}

fn stream() -> Value {
    json!({"type": "object", "required": ["stream_id", "iss", "aud", "delivery"],
        "properties": {"stream_id": {"type": "string"}, "iss": {"type": "string"}, "aud": {"type": "string"},
            "delivery": {"type": "object"}, "events_supported": {"type": "array", "items": {"type": "string"}},
            "events_requested": {"type": "array", "items": {"type": "string"}},
            "events_delivered": {"type": "array", "items": {"type": "string"}}, "description": {"type": ["string", "null"]}}})
}

fn status() -> Value {
    json!({"type": "object", "required": ["stream_id", "status"],
        "properties": {"stream_id": {"type": "string"}, "status": {"type": "string", "enum": ["enabled", "paused", "disabled"]},
            "reason": {"type": "string"}}})
}

fn build() -> Value {
    let mut s = Schemas(
        SchemaSettings::draft2020_12()
            .with(|x| x.definitions_path = "/components/schemas".into())
            .into_generator(),
    );
    let problem = s.of::<wire::Problem>();
    let mut paths = Map::new();
    for o in operations(&mut s) {
        let item = paths
            .entry(o.path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = item.as_object_mut() {
            m.insert(o.method.into(), o.to_json());
        }
    }
    let schemas = s.0.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Mandate authority", "version": env!("CARGO_PKG_VERSION"),
            "description": "Issues, governs and decides Execution Mandates. Errors are application/problem+json with a stable code. Another tenant's ids answer exactly as ids that do not exist. Generated from the types the server parses and answers with."},
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT with role and tenant claims"}},
            "responses": {"Problem": {"description": "problem+json", "content": {"application/problem+json": {"schema": problem}}}},
            "schemas": schemas,
        }
    })
}

/// The document, built on first use.
#[must_use]
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| build().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_in_the_document_resolves() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 40, "{}", all.len());
        for r in all {
            let pointer = r.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn a_request_schema_is_the_parsers_own() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        let s = &doc["components"]["schemas"];
        // `deny_unknown_fields`, the members without a default, a rename.
        let m = &s["MandateRequest"];
        assert_eq!(m["additionalProperties"], false);
        let mut required: Vec<&str> = m["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(
            required,
            [
                "agent",
                "authorization_details",
                "delegation",
                "lifecycle",
                "principal",
                "purpose"
            ]
        );
        assert!(s["AuthorizationDetail"]["properties"]["type"].is_object());
        assert!(
            s["AuthorizationDetail"]["properties"]
                .get("type_")
                .is_none()
        );
        // What a handler answers with, member for member.
        let created = &s["RequestCreated"];
        assert_eq!(
            created["properties"]["state"]["$ref"],
            "#/components/schemas/PendingState"
        );
        let answer = serde_json::to_value(wire::RequestCreated {
            id: "r".into(),
            state: wire::PendingState::Pending,
            consent_sha256: "c".into(),
        })
        .unwrap();
        for k in created["required"].as_array().unwrap() {
            assert!(answer.get(k.as_str().unwrap()).is_some(), "{k}");
        }
    }
}
