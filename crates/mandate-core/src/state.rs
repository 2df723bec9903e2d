//! The state snapshot a decision reads: which mandates are no longer active,
//! which business events have happened, and the mission facts.
//!
//! A signature proves what was granted, not that it still holds: every
//! decision needs both a verified chain and a snapshot of state.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use crate::condition::{Facts, FactsError};
use crate::id::MandateId;

/// A business event that has happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OccurredEvent {
    /// Its type (`pull_request.merged`).
    #[serde(rename = "type")]
    pub type_: String,
    /// What it is about (`github:acme/app#123`).
    #[serde(default)]
    pub subject: Option<String>,
    /// When it happened. An event ends only mandates issued at or before
    /// it; one without a time ends every mandate that names it.
    #[serde(default)]
    pub occurred_at: Option<crate::timestamp::UnixTime>,
}

/// The state of one mandate as the authority records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MandateState {
    /// Awaiting consent.
    Pending,
    /// Usable.
    Active,
    /// Paused; may resume.
    Suspended,
    /// Ended by revocation.
    Revoked,
    /// Ended by its hard expiry.
    Expired,
    /// Ended by a terminal business event.
    Completed,
    /// Replaced by an amendment.
    Superseded,
    /// A state this build does not know: never active.
    Unknown,
}

impl MandateState {
    /// Parses a state name; anything unrecognised is [`MandateState::Unknown`].
    #[must_use]
    pub fn from_name(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            "revoked" => Self::Revoked,
            "expired" => Self::Expired,
            "completed" => Self::Completed,
            "superseded" => Self::Superseded,
            _ => Self::Unknown,
        }
    }

    /// The reason code a decision gives for a mandate in this state, or
    /// `None` when active.
    #[must_use]
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Self::Active => None,
            Self::Pending => Some("pending"),
            Self::Suspended => Some("suspended"),
            Self::Revoked => Some("revoked"),
            Self::Expired => Some("expired"),
            Self::Completed => Some("completed"),
            Self::Superseded => Some("superseded"),
            Self::Unknown => Some("state_unknown"),
        }
    }
}

/// The snapshot, as JSON:
/// `{"revoked": [ids], "suspended": [ids], "completed": [ids], "expired": [ids],
///   "superseded": [ids], "consumed": [ids], "states": {"id": "state"},
///   "events": [{"type", "subject"}], "facts": {...}}`; absent members are empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDocument {
    /// Revoked mandates.
    #[serde(default)]
    pub revoked: Vec<MandateId>,
    /// Suspended mandates.
    #[serde(default)]
    pub suspended: Vec<MandateId>,
    /// Completed mandates.
    #[serde(default)]
    pub completed: Vec<MandateId>,
    /// Expired mandates.
    #[serde(default)]
    pub expired: Vec<MandateId>,
    /// Superseded mandates.
    #[serde(default)]
    pub superseded: Vec<MandateId>,
    /// One-time mandates already used.
    #[serde(default)]
    pub consumed: Vec<MandateId>,
    /// Any other recorded states by id (unknown names count as not active).
    #[serde(default)]
    pub states: HashMap<MandateId, String>,
    /// Business events that have happened.
    #[serde(default)]
    pub events: Vec<OccurredEvent>,
    /// Mission facts.
    #[serde(default)]
    pub facts: Option<Value>,
}

/// State ready for decisions: lookups are hash-set probes and the facts are
/// already CEL values.
#[derive(Debug, Default, Clone)]
pub struct StateSnapshot {
    states: HashMap<MandateId, MandateState>,
    consumed: HashSet<MandateId>,
    events: Vec<OccurredEvent>,
    facts: Facts,
}

impl StateSnapshot {
    /// An empty snapshot: every mandate active, no events, no facts.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a snapshot from its JSON document.
    ///
    /// # Errors
    /// When the facts cannot be converted.
    pub fn from_document(doc: StateDocument) -> Result<Self, FactsError> {
        let mut s = Self::new();
        for (id, name) in doc.states {
            s.states.insert(id, MandateState::from_name(&name));
        }
        // The explicit lists win over `states`, most final first.
        for (list, state) in [
            (doc.suspended, MandateState::Suspended),
            (doc.superseded, MandateState::Superseded),
            (doc.expired, MandateState::Expired),
            (doc.completed, MandateState::Completed),
            (doc.revoked, MandateState::Revoked),
        ] {
            for id in list {
                s.states.insert(id, state);
            }
        }
        s.consumed = doc.consumed.into_iter().collect();
        s.events = doc.events;
        if let Some(f) = doc.facts {
            s.facts = Facts::from_json(f)?;
        }
        Ok(s)
    }

    /// Records a mandate's state.
    pub fn set_state(&mut self, id: MandateId, state: MandateState) {
        self.states.insert(id, state);
    }

    /// Records a business event (with no time: it ends every mandate that
    /// names it).
    pub fn add_event(&mut self, type_: &str, subject: Option<&str>) {
        self.add_event_at(type_, subject, None);
    }

    /// Records a business event that happened at `at`.
    pub fn add_event_at(
        &mut self,
        type_: &str,
        subject: Option<&str>,
        at: Option<crate::timestamp::UnixTime>,
    ) {
        self.events.push(OccurredEvent {
            type_: type_.to_owned(),
            subject: subject.map(str::to_owned),
            occurred_at: at,
        });
    }

    /// Marks a one-time mandate as used.
    pub fn consume(&mut self, id: MandateId) {
        self.consumed.insert(id);
    }

    /// Replaces the facts.
    pub fn set_facts(&mut self, facts: Facts) {
        self.facts = facts;
    }

    /// A mandate's state (active when nothing is recorded).
    #[must_use]
    pub fn state(&self, id: &MandateId) -> MandateState {
        self.states.get(id).copied().unwrap_or(MandateState::Active)
    }

    /// Whether a one-time mandate was used.
    #[must_use]
    pub fn is_consumed(&self, id: &MandateId) -> bool {
        self.consumed.contains(id)
    }

    /// Forgets a mandate's recorded state (it counts as active again).
    /// For the authority, whose store is the source of truth.
    pub fn clear_state(&mut self, id: &MandateId) {
        self.states.remove(id);
    }

    /// Events that have happened.
    #[must_use]
    pub fn events(&self) -> &[OccurredEvent] {
        &self.events
    }

    /// The facts.
    #[must_use]
    pub fn facts(&self) -> &Facts {
        &self.facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone>() {}

    #[test]
    fn a_snapshot_can_be_shared_between_threads() {
        assert_send_sync::<StateSnapshot>();
    }
}
