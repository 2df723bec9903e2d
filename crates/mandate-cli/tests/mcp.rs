//! The MCP proxy as real processes: `mandate serve`, `mandate mcp`, a
//! FastMCP server and the official Python SDK as the client (PyPI `mcp`),
//! over Streamable HTTP and stdio. The procurement case study through MCP:
//! search allowed, `delete_vendor` denied and never run, a call in flight
//! cancelled when the program is cancelled, every later call denied
//! `completed`, and the audit log shows what was attempted after the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Guard, bin, free_port, wait_for_port};

fn temp(name: &str) -> PathBuf {
    common::temp("mcp", name)
}

fn token(dir: &Path, sub: &str, role: &str) -> String {
    common::token(&dir.join("data"), sub, role)
}

fn interop(file: &str) -> String {
    format!("{}/tests/interop/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

fn holder() -> mandate_core::keys::SigningKey {
    mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [5; 32])
}

/// The authority, with the program active.
struct World {
    dir: PathBuf,
    port: u16,
    _authority: Guard,
}

impl World {
    fn start(name: &str) -> Self {
        let dir = temp(name);
        let port = free_port();
        let mut child = Command::new(bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(&mut child, port, "mandate serve");
        let w = Self {
            dir,
            port,
            _authority: Guard(child),
        };
        let admin = format!("Bearer {}", w.token("admin@acme.example", "admin"));
        let (st, body) = http(
            w.port,
            "PUT",
            "/v1/facts",
            &[("Authorization", &admin)],
            &json!({"procurement": {"contingency_program": {"status": "active"}}}).to_string(),
        );
        assert_eq!(st, 200, "{body}");
        w
    }

    fn token(&self, sub: &str, role: &str) -> String {
        token(&self.dir, sub, role)
    }

    /// A procurement mandate for agent instance `instance`: (id, mandate).
    fn grant(&self, instance: &str) -> (String, String) {
        let c: Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../testdata/procurement-mandate.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let request = json!({
            "principal": "vp@acme.example",
            "agent": {"id": c["agent"]["id"], "instance": instance, "cnf": {"jwk": holder().public_jwk()}},
            "purpose": c["purpose"], "authorization_details": c["authorization_details"], "conditions": c["conditions"],
            "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z",
                "terminal_events": [{"type": "contingency_program.cancelled", "subject": "program:contingency-q4"}]},
            "delegation": c["delegation"],
            "discovery": {"types": ["sanctions_screening"], "locations": ["https://screening.example.net/v2"],
                "actions": ["screen_entity"], "max_lifetime_secs": 300},
        });
        let agent = format!("Bearer {}", self.token("agent-7", "agent"));
        let (st, r) = http(
            self.port,
            "POST",
            "/v1/requests",
            &[("Authorization", &agent)],
            &request.to_string(),
        );
        assert_eq!(st, 201, "{r}");
        let vp = format!("Bearer {}", self.token("vp@acme.example", "principal"));
        let (st, a) = http(
            self.port,
            "POST",
            &format!("/v1/requests/{}/approve", r["id"].as_str().unwrap()),
            &[("Authorization", &vp)],
            "",
        );
        assert_eq!(st, 200, "{a}");
        (
            a["mandate_id"].as_str().unwrap().to_owned(),
            a["mandate"].as_str().unwrap().to_owned(),
        )
    }

    fn cancel_program(&self) {
        let crm = format!("Bearer {}", self.token("crm", "event_source"));
        let (st, body) = http(
            self.port,
            "POST",
            "/v1/events",
            &[("Authorization", &crm)],
            &json!({"id": "crm-1", "type": "contingency_program.cancelled", "subject": "program:contingency-q4"}).to_string(),
        );
        assert_eq!(st, 202, "{body}");
    }

    /// The proxy's configuration: the vendor server's tools mapped to the
    /// mandate's terms (`upstream`: its URL, or `None` for stdio).
    fn config(&self, listen: Option<u16>, upstream: Option<&str>, session: &str) -> PathBuf {
        std::fs::write(
            self.dir.join("enforcer.token"),
            self.token("mcp-1", "enforcer"),
        )
        .unwrap();
        let listen = listen.map_or(String::new(), |p| format!("listen = \"127.0.0.1:{p}\"\n"));
        let url = upstream.map_or(String::new(), |u| format!("url = \"{u}\"\n"));
        let text = format!(
            r#"{listen}authority = "http://127.0.0.1:{port}"
token_file = "{dir}/enforcer.token"
spool_file = "{dir}/mcp.spool"
staleness_ms = 1500
watch_ms = 20
{session}
[[server]]
name = "vendors"
{url}location_base = "https://vendor-portal.example.com"

[[tool]]
name = "search_vendors"
type = "vendor_portal"
action = "search"
resource = {{ category = "{{category}}", region = "{{region}}", contract_template = "standard-logistics-v3", spend_tier = "pre-approved" }}

[[tool]]
name = "slow_report"
type = "vendor_portal"
action = "search"
resource = {{ category = "{{category}}", region = "{{region}}", contract_template = "standard-logistics-v3", spend_tier = "pre-approved" }}

[[tool]]
name = "screen_entity"
type = "sanctions_screening"
action = "screen_entity"
location = "https://screening.example.net/v2/entities/screen"

[[tool]]
name = "delete_vendor"
type = "vendor_portal"
action = "delete"
resource = {{ vendor_id = "{{vendor_id}}" }}
"#,
            port = self.port,
            dir = self.dir.display(),
        );
        let path = self.dir.join(if upstream.is_some() {
            "mcp.toml"
        } else {
            "mcp-stdio.toml"
        });
        std::fs::write(&path, text).unwrap();
        path
    }

    fn counts(&self, file: &str) -> Value {
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({}))
    }
}

