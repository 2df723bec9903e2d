//! Validation of mandate claims beyond their shape: every problem, each with
//! its JSON path (`lifecycle.hard_expiry: must be after iat`).

use std::collections::HashSet;
use std::fmt;

use crate::condition::{self, MAX_CONDITIONS};
use crate::constraint::Constraint;
use crate::id::MandateId;
use crate::keys::VerifyingKey;
use crate::location;
use crate::model::MandateClaims;

/// Most authorization details in one mandate.
pub const MAX_DETAILS: usize = 64;
/// Most entries in any list inside a detail (locations, actions).
pub const MAX_LIST: usize = 256;

/// Lists up to this long are checked for repeats pairwise, without a set.
const SHORT_LIST: usize = 16;

/// `authorization_details[i]`, the path of a detail's problems, written
/// only when there is one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DetailPath(pub(crate) usize);

impl fmt::Display for DetailPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "authorization_details[{}]", self.0)
    }
}
/// Longest free-text field (purpose, principal).
pub const MAX_TEXT: usize = 4096;
/// Deepest delegation chain (ancestors of one mandate).
pub const MAX_CHAIN_DEPTH: usize = 16;

/// One thing wrong with a mandate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the offending member.
    pub path: String,
    /// What is wrong, lowercase.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a mandate, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

struct Collector(Vec<Problem>);

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn text(&mut self, path: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(path, "must not be empty");
        } else if value.len() > MAX_TEXT {
            self.push(path, format!("must be at most {MAX_TEXT} bytes"));
        }
    }
}

/// How much to check. Issuing checks everything; chain verification leaves
/// two expensive checks to the verifier itself, which does them once where
/// they matter: it compiles the leaf's conditions (which repeat every
/// ancestor's verbatim) and decodes each parent's holder key to verify the
/// child's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckConditions {
    /// Compile every expression and decode the holder key.
    Compile,
    /// Leave expressions and the holder key to the caller.
    Skip,
}

