//! stdio: the proxy wraps a local MCP server process
//! (`mandate mcp --config mcp.toml -- python server.py`) for clients that
//! launch servers as subprocesses. Messages are newline-delimited JSON-RPC
//! on stdin and stdout, as MCP's stdio transport says; the server's stderr
//! is the proxy's. The mandate is configured once for the session
//! (`[session]`), or sent with each request in `_meta`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mandate_core::keys::{PrivateJwk, SigningKey};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::message::{self, Kind};
use super::{Presented, Proxy, denial, filter_tools};

/// The stdio session's configured mandate, read at start.
#[derive(Clone)]
pub struct Session {
    mandate: String,
    held: bool,
    agent_instance: String,
    access_token: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("held", &self.held)
            .field("agent_instance", &self.agent_instance)
            .finish_non_exhaustive()
    }
}

fn read_trimmed(path: &Path, setting: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("{setting}: {}: {e}", path.display()))
}

impl Session {
    /// Reads the session's files; a holder key must be the one the leaf
    /// binds.
    ///
    /// # Errors
    /// A file that cannot be read, a mandate that does not verify, a key
    /// that is not the leaf's.
    pub fn load(proxy: &Proxy) -> Result<Option<Self>, String> {
        let Some(c) = &proxy.config.session else {
            return Ok(None);
        };
        let mandate = read_trimmed(&c.mandate_file, "session.mandate_file")?;
        let chain = proxy
            .point
            .verifier
            .verify(&mandate)
            .map_err(|e| format!("session.mandate_file: {e}"))?;
        let held = match &c.holder_key_file {
            None => false,
            Some(path) => {
                let text = read_trimmed(path, "session.holder_key_file")?;
                let jwk: PrivateJwk = serde_json::from_str(&text)
                    .map_err(|e| format!("session.holder_key_file: not a private JWK: {e}"))?;
                let key = SigningKey::from_private_jwk(&jwk)
                    .map_err(|e| format!("session.holder_key_file: {e}"))?;
                let bound = chain.holder_key().map(|k| k.to_jwk().thumbprint());
                if bound != Some(key.public_jwk().thumbprint()) {
                    return Err(
                        "session.holder_key_file: not the key the mandate binds (agent.cnf.jwk)"
                            .into(),
                    );
                }
                true
            }
        };
        let access_token = match &c.access_token_file {
            Some(p) => Some(read_trimmed(p, "session.access_token_file")?),
            None => None,
        };
        Ok(Some(Self {
            mandate,
            held,
            agent_instance: c.agent_instance.clone(),
            access_token,
        }))
    }

    fn presented(&self) -> Presented<'_> {
        Presented {
            mandate: Some(&self.mandate),
            proof: None,
            agent_instance: Some(&self.agent_instance),
            agent: None,
            access_token: self.access_token.as_deref(),
            certificate: None,
            held: self.held,
        }
    }
}

/// One line, or a line that was too long (discarded up to its end).
enum Line {
    Text(Vec<u8>),
    TooLong(usize),
}

/// Reads one newline-terminated line of at most `max` bytes without ever
/// holding more than that.
async fn read_line(
    r: &mut (impl AsyncBufRead + Unpin),
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut out = Vec::new();
    let mut dropped = 0usize;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(match (out.is_empty(), dropped) {
                (true, 0) => None,
                (_, 0) => Some(Line::Text(out)),
                (_, n) => Some(Line::TooLong(n)),
            });
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (buf.get(..i).unwrap_or_default(), Some(i + 1)),
            None => (buf, None),
        };
        if dropped == 0 && out.len() + chunk.len() <= max {
            out.extend_from_slice(chunk);
        } else {
            dropped = dropped.max(out.len()) + chunk.len();
            out.clear();
        }
        let used = done.unwrap_or(buf.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(if dropped > 0 {
                Line::TooLong(dropped)
            } else {
                Line::Text(out)
            }));
        }
    }
}

