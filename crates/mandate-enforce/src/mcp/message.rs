//! JSON-RPC 2.0 messages as MCP uses them, read strictly from untrusted
//! bytes: one message (MCP dropped batches in its 2025-06-18 revision), an
//! object with `"jsonrpc": "2.0"`, an `id` that is a string or an integer,
//! a `method` that is a string, `params` that are an object, and no member
//! named twice (a proxy that judged one `name` while its upstream read the
//! other would be bypassed). Every error is a JSON-RPC error object that says
//! what is wrong.

use serde_json::{Map, Value, json};

/// JSON-RPC: the bytes are not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: the method is not offered (here: not forwarded by policy).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: the params are wrong.
pub const INVALID_PARAMS: i64 = -32602;
/// The mandate does not allow this tool call (an implementation-defined
/// server error, JSON-RPC 2.0 §5.1). `data.reasons` holds the stable reason
/// codes, `data.mandate_id` the leaf mandate (or `null`).
pub const MANDATE_DENIED: i64 = -32051;
/// The upstream MCP server could not be reached.
pub const UPSTREAM_UNAVAILABLE: i64 = -32052;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The code.
    pub code: i64,
    /// What is wrong, for a person.
    pub message: String,
    /// Details for a program.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error without data.
    #[must_use]
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The response carrying this error for request `id` (`null` when the
    /// request's id could not be read).
    #[must_use]
    pub fn response(&self, id: Option<&Value>) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(d), Some(o)) = (&self.data, error.as_object_mut()) {
            o.insert("data".into(), d.clone());
        }
        json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": error})
    }
}

/// What kind of message it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A request: it has an `id` and a `method`.
    Request {
        /// Its id (a string or an integer).
        id: Value,
        /// Its method.
        method: String,
    },
    /// A notification: a `method` and no `id`.
    Notification {
        /// Its method.
        method: String,
    },
    /// A response (to a request the server sent): an `id` and a `result`
    /// or an `error`.
    Response {
        /// The id of the request it answers.
        id: Value,
    },
}

/// One message, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// What kind.
    pub kind: Kind,
    /// The whole message as read.
    pub body: Map<String, Value>,
}

impl Message {
    /// The method, for a request or a notification.
    #[must_use]
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            Kind::Request { method, .. } | Kind::Notification { method } => Some(method),
            Kind::Response { .. } => None,
        }
    }

    /// The id, for a request or a response.
    #[must_use]
    pub fn id(&self) -> Option<&Value> {
        match &self.kind {
            Kind::Request { id, .. } | Kind::Response { id } => Some(id),
            Kind::Notification { .. } => None,
        }
    }

    /// The `params` object (empty when absent).
    #[must_use]
    pub fn params(&self) -> Option<&Map<String, Value>> {
        self.body.get("params").and_then(Value::as_object)
    }

    /// The message as bytes to send on.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}

/// A refused message: the error, and the id to answer it under when one
/// could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The request's id, if it had a readable one.
    pub id: Option<Value>,
    /// Why it was refused.
    pub error: RpcError,
}

fn refuse(id: Option<&Value>, code: i64, message: impl Into<String>) -> Box<Refused> {
    Box::new(Refused {
        id: id.cloned(),
        error: RpcError::new(code, message),
    })
}

