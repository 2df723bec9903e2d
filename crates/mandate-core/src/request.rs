//! The proposed action, in the shape of an OpenID AuthZEN evaluation request:
//! `action.name` is the action, `resource.type` the authorization-detail type,
//! `resource.id` the location URL, `resource.properties` the resource
//! attributes and constraint inputs, `context` the rest (for example
//! `agent_instance`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An AuthZEN evaluation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EvaluationRequest {
    /// The AuthZEN subject; its `properties` may carry the mandate and access
    /// token when the request travels over HTTP. The decision does not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Value>,
    /// What is to be done.
    pub action: Action,
    /// To what.
    pub resource: Resource,
    /// Everything else.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
}

/// The action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Action {
    /// Its name (`search`, `read`).
    pub name: String,
    /// Extra properties (not used by the decision).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
}

/// The resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Resource {
    /// The authorization-detail type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The location URL.
    pub id: String,
    /// Resource attributes and constraint inputs.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
}

impl EvaluationRequest {
    /// A request with no subject or context.
    #[must_use]
    pub fn new(
        action: &str,
        resource_type: &str,
        location: &str,
        properties: Map<String, Value>,
    ) -> Self {
        Self {
            subject: None,
            action: Action {
                name: action.to_owned(),
                properties: Map::new(),
            },
            resource: Resource {
                type_: resource_type.to_owned(),
                id: location.to_owned(),
                properties,
            },
            context: Map::new(),
        }
    }

    /// The same request, sent by this agent instance (`context.agent_instance`).
    /// Every decision requires it: it must be the leaf mandate's instance.
    #[must_use]
    pub fn with_agent_instance(mut self, instance: &str) -> Self {
        self.context.insert(
            "agent_instance".to_owned(),
            Value::String(instance.to_owned()),
        );
        self
    }

    /// The agent instance the caller says is acting (`context.agent_instance`).
    #[must_use]
    pub fn agent_instance(&self) -> Option<&str> {
        crate::json::member(&self.context, "agent_instance").and_then(Value::as_str)
    }
}