#[derive(Default)]
struct InFlight {
    /// `tools/list` requests by id: the tools to keep.
    lists: HashMap<String, Vec<String>>,
    /// `tools/call` requests by id: the mandate they run under.
    calls: HashMap<String, (Value, String)>,
    /// Calls cancelled here: their late answers are dropped.
    cancelled: HashSet<String>,
}

fn line(v: &Value) -> Vec<u8> {
    let mut out = v.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// Runs the proxy over this process's stdin and stdout, with the server
/// `command` as a child. Returns the child's exit code.
///
/// # Errors
/// When the server cannot be started.
pub async fn run(
    proxy: Arc<Proxy>,
    command: &[String],
    session: Option<Session>,
) -> Result<i32, String> {
    let (program, args) = command.split_first().ok_or("a server command after --")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let mut child_in = child.stdin.take().ok_or("server stdin")?;
    let child_out = child.stdout.take().ok_or("server stdout")?;
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let (srv_tx, mut srv_rx) = mpsc::channel::<Vec<u8>>(64);
    // One writer each for the client's stdout and the server's stdin.
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(b) = out_rx.recv().await {
            if stdout.write_all(&b).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(b) = srv_rx.recv().await {
            if child_in.write_all(&b).await.is_err() || child_in.flush().await.is_err() {
                break;
            }
        }
        // Dropping the pipe closes the server's stdin: its cue to exit.
    });
    let state = Arc::new(Mutex::new(InFlight::default()));
    let max = proxy.config.max_message_bytes;
    let Some(up) = proxy.upstreams.first().cloned() else {
        return Err("no [[server]]".into());
    };

    // The server's messages to the client.
    let from_server = {
        let (state, out_tx) = (Arc::clone(&state), out_tx.clone());
        tokio::spawn(async move {
            let mut r = BufReader::new(child_out);
            while let Ok(Some(l)) = read_line(&mut r, max.saturating_mul(16)).await {
                let Line::Text(bytes) = l else {
                    tracing::warn!("mcp server: a message over the size limit was dropped");
                    continue;
                };
                let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
                    // Not ours to judge: the client sees what the server said.
                    let mut b = bytes;
                    b.push(b'\n');
                    let _ = out_tx.send(b).await;
                    continue;
                };
                let answer = v.get("method").is_none();
                let key = v.get("id").map(Value::to_string);
                if let (true, Some(key)) = (answer, key) {
                    let mut s = state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if s.cancelled.remove(&key) {
                        continue;
                    }
                    s.calls.remove(&key);
                    if let Some(permitted) = s.lists.remove(&key)
                        && let Some(result) = v.get_mut("result")
                    {
                        filter_tools(result, &permitted);
                    }
                }
                if out_tx.send(line(&v)).await.is_err() {
                    break;
                }
            }
        })
    };

    // Calls in flight whose mandate ended: cancelled at the server, answered
    // with the denial.
    let watcher = {
        let (state, out_tx, srv_tx, proxy) = (
            Arc::clone(&state),
            out_tx.clone(),
            srv_tx.clone(),
            Arc::clone(&proxy),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(proxy.config.watch_ms));
            loop {
                tick.tick().await;
                let running: Vec<(String, Value, String)> = {
                    let s = state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    s.calls
                        .iter()
                        .map(|(k, (id, m))| (k.clone(), id.clone(), m.clone()))
                        .collect()
                };
                for (key, id, mandate) in running {
                    if proxy.still_in_force(&mandate) {
                        continue;
                    }
                    {
                        let mut s = state
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if s.calls.remove(&key).is_none() {
                            continue;
                        }
                        s.cancelled.insert(key);
                    }
                    let reasons = proxy.why_ended(&mandate);
                    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": id, "reason": format!("mandate ended: {}", reasons.join(", "))}});
                    let _ = srv_tx.send(line(&note)).await;
                    let d = mandate_core::decision::Decision {
                        allow: false,
                        reasons,
                        chain: proxy
                            .point
                            .verifier
                            .verify(&mandate)
                            .map(|c| c.shared_ids())
                            .unwrap_or_else(|_| std::sync::Arc::from([])),
                        obligations: Vec::new(),
                    };
                    let err = denial(&d, Some("the mandate ended while the call was in flight; the call was cancelled".into()));
                    let _ = out_tx.send(line(&err.response(Some(&id)))).await;
                }
            }
        })
    };

    // The client's messages to the server.
    let mut stdin = BufReader::new(tokio::io::stdin());
    let base = session.as_ref().map(Session::presented).unwrap_or_default();
    loop {
        let l = match read_line(&mut stdin, max).await {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) => break,
        };
        let bytes = match l {
            Line::Text(b) if b.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Text(b) => b,
            Line::TooLong(n) => {
                let e = message::RpcError::new(
                    message::INVALID_REQUEST,
                    format!("message: {n} bytes, over this proxy's limit of {max}"),
                );
                let _ = out_tx.send(line(&e.response(None))).await;
                continue;
            }
        };
        let mut m = match message::parse(&bytes, max) {
            Ok(m) => m,
            Err(r) => {
                let _ = out_tx.send(line(&r.error.response(r.id.as_ref()))).await;
                continue;
            }
        };
        match m.kind.clone() {
            Kind::Request { id, method } if method == "tools/call" => {
                let call = match message::tool_call(&m) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = out_tx.send(line(&e.response(Some(&id)))).await;
                        continue;
                    }
                };
                let p = base.with_meta(call.meta);
                let (d, detail) = proxy.decide_call(&up, &call, &p);
                let tool = format!("{}/{}", up.config.name, call.name);
                let mandate = p.mandate.map(str::to_owned);
                let d = proxy.point.fulfil(d).await;
                proxy.point.ship("tools/call", &tool, &d);
                if !d.allow {
                    let _ = out_tx
                        .send(line(&denial(&d, detail).response(Some(&id))))
                        .await;
                    continue;
                }
                if let Some(mandate) = mandate {
                    state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .calls
                        .insert(id.to_string(), (id.clone(), mandate));
                }
                message::strip_meta(&mut m);
            }
            Kind::Request { id, method } if method == "tools/list" => {
                let meta = match message::meta(&m) {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = out_tx.send(line(&e.response(Some(&id)))).await;
                        continue;
                    }
                };
                let permitted = proxy.permitted_tools(&up, &base.with_meta(meta));
                state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .lists
                    .insert(id.to_string(), permitted);
                message::strip_meta(&mut m);
            }
            Kind::Request { id, method } if !proxy.forwards(&method) => {
                let e = super::http::not_forwarded(&method);
                let _ = out_tx.send(line(&e.response(Some(&id)))).await;
                continue;
            }
            Kind::Notification { method } if !proxy.forwards(&method) => continue,
            Kind::Request { .. } | Kind::Notification { .. } | Kind::Response { .. } => {
                message::strip_meta(&mut m);
            }
        }
        let mut b = m.to_bytes();
        b.push(b'\n');
        if srv_tx.send(b).await.is_err() {
            break;
        }
    }
    // The client is gone: close the server's stdin and let it finish.
    drop(srv_tx);
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(s)) => s.code().unwrap_or(1),
        _ => {
            let _ = child.kill().await;
            1
        }
    };
    watcher.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), from_server).await;
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn lines_over_the_limit_are_discarded_whole() {
        let input = b"short\nthis one is far too long\nok\n";
        let mut r = BufReader::with_capacity(4, &input[..]);
        let mut got = Vec::new();
        while let Some(l) = read_line(&mut r, 8).await.unwrap() {
            got.push(match l {
                Line::Text(t) => String::from_utf8(t).unwrap(),
                Line::TooLong(n) => format!("<{n}>"),
            });
        }
        assert_eq!(got, ["short", "<24>", "ok"]);
    }
}