/// Reads one message from untrusted bytes (at most `max` of them).
///
/// # Errors
/// Oversized, not JSON, a batch, or not a JSON-RPC 2.0 message as MCP
/// allows it; the error says which member is wrong.
pub fn parse(bytes: &[u8], max: usize) -> Result<Message, Box<Refused>> {
    if bytes.len() > max {
        return Err(refuse(
            None,
            INVALID_REQUEST,
            format!(
                "message: {} bytes, over this proxy's limit of {max}",
                bytes.len()
            ),
        ));
    }
    let value: Value = mandate_core::json::from_slice_strict(bytes).map_err(|e| {
        let code = if e.duplicate {
            INVALID_REQUEST
        } else {
            PARSE_ERROR
        };
        refuse(
            None,
            code,
            format!("message: not one valid JSON value: {e}"),
        )
    })?;
    let body = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(refuse(
                None,
                INVALID_REQUEST,
                "message: a batch (JSON array); MCP takes one message at a time since 2025-06-18",
            ));
        }
        _ => {
            return Err(refuse(
                None,
                INVALID_REQUEST,
                "message: must be a JSON-RPC object",
            ));
        }
    };
    let id = match body.get("id") {
        None => None,
        Some(v @ Value::String(_)) => Some(v.clone()),
        Some(v @ Value::Number(n)) if n.is_i64() || n.is_u64() => Some(v.clone()),
        Some(_) => {
            return Err(refuse(
                None,
                INVALID_REQUEST,
                "id: must be a string or an integer (MCP forbids null)",
            ));
        }
    };
    if body.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(refuse(
            id.as_ref(),
            INVALID_REQUEST,
            "jsonrpc: must be \"2.0\"",
        ));
    }
    let kind = match (body.get("method"), id) {
        (Some(Value::String(m)), id) => {
            if m.is_empty() {
                return Err(refuse(id.as_ref(), INVALID_REQUEST, "method: empty"));
            }
            if let Some(p) = body.get("params")
                && !p.is_object()
            {
                return Err(refuse(
                    id.as_ref(),
                    INVALID_REQUEST,
                    "params: must be an object",
                ));
            }
            match id {
                Some(id) => Kind::Request {
                    id,
                    method: m.clone(),
                },
                None => Kind::Notification { method: m.clone() },
            }
        }
        (Some(_), id) => {
            return Err(refuse(
                id.as_ref(),
                INVALID_REQUEST,
                "method: must be a string",
            ));
        }
        (None, Some(id)) => {
            let has_result = body.contains_key("result");
            let has_error = body.get("error").is_some_and(Value::is_object);
            if has_result == has_error {
                return Err(refuse(
                    Some(&id),
                    INVALID_REQUEST,
                    "message: a response has exactly one of `result` and `error`",
                ));
            }
            Kind::Response { id }
        }
        (None, None) => {
            return Err(refuse(
                None,
                INVALID_REQUEST,
                "method: missing (neither a request, a notification nor a response)",
            ));
        }
    };
    Ok(Message { kind, body })
}

/// A `tools/call` request's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall<'a> {
    /// The tool's name, exactly as sent.
    pub name: &'a str,
    /// Its arguments (empty when absent).
    pub arguments: Option<&'a Map<String, Value>>,
    /// The request's `_meta`.
    pub meta: Option<&'a Map<String, Value>>,
}

/// Reads a `tools/call` request's parameters.
///
/// # Errors
/// `name` missing or not a string, `arguments` or `_meta` not objects.
pub fn tool_call(m: &Message) -> Result<ToolCall<'_>, RpcError> {
    let params = m.params().ok_or_else(|| {
        RpcError::new(INVALID_PARAMS, "params: missing (tools/call names a tool)")
    })?;
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(INVALID_PARAMS, "params.name: missing or not a string"))?;
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(_) => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "params.arguments: must be an object",
            ));
        }
    };
    Ok(ToolCall {
        name,
        arguments,
        meta: meta(m)?,
    })
}

/// A request's `params._meta`.
///
/// # Errors
/// When it is there and not an object.
pub fn meta(m: &Message) -> Result<Option<&Map<String, Value>>, RpcError> {
    match m.params().and_then(|p| p.get("_meta")) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(RpcError::new(
            INVALID_PARAMS,
            "params._meta: must be an object",
        )),
    }
}

