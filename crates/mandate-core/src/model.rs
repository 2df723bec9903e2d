//! The Execution Mandate: typed claims for every field of the brief's
//! section 3, serde both ways.
//!
//! Nested objects refuse unknown members (a misspelt `max_aditional_hops`
//! must not silently fall back to a default). Unknown *top-level* members are
//! kept in [`MandateClaims::extensions`], signed with the rest, and ignored by
//! the decision.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::{AgentId, ConditionId, MandateId};
use crate::keys::PublicJwk;
use crate::timestamp::{UnixTime, numeric_date};

/// The JWS `typ` of a mandate.
pub const MANDATE_TYP: &str = "mandate+jwt";

/// The claims of an Execution Mandate (the JWS payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MandateClaims {
    /// Issuer: the authority's URL. Children inherit the root's.
    pub iss: String,
    /// Issued at (NumericDate).
    #[serde(with = "numeric_date")]
    #[cfg_attr(feature = "schema", schemars(with = "i64"))]
    pub iat: UnixTime,
    /// Not before (NumericDate).
    #[serde(with = "numeric_date")]
    #[cfg_attr(feature = "schema", schemars(with = "i64"))]
    pub nbf: UnixTime,
    /// Expiry (NumericDate), equal to `lifecycle.hard_expiry`.
    #[serde(with = "numeric_date")]
    #[cfg_attr(feature = "schema", schemars(with = "i64"))]
    pub exp: UnixTime,
    /// JWT id, equal to `mandate_id`.
    pub jti: String,
    /// This mandate's id.
    pub mandate_id: MandateId,
    /// Who granted it.
    pub principal: Principal,
    /// Who holds it.
    pub agent: Agent,
    /// Why it exists. Children inherit it unchanged.
    pub purpose: Purpose,
    /// What it covers (RFC 9396-style typed objects).
    pub authorization_details: Vec<AuthorizationDetail>,
    /// What must remain true, evaluated per action.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// When it ends.
    pub lifecycle: Lifecycle,
    /// How authority passes to sub-agents.
    pub delegation: Delegation,
    /// Provenance: every ancestor from the human grant to the parent.
    #[serde(default)]
    pub delegation_chain: Vec<ChainLink>,
    /// The access token this mandate governs, when bound by hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_binding: Option<TokenBinding>,
    /// What the principal pre-approved for discovery: tools the agent may
    /// ask the authority for, one use at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryAllowance>,
    /// Unknown top-level members: kept and signed, ignored by decisions.
    #[serde(flatten)]
    pub extensions: BTreeMap<String, Value>,
}

/// Who granted the mandate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Principal {
    /// The principal's subject at their identity provider.
    pub sub: String,
    /// The identity provider.
    pub iss: String,
    /// The recorded consent (grant) this mandate was issued under.
    pub grant_ref: String,
}

/// Who holds the mandate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Agent {
    /// The agent (software) identity.
    pub id: AgentId,
    /// The running instance.
    pub instance: String,
    /// The holder's key (RFC 7800 confirmation): signs any child it derives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// Proof-of-possession confirmation (RFC 7800).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Confirmation {
    /// The holder's public key.
    pub jwk: PublicJwk,
    /// The holder's TLS client certificate (RFC 8705 §3.1): base64url of
    /// the SHA-256 of its DER. When present the mandate is
    /// certificate-bound: it is used only over a TLS connection on which
    /// the holder presented that certificate (possession proven once, by
    /// the handshake), and a DPoP proof does not stand in for it.
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl Confirmation {
    /// Bound to `jwk` alone (DPoP proofs at every use).
    #[must_use]
    pub fn key(jwk: PublicJwk) -> Self {
        Self {
            jwk,
            x5t_s256: None,
        }
    }

    /// The problem with `x5t#S256`, if any: it must be the base64url
    /// (no padding) of a 32-byte SHA-256.
    #[must_use]
    pub fn thumbprint_problem(&self) -> Option<&'static str> {
        let t = self.x5t_s256.as_deref()?;
        crate::hash::b64_decode_32(t).is_none().then_some(
            "must be the base64url (no padding) SHA-256 of a DER certificate: 43 characters",
        )
    }
}

/// The `x5t#S256` of a DER certificate (RFC 8705 §3.1): base64url of its
/// SHA-256.
#[must_use]
pub fn certificate_thumbprint(der: &[u8]) -> String {
    crate::hash::sha256_b64(der)
}

/// Why the mandate exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Purpose {
    /// What the agent is to achieve.
    pub objective: String,
    /// The business situation that justifies it.
    pub business_context: String,
}

/// One typed grant of access (RFC 9396 authorization details).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuthorizationDetail {
    /// The kind of resource (`vendor_portal`, `github_pull_request`).
    #[serde(rename = "type")]
    pub type_: String,
    /// Where: absolute URLs, each covering itself and the paths below it.
    pub locations: Vec<String>,
    /// Attributes every covered resource must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource: BTreeMap<String, Value>,
    /// Which actions.
    pub actions: Vec<String>,
    /// Bounds on the action's inputs (see the attenuation docs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraints: BTreeMap<String, Value>,
}

/// A condition evaluated throughout the mission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Condition {
    /// Unique within the delegation chain.
    pub id: ConditionId,
    /// A CEL expression that must be `true`.
    pub expression: String,
    /// When it is evaluated.
    pub evaluation: Evaluation,
    /// What happens when it is false.
    pub on_failure: OnFailure,
}

/// When a condition is evaluated. Only `per_action` exists; any other value
/// is refused, never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Evaluation {
    /// Before every action.
    PerAction,
}

/// What happens when a condition is false. Every variant denies the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum OnFailure {
    /// Deny this action only.
    Deny,
    /// Deny, suspend the mandate and notify the principal.
    SuspendAndNotify,
    /// Deny and revoke the mandate (and its descendants).
    Revoke,
}