/// Checks everything the type system does not: registered claims agree with
/// the body, times are ordered, lists are non-empty and bounded, locations
/// and constraints are well formed, condition ids are unique and their
/// expressions compile, the holder key is usable.
///
/// # Errors
/// Every problem found.
pub fn validate(m: &MandateClaims, conditions: CheckConditions) -> Result<(), Problems> {
    let mut c = Collector(Vec::new());
    c.text("iss", &m.iss);
    if m.jti != m.mandate_id.as_str() {
        c.push("jti", "must equal mandate_id");
    }
    if m.exp != m.lifecycle.hard_expiry {
        c.push("exp", "must equal lifecycle.hard_expiry");
    }
    if m.lifecycle.hard_expiry <= m.iat {
        c.push("lifecycle.hard_expiry", "must be after iat");
    }
    if m.nbf >= m.exp {
        c.push("nbf", "must be before exp");
    }
    c.text("principal.sub", &m.principal.sub);
    c.text("principal.iss", &m.principal.iss);
    c.text("principal.grant_ref", &m.principal.grant_ref);
    if MandateId::new(m.agent.instance.as_str()).is_err() {
        c.push(
            "agent.instance",
            "must be a non-empty identifier (letters, digits, `-_.:@/+#~`)",
        );
    }
    if let Some(cnf) = &m.agent.cnf
        && conditions == CheckConditions::Compile
        && let Err(e) = VerifyingKey::from_jwk(&cnf.jwk)
    {
        c.push("agent.cnf.jwk", e.to_string());
    }
    if let Some(problem) = m.agent.cnf.as_ref().and_then(|c| c.thumbprint_problem()) {
        c.push("agent.cnf.x5t#S256", problem);
    }
    c.text("purpose.objective", &m.purpose.objective);
    c.text("purpose.business_context", &m.purpose.business_context);

    if m.authorization_details.is_empty() {
        c.push("authorization_details", "must not be empty");
    }
    if m.authorization_details.len() > MAX_DETAILS {
        c.push(
            "authorization_details",
            format!("must hold at most {MAX_DETAILS} entries"),
        );
    }
    for (i, d) in m.authorization_details.iter().enumerate() {
        // Written out only into a problem (most mandates have none).
        let p = DetailPath(i);
        if d.type_.trim().is_empty() {
            c.push(format!("{p}.type"), "must not be empty");
        }
        if d.locations.is_empty() {
            c.push(format!("{p}.locations"), "must not be empty");
        }
        if d.locations.len() > MAX_LIST || d.actions.len() > MAX_LIST {
            c.push(
                p.to_string(),
                format!("locations and actions hold at most {MAX_LIST} entries"),
            );
        }
        for (j, l) in d.locations.iter().enumerate() {
            if let Err(e) = location::grant(l) {
                c.push(format!("{p}.locations[{j}]"), e.to_string());
            }
        }
        if d.actions.is_empty() {
            c.push(format!("{p}.actions"), "must not be empty");
        }
        // Listed twice: a short list (most are) is compared pairwise, with
        // nothing allocated; a long one through a set.
        let mut seen = (d.actions.len() > SHORT_LIST).then(HashSet::new);
        for (j, a) in d.actions.iter().enumerate() {
            let twice = match &mut seen {
                Some(seen) => !seen.insert(a),
                None => d.actions.get(..j).is_some_and(|before| before.contains(a)),
            };
            if a.trim().is_empty() {
                c.push(format!("{p}.actions[{j}]"), "must not be empty");
            } else if twice {
                c.push(
                    format!("{p}.actions[{j}]"),
                    format!("`{a}` is listed twice"),
                );
            }
        }
        for (k, v) in &d.resource {
            if !matches!(
                v,
                serde_json::Value::String(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::Bool(_)
            ) {
                c.push(
                    format!("{p}.resource.{k}"),
                    "must be a string, number or boolean",
                );
            }
        }
        for (k, v) in &d.constraints {
            if let Err(e) = Constraint::parse(v) {
                c.push(format!("{p}.constraints.{k}"), e);
            }
        }
    }

    if m.conditions.len() > MAX_CONDITIONS {
        c.push(
            "conditions",
            format!("must hold at most {MAX_CONDITIONS} entries"),
        );
    }
    let mut ids = HashSet::new();
    for (i, cond) in m.conditions.iter().enumerate() {
        if !ids.insert(&cond.id) {
            c.push(
                format!("conditions[{i}].id"),
                format!("`{}` is used twice", cond.id),
            );
        }
        if conditions == CheckConditions::Compile
            && let Err(e) = condition::compile(&cond.expression)
        {
            c.push(format!("conditions[{i}].expression"), e.to_string());
        }
    }
    for (i, t) in m.lifecycle.terminal_events.iter().enumerate() {
        if t.type_.trim().is_empty() {
            c.push(
                format!("lifecycle.terminal_events[{i}].type"),
                "must not be empty",
            );
        }
    }
    if usize::from(m.delegation.max_additional_hops) > MAX_CHAIN_DEPTH {
        c.push(
            "delegation.max_additional_hops",
            format!("must be at most {MAX_CHAIN_DEPTH}"),
        );
    }
    if m.delegation_chain.len() > MAX_CHAIN_DEPTH {
        c.push(
            "delegation_chain",
            format!("must hold at most {MAX_CHAIN_DEPTH} entries"),
        );
    }
    for (i, l) in m.delegation_chain.iter().enumerate() {
        if !is_b64_sha256(&l.jws_sha256) {
            c.push(
                format!("delegation_chain[{i}].jws_sha256"),
                "must be a base64url SHA-256 (43 characters)",
            );
        }
    }
    if let Some(d) = &m.discovery {
        if d.types.is_empty() || d.locations.is_empty() || d.actions.is_empty() {
            c.push(
                "discovery",
                "types, locations and actions must not be empty",
            );
        }
        for (j, l) in d.locations.iter().enumerate() {
            if let Err(e) = location::grant(l) {
                c.push(format!("discovery.locations[{j}]"), e.to_string());
            }
        }
        if d.max_lifetime_secs == 0 || d.max_lifetime_secs > 3600 {
            c.push("discovery.max_lifetime_secs", "must be between 1 and 3600");
        }
    }
    if let Some(b) = &m.token_binding
        && !is_b64_sha256(&b.access_token_sha256)
    {
        c.push(
            "token_binding.access_token_sha256",
            "must be a base64url SHA-256 (43 characters)",
        );
    }
    if c.0.is_empty() {
        Ok(())
    } else {
        Err(Problems(c.0))
    }
}

fn is_b64_sha256(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && crate::hash::b64_decode_32(s).is_some()
}