/// The `_meta` keys this proxy reads, and removes before forwarding.
pub mod keys {
    /// The mandate (compact JWS, or a `~`-joined chain).
    pub const MANDATE: &str = "io.mandate/mandate";
    /// The holder's DPoP proof.
    pub const DPOP: &str = "io.mandate/dpop";
    /// The acting agent instance.
    pub const AGENT_INSTANCE: &str = "io.mandate/agent_instance";
    /// The acting agent.
    pub const AGENT: &str = "io.mandate/agent";
    /// The access token the leaf binds.
    pub const ACCESS_TOKEN: &str = "io.mandate/access_token";
    /// Every key above.
    pub const ALL: [&str; 5] = [MANDATE, DPOP, AGENT_INSTANCE, AGENT, ACCESS_TOKEN];
}

/// Removes this proxy's `_meta` keys (the credentials stop here) and an
/// emptied `_meta`.
pub fn strip_meta(m: &mut Message) {
    if let Some(Value::Object(params)) = m.body.get_mut("params") {
        let empty = if let Some(Value::Object(meta)) = params.get_mut("_meta") {
            for k in keys::ALL {
                meta.remove(k);
            }
            meta.is_empty()
        } else {
            false
        };
        if empty {
            params.remove("_meta");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn err(bytes: &str) -> Box<Refused> {
        parse(bytes.as_bytes(), 1 << 20).unwrap_err()
    }

    #[test]
    fn reads_requests_notifications_and_responses() {
        let m = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, 1024).unwrap();
        assert_eq!(m.method(), Some("tools/list"));
        assert_eq!(m.id(), Some(&json!(1)));
        let n = parse(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            1024,
        )
        .unwrap();
        assert!(matches!(n.kind, Kind::Notification { .. }));
        let r = parse(br#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#, 1024).unwrap();
        assert!(matches!(r.kind, Kind::Response { .. }));
    }

    #[test]
    fn refuses_what_is_not_one_mcp_message_and_says_why() {
        assert_eq!(err("{not json").error.code, PARSE_ERROR);
        let batch = err(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        assert_eq!(batch.error.code, INVALID_REQUEST);
        assert!(batch.error.message.contains("batch"));
        let v1 = err(r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#);
        assert_eq!(
            (v1.id, v1.error.message.as_str()),
            (Some(json!(7)), "jsonrpc: must be \"2.0\"")
        );
        assert!(
            err(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#)
                .error
                .message
                .starts_with("id:")
        );
        assert!(
            err(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#)
                .error
                .message
                .starts_with("id:")
        );
        assert!(
            err(r#"{"jsonrpc":"2.0","id":1,"method":7}"#)
                .error
                .message
                .starts_with("method:")
        );
        assert!(
            err(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#)
                .error
                .message
                .starts_with("params:")
        );
        assert!(
            err(r#"{"jsonrpc":"2.0","id":1}"#)
                .error
                .message
                .contains("result")
        );
        let big = parse(&[b' '; 100], 10).unwrap_err();
        assert!(big.error.message.contains("over this proxy's limit"));
    }

    #[test]
    fn a_member_named_twice_is_refused_not_guessed() {
        let twice = err(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_vendors","name":"delete_vendor"}}"#,
        );
        assert_eq!(twice.error.code, INVALID_REQUEST);
        assert!(
            twice
                .error
                .message
                .contains("params: duplicate member `name`"),
            "{}",
            twice.error.message
        );
    }

    #[test]
    fn a_tool_call_names_its_tool_and_the_proxy_keys_stop_here() {
        let mut m = parse(
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search_vendors","arguments":{"q":"x"},"_meta":{"io.mandate/mandate":"m","io.mandate/dpop":"p","progressToken":1}}}"#,
            4096,
        )
        .unwrap();
        let call = tool_call(&m).unwrap();
        assert_eq!(call.name, "search_vendors");
        assert_eq!(call.meta.unwrap()["io.mandate/mandate"], "m");
        strip_meta(&mut m);
        assert_eq!(m.body["params"]["_meta"], json!({"progressToken": 1}));
        let bad = parse(
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":5}}"#,
            4096,
        )
        .unwrap();
        assert_eq!(tool_call(&bad).unwrap_err().code, INVALID_PARAMS);
    }
}