impl OnFailure {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Deny => "deny",
            OnFailure::SuspendAndNotify => "suspend_and_notify",
            OnFailure::Revoke => "revoke",
        }
    }
}

/// When the mandate ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Lifecycle {
    /// The latest instant it is usable (exclusive), RFC 3339.
    pub hard_expiry: UnixTime,
    /// Business milestones that end it (`completed`).
    #[serde(default)]
    pub terminal_events: Vec<TerminalEvent>,
    /// What expiry does.
    pub on_expiry: OnExpiry,
    /// A one-time mandate: usable for exactly one action.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_time: bool,
}

/// What expiry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum OnExpiry {
    /// Revoke the mandate and every descendant.
    RevokeAndCascade,
}

/// A business event that ends the mandate: its type and, optionally, the
/// subject it must be about. Written either as an object
/// `{"type": "pull_request.merged", "subject": "github:acme/app#123"}` or, as
/// in the source text, as a bare type string (any subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TerminalEvent {
    /// The event type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The subject; `None` matches an event of this type about any subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl TerminalEvent {
    /// Whether an event with this type and subject ends the mandate.
    #[must_use]
    pub fn matches(&self, type_: &str, subject: Option<&str>) -> bool {
        self.type_ == type_
            && match &self.subject {
                None => true,
                Some(s) => Some(s.as_str()) == subject,
            }
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for TerminalEvent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TerminalEvent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A business event that ends the mandate: a type, or a type and the subject it must be about.",
            "oneOf": [
                {"type": "string"},
                {"type": "object", "required": ["type"], "additionalProperties": false,
                 "properties": {"type": {"type": "string"}, "subject": {"type": "string"}}}
            ]
        })
    }
}

impl<'de> Deserialize<'de> for TerminalEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TerminalEvent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event type string or an object with `type` and `subject`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TerminalEvent, E> {
                Ok(TerminalEvent {
                    type_: s.to_owned(),
                    subject: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TerminalEvent, A::Error> {
                let mut type_ = None;
                let mut subject = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "type" => type_ = Some(map.next_value::<String>()?),
                        "subject" => subject = Some(map.next_value::<String>()?),
                        other => {
                            return Err(de::Error::unknown_field(other, &["type", "subject"]));
                        }
                    }
                }
                Ok(TerminalEvent {
                    type_: type_.ok_or_else(|| de::Error::missing_field("type"))?,
                    subject,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// How authority passes to sub-agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Delegation {
    /// Whether the holder may derive children at all.
    pub permitted: bool,
    /// How many more hops below this mandate are allowed.
    pub max_additional_hops: u8,
    /// The rule children must satisfy.
    pub attenuation: Attenuation,
    /// How revocation reaches descendants.
    pub cascade_revocation: CascadeRevocation,
}

/// The rule every child must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Attenuation {
    /// Within the parent in every dimension; expiry no later.
    SubsetOfParent,
    /// As above, and expiry strictly earlier than the parent's.
    StrictSubsetOfParent,
}

impl Attenuation {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Attenuation::SubsetOfParent => "subset_of_parent",
            Attenuation::StrictSubsetOfParent => "strict_subset_of_parent",
        }
    }
}

/// How revocation reaches descendants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum CascadeRevocation {
    /// Every descendant ends with its ancestor, at once.
    Immediate,
}

/// One ancestor in a delegation chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChainLink {
    /// The ancestor's id.
    pub mandate_id: MandateId,
    /// Who held it.
    pub holder: AgentId,
    /// SHA-256 of the ancestor's compact JWS, base64url: the link cannot be
    /// spliced onto another parent.
    pub jws_sha256: String,
}

/// Binding to an access token by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenBinding {
    /// SHA-256 of the access token's ASCII, base64url (as DPoP's `ath`).
    pub access_token_sha256: String,
}

/// The discovery allowance of a grant: which tool types, locations and
/// actions the authority may grant one-time mandates for, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiscoveryAllowance {
    /// Authorization-detail types a discovered tool may have.
    pub types: Vec<String>,
    /// Locations a discovered tool must be within.
    pub locations: Vec<String>,
    /// Actions that may be granted.
    pub actions: Vec<String>,
    /// Longest life of a one-time mandate, in seconds (at most 3600).
    pub max_lifetime_secs: u32,
}

impl MandateClaims {
    /// The hop budget is spent: no more children.
    #[must_use]
    pub fn may_delegate(&self) -> bool {
        self.delegation.permitted && self.delegation.max_additional_hops > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_events_read_both_forms() {
        let v: Vec<TerminalEvent> = serde_json::from_str(
            r#"["contingency_program.cancelled", {"type":"pull_request.merged","subject":"github:acme/app#123"}]"#,
        )
        .unwrap();
        assert!(v[0].matches("contingency_program.cancelled", Some("anything")));
        assert!(v[1].matches("pull_request.merged", Some("github:acme/app#123")));
        assert!(!v[1].matches("pull_request.merged", Some("github:acme/app#124")));
        assert!(!v[1].matches("pull_request.merged", None));
    }

    #[test]
    fn unknown_security_enum_values_are_refused() {
        for (ty, text) in [
            ("on_failure", r#""warn""#),
            ("attenuation", r#""any""#),
            ("evaluation", r#""at_issue""#),
        ] {
            let err = match ty {
                "on_failure" => serde_json::from_str::<OnFailure>(text).err(),
                "attenuation" => serde_json::from_str::<Attenuation>(text).err(),
                _ => serde_json::from_str::<Evaluation>(text).err(),
            };
            assert!(err.unwrap().to_string().contains("unknown variant"), "{ty}");
        }
    }
}