/// Runs the Python client; one JSON value per step.
fn client(args: &[&str]) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(interop("mcp_client.py"))
        .args(args)
        .output()
        .expect("python3 with the `mcp` package (scripts/test installs it)");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn reasons(v: &Value) -> Vec<String> {
    serde_json::from_value(v["error"]["data"]["reasons"].clone()).unwrap_or_default()
}

const SEARCH: &str = r#"{"category": "logistics", "region": "north-america"}"#;

fn vendor_server_http(w: &World) -> (Guard, u16) {
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(interop("mcp_vendor_server.py"))
        .arg(w.dir.join("counts-http.json"))
        .args(["http", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&mut child, port, "FastMCP server");
    (Guard(child), port)
}

fn start_proxy(w: &World, config: &Path, port: u16) -> Guard {
    let mut child = Command::new(bin())
        .args(["mcp", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&mut child, port, "mandate mcp");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(port, "GET", "/_mandate/healthz", &[], "").1["fresh"] != json!(true) {
        assert!(Instant::now() < deadline, "the proxy never caught up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = w;
    Guard(child)
}

#[test]
fn the_procurement_case_study_through_mcp_over_streamable_http() {
    let w = World::start("http");
    let (id, mandate) = w.grant("inst-mcp-1");
    let (_server, server_port) = vendor_server_http(&w);
    let proxy_port = free_port();
    let config = w.config(
        Some(proxy_port),
        Some(&format!("http://127.0.0.1:{server_port}/mcp")),
        "",
    );
    let proxy = start_proxy(&w, &config, proxy_port);
    let url = format!("http://127.0.0.1:{proxy_port}/mcp");
    let key = serde_json::to_string(&holder().to_private_jwk()).unwrap();
    let steps = json!([
        ["list"],
        ["call", "search_vendors", serde_json::from_str::<Value>(SEARCH).unwrap()],
        ["call", "delete_vendor", {"vendor_id": "v-17"}],
        ["call", "Delete_Vendor", {"vendor_id": "v-17"}],
        ["call", "delete_v\u{0435}ndor", {"vendor_id": "v-17"}],
        ["call", "search_vendors", {"category": "logistics"}],
    ]);
    let out = client(&[
        "http",
        &url,
        &mandate,
        &key,
        "inst-mcp-1",
        &steps.to_string(),
    ]);
    // Only the tools the mandate permits are listed.
    assert_eq!(out[0], json!({"tools": ["search_vendors", "slow_report"]}));
    assert_eq!(out[1]["ok"], true, "{}", out[1]);
    assert!(
        out[1]["content"][0]
            .as_str()
            .unwrap()
            .contains("logistics-vendor-1")
    );
    // delete_vendor: denied with the documented code, and never run.
    assert_eq!(out[2]["error"]["code"], -32051);
    assert!(
        reasons(&out[2]).contains(&"action_not_permitted".to_owned()),
        "{}",
        out[2]
    );
    assert_eq!(out[2]["error"]["data"]["mandate_id"], json!(id));
    // Names differing by case or by a confusable letter are not the tool.
    assert_eq!(reasons(&out[3]), ["no_route"]);
    assert_eq!(reasons(&out[4]), ["no_route"]);
    // An argument the mapping needs is missing.
    assert_eq!(reasons(&out[5]), ["argument_missing"]);
    let counts = w.counts("counts-http.json");
    assert_eq!(counts["search_vendors"], 1, "{counts}");
    assert_eq!(
        counts.get("delete_vendor"),
        None,
        "a denied call ran: {counts}"
    );

    // A tool discovered during the mission: not in the mandate; the
    // authority grants it once, and the grant works for one call.
    let screen = json!({"entity": "Northwind Freight"});
    let agent = format!("Bearer {}", w.token("agent-7", "agent"));
    let (st, g) = http(w.port, "POST", &format!("/v1/mandates/{id}/discovery"), &[("Authorization", &agent)],
        &json!({"type": "sanctions_screening", "location": "https://screening.example.net/v2/entities/screen", "action": "screen_entity"}).to_string());
    assert_eq!(st, 200, "{g}");
    let once = g["mandate"].as_str().unwrap();
    let out = client(&[
        "http",
        &url,
        &mandate,
        &key,
        "inst-mcp-1",
        &json!([
            ["call", "screen_entity", screen],
            ["call_meta", "screen_entity", screen, {"io.mandate/mandate": once}],
            ["call_meta", "screen_entity", screen, {"io.mandate/mandate": once}],
        ])
        .to_string(),
    ]);
    assert!(
        reasons(&out[0]).contains(&"resource_type_not_permitted".to_owned()),
        "{}",
        out[0]
    );
    assert_eq!(out[1]["ok"], true, "{}", out[1]);
    assert_eq!(reasons(&out[2]), ["one_time_used"], "{}", out[2]);
    assert_eq!(w.counts("counts-http.json")["screen_entity"], 1);

    // A copied mandate without the holder's proof, by hand.
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "search_vendors", "arguments": serde_json::from_str::<Value>(SEARCH).unwrap()}})
    .to_string();
    let (st, body) = http(
        proxy_port,
        "POST",
        "/mcp",
        &[
            ("Mandate", &mandate),
            ("Mandate-Agent-Instance", "inst-mcp-1"),
        ],
        &call,
    );
    assert_eq!(
        (st, reasons(&body)),
        (200, vec!["pop_missing".to_owned()]),
        "{body}"
    );
    assert_eq!(body["id"], 9);

    // Bad input: clear JSON-RPC errors, nothing forwarded.
    let (st, body) = http(proxy_port, "POST", "/mcp", &[], "{\"jsonrpc\": \"2.0\", ");
    assert_eq!(
        (st, &body["error"]["code"]),
        (400, &json!(-32700)),
        "{body}"
    );
    let (st, body) = http(proxy_port, "POST", "/mcp", &[], &format!("[{call}]"));
    assert_eq!((st, &body["error"]["code"]), (400, &json!(-32600)));
    assert!(body["error"]["message"].as_str().unwrap().contains("batch"));
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search_vendors", "arguments": {"category": "x".repeat(2 << 20), "region": "r"}}}).to_string();
    let (st, body) = http(proxy_port, "POST", "/mcp", &[], &big);
    assert_eq!((st, &body["error"]["code"]), (413, &json!(-32600)));
    let (st, body) = http(
        proxy_port,
        "POST",
        "/mcp",
        &[],
        r#"{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#,
    );
    assert_eq!(
        (st, &body["error"]["code"], &body["id"]),
        (200, &json!(-32601), &json!(4)),
        "{body}"
    );
    let (st, body) = http(
        proxy_port,
        "POST",
        "/mcp",
        &[],
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"search_vendors","name":"delete_vendor"}}"#,
    );
    assert_eq!(
        (st, &body["error"]["code"]),
        (400, &json!(-32600)),
        "{body}"
    );
    assert_eq!(w.counts("counts-http.json").get("delete_vendor"), None);

    // The official TypeScript SDK as a second client.
    let ts = Command::new("node")
        .current_dir(interop("mcp-ts"))
        .args(["client.mjs", &url, &mandate, &key, "inst-mcp-1"])
        .output()
        .expect("node, with npm ci run in tests/interop/mcp-ts (scripts/test does)");
    assert!(
        ts.status.success(),
        "{}",
        String::from_utf8_lossy(&ts.stderr)
    );
    let ts: Value = serde_json::from_slice(&ts.stdout).unwrap();
    assert_eq!(ts["tools"], json!(["search_vendors", "slow_report"]));
    assert!(
        ts["search"][0]
            .as_str()
            .unwrap()
            .contains("logistics-vendor-1"),
        "{ts}"
    );
    assert_eq!(ts["delete"]["code"], -32051, "{ts}");
    assert!(
        ts["delete"]["data"]["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("action_not_permitted"))
    );
    assert_eq!(w.counts("counts-http.json")["search_vendors"], 2);

    // A long call in flight when the program is cancelled: cancelled at the
    // server, answered with the denial, long before it would have finished.
    let slow = json!([["call", "slow_report", {"category": "logistics", "region": "north-america", "seconds": 6}]]);
    let inflight = {
        let (url, mandate, key, steps) =
            (url.clone(), mandate.clone(), key.clone(), slow.to_string());
        std::thread::spawn(move || client(&["http", &url, &mandate, &key, "inst-mcp-1", &steps]))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.counts("counts-http.json").get("slow_report").is_none() {
        assert!(Instant::now() < deadline, "the slow call never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Timed from when the tool began its six seconds (not from the client's
    // start, which a busy machine can stretch by seconds of Python imports).
    let started = Instant::now();
    w.cancel_program();
    let out = inflight.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the call ran to its end"
    );
    assert_eq!(out[0]["error"]["code"], -32051, "{}", out[0]);
    assert_eq!(reasons(&out[0]), ["completed"]);

    // Every later call is denied `completed`, and nothing is listed.
    let out = client(&[
        "http",
        &url,
        &mandate,
        &key,
        "inst-mcp-1",
        &json!([
            [
                "call",
                "search_vendors",
                serde_json::from_str::<Value>(SEARCH).unwrap()
            ],
            ["list"]
        ])
        .to_string(),
    ]);
    assert_eq!(reasons(&out[0]), ["completed"], "{}", out[0]);
    assert_eq!(out[1], json!({"tools": []}));
    assert_eq!(w.counts("counts-http.json")["search_vendors"], 2);
    // The cancelled call never finished at the server.
    std::thread::sleep(
        Duration::from_secs(6).saturating_sub(started.elapsed()) + Duration::from_millis(500),
    );
    assert_eq!(
        w.counts("counts-http.json").get("slow_report_finished"),
        None
    );

    // The audit log: every call after the end, by tool.
    drop(proxy);
    let audit = Command::new(bin())
        .args([
            "audit",
            "query",
            "--mandate",
            &id,
            "--after-end",
            "--data-dir",
        ])
        .arg(w.dir.join("data"))
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let text = String::from_utf8(audit.stdout).unwrap();
    assert!(text.contains("contingency_program.cancelled"), "{text}");
    assert!(
        text.contains("vendors/search_vendors") && text.contains("completed"),
        "{text}"
    );
}

#[test]
fn a_stdio_server_wrapped_by_the_proxy_with_the_mandate_configured_once() {
    let w = World::start("stdio");
    let (_, mandate) = w.grant("inst-mcp-2");
    std::fs::write(w.dir.join("agent.mandate"), &mandate).unwrap();
    std::fs::write(
        w.dir.join("holder.jwk"),
        serde_json::to_string(&holder().to_private_jwk()).unwrap(),
    )
    .unwrap();
    let session = format!(
        "[session]\nmandate_file = \"{d}/agent.mandate\"\nholder_key_file = \"{d}/holder.jwk\"\nagent_instance = \"inst-mcp-2\"\n",
        d = w.dir.display()
    );
    let config = w.config(None, None, &session);
    let server = json!([
        interop("mcp_vendor_server.py"),
        w.dir.join("counts-stdio.json"),
        "stdio"
    ]);
    let server_args: Vec<String> = serde_json::from_value(server.clone()).unwrap();
    let mut with_python = vec!["python3".to_owned()];
    with_python.extend(server_args);
    // A mandate sent in `_meta` is proved in `_meta`: the holder's DPoP
    // proof for the proxy's stdio endpoint (`http://localhost/mcp`).
    let now = mandate_core::timestamp::UnixTime::from_secs(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap(),
    )
    .unwrap();
    let proof = mandate_core::pop::make_proof(
        &holder(),
        "POST",
        "http://localhost/mcp",
        None,
        "stdio-proof-1",
        now,
    );
    let steps = json!([
        ["list"],
        ["call", "search_vendors", serde_json::from_str::<Value>(SEARCH).unwrap()],
        ["call", "delete_vendor", {"vendor_id": "v-17"}],
        ["call_meta", "search_vendors", serde_json::from_str::<Value>(SEARCH).unwrap(), {"io.mandate/mandate": mandate}],
        ["call_meta", "search_vendors", serde_json::from_str::<Value>(SEARCH).unwrap(), {"io.mandate/mandate": mandate, "io.mandate/dpop": proof}],
        ["call_meta", "search_vendors", serde_json::from_str::<Value>(SEARCH).unwrap(), {"io.mandate/mandate": mandate, "io.mandate/dpop": proof}],
    ]);
    let out = client(&[
        "stdio",
        config.to_str().unwrap(),
        bin(),
        &json!(with_python).to_string(),
        &steps.to_string(),
    ]);
    assert_eq!(out[0], json!({"tools": ["search_vendors", "slow_report"]}));
    assert_eq!(out[1]["ok"], true, "{}", out[1]);
    assert!(
        reasons(&out[2]).contains(&"action_not_permitted".to_owned()),
        "{}",
        out[2]
    );
    assert_eq!(reasons(&out[3]), ["pop_missing"], "{}", out[3]);
    assert_eq!(out[4]["ok"], true, "{}", out[4]);
    assert_eq!(reasons(&out[5]), ["pop_replayed"], "{}", out[5]);
    let counts = w.counts("counts-stdio.json");
    assert_eq!(counts["search_vendors"], 2, "{counts}");
    assert_eq!(
        counts.get("delete_vendor"),
        None,
        "a denied call ran: {counts}"
    );

    // Bad lines by hand: each gets a clear error, the session goes on.
    let mut child = Command::new(bin())
        .args(["mcp", "--config"])
        .arg(&config)
        .arg("--")
        .args(&with_python)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut next = || {
        let mut l = String::new();
        stdout.read_line(&mut l).unwrap();
        serde_json::from_str::<Value>(&l).unwrap()
    };
    writeln!(stdin, "{{not json").unwrap();
    assert_eq!(next()["error"]["code"], -32700);
    writeln!(stdin, r#"[{{"jsonrpc":"2.0","id":1,"method":"ping"}}]"#).unwrap();
    assert_eq!(next()["error"]["code"], -32600);
    writeln!(
        stdin,
        "{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(2 << 20)
    )
    .unwrap();
    let e = next();
    assert_eq!(e["error"]["code"], -32600);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("limit"),
        "{e}"
    );
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{{"name":"x"}}}}"#
    )
    .unwrap();
    assert_eq!(next()["id"], 3);
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"delete_vendor","arguments":{{"vendor_id":"v"}}}}}}"#).unwrap();
    let e = next();
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!(4), json!(-32051)),
        "{e}"
    );
    // The program is paused: the condition fails at the authority, the
    // mandate is suspended, and calls are denied within the propagation
    // window. The facts can reach the proxy before the suspension does: then
    // the condition itself denies first (`condition_failed:`), and the
    // suspension follows.
    let admin = format!("Bearer {}", w.token("admin@acme.example", "admin"));
    let (st, _) = http(
        w.port,
        "PUT",
        "/v1/facts",
        &[("Authorization", &admin)],
        &json!({"procurement": {"contingency_program": {"status": "paused"}}}).to_string(),
    );
    assert_eq!(st, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 10.. {
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"search_vendors","arguments":{SEARCH}}}}}"#).unwrap();
        let e = next();
        assert_eq!(e["id"], n);
        if e["error"]["code"] == -32051 {
            let why = reasons(&e);
            if why.contains(&"suspended".to_owned()) {
                break;
            }
            assert_eq!(why, ["condition_failed:program-active"], "{e}");
        }
        assert!(
            Instant::now() < deadline,
            "not denied as suspended 10 s after the condition failed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the proxy did not end with its client"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.counts("counts-stdio.json").get("delete_vendor"), None);
}
