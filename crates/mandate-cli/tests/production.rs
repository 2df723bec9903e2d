//! TLS and key rotation as real processes: `mandate serve` and `mandate gateway` with
//! certificates from a private CA (rcgen), called by a rustls client that
//! trusts only that CA. The authority's metadata names its https issuer, a
//! renewed certificate is served without a restart, plain HTTP is refused
//! off loopback, and a gateway serving TLS checks an agent's mandate and
//! proof and forwards to an https upstream it verifies against the CA.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{Guard, bin, free_port, token, wait_for_port};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};

fn temp_dir(name: &str) -> PathBuf {
    common::temp("tls", name)
}

/// A private CA that signs server certificates for 127.0.0.1.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Mandate test CA");
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes a leaf for 127.0.0.1 and localhost to `cert`/`key`; its DER.
    fn leaf(&self, cert: &Path, key: &Path) -> Vec<u8> {
        let k = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let c = params.signed_by(&k, &self.issuer).unwrap();
        // Key first: a reader never sees a new certificate with the old key.
        std::fs::write(key, k.serialize_pem()).unwrap();
        std::fs::write(cert, c.pem()).unwrap();
        c.der().to_vec()
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        // Every call a full handshake: a resumed session would show the
        // certificate of the session, not the one served now.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// What a TLS call saw: the status, the body, and the server's certificate.
struct Answer {
    status: u16,
    body: Value,
    peer: Vec<u8>,
}

fn https(
    config: &Arc<rustls::ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, String> {
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::clone(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // One write: the request whole in one TLS record, nothing left for the
    // server to find unread when it closes after answering.
    req.push_str(body);
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    // A server that closes without close_notify is an error here only when
    // nothing was read.
    if let Err(e) = tls.read_to_end(&mut out)
        && out.is_empty()
    {
        return Err(e.to_string());
    }
    let peer = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(Answer {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no status")?,
        body: serde_json::from_str(&body).unwrap_or(Value::String(body.clone())),
        peer,
    })
}

/// `mandate COMMAND --config CONFIG` (`gateway`, `mcp`), once it listens
/// on `port`.
fn listening(command: &str, config: &Path, port: u16) -> Guard {
    let mut child = Command::new(bin())
        .args([command, "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&mut child, port, &format!("mandate {command}"));
    Guard(child)
}

/// `call`'s answer once `done` holds of it, asked every 100 ms for at most
/// 20 s (a propagation bound, not a timing assertion); else the last one.
fn until(mut call: impl FnMut() -> Answer, done: impl Fn(&Answer) -> bool) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call();
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A chunked body's content (RFC 9112 §7.1), without extensions or
/// trailers.
fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("chunk: no size line")?;
        let size =
            usize::from_str_radix(size.trim(), 16).map_err(|e| format!("chunk size: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).ok_or("chunk: shorter than its size")?);
        rest = after
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or("chunk: no line end after it")?;
    }
}

/// `mandate serve` over TLS with the CA's certificate.
struct Authority {
    dir: PathBuf,
    port: u16,
    ca: Ca,
    client: Arc<rustls::ClientConfig>,
    _child: Guard,
}

impl Authority {
    fn start(name: &str) -> Self {
        Self::start_with(name, "")
    }

    /// With `config` (TOML) as its `--config` file.
    fn start_with(name: &str, config: &str) -> Self {
        let dir = temp_dir(name);
        std::fs::write(dir.join("authority.toml"), config).unwrap();
        let ca = Ca::new();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        ca.leaf(&dir.join("cert.pem"), &dir.join("key.pem"));
        let port = free_port();
        let mut child = Command::new(bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--outbound-ca",
            ])
            .arg(dir.join("ca.pem"))
            .arg("--tls-cert")
            .arg(dir.join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.join("key.pem"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(dir.join("authority.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(&mut child, port, "mandate serve");
        let client = ca.client_config();
        Self {
            dir,
            port,
            ca,
            client,
            _child: Guard(child),
        }
    }

    fn call(&self, method: &str, path: &str, bearer: Option<&str>, body: &str) -> Answer {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        https(&self.client, self.port, method, path, &headers, body).unwrap()
    }

    fn token(&self, sub: &str, role: &str) -> String {
        token(&self.dir.join("data"), sub, role)
    }
}

#[test]
fn the_authority_serves_https_names_its_https_issuer_and_refuses_clients_that_do_not_trust_it() {
    let a = Authority::start("serve");
    let meta = a.call("GET", "/.well-known/ssf-configuration", None, "");
    assert_eq!(meta.status, 200, "{}", meta.body);
    let issuer = format!("https://127.0.0.1:{}", a.port);
    assert_eq!(meta.body["issuer"], issuer.as_str());
    for (k, v) in meta.body.as_object().unwrap() {
        if k.ends_with("_endpoint") || k == "jwks_uri" {
            assert!(
                v.as_str().unwrap().starts_with("https://"),
                "{k} = {v} must be https"
            );
        }
    }
    // Mandates say the same issuer.
    let keys = a.call("GET", "/.well-known/jwks.json", None, "");
    assert_eq!(keys.status, 200);
    assert!(!keys.body["keys"].as_array().unwrap().is_empty());

    // A client that trusts another CA cannot talk to it.
    let stranger = Ca::new().client_config();
    let e = https(&stranger, a.port, "GET", "/v1/healthz", &[], "").err();
    assert!(
        e.as_deref().is_some_and(|e| e.contains("certificate")),
        "{e:?}"
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("\"keys\""),
        "keys over plain HTTP: {}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let a = Authority::start("renew");
    let first = a.call("GET", "/.well-known/jwks.json", None, "").peer;
    assert!(!first.is_empty());
    let renewed = a.ca.leaf(&a.dir.join("cert.pem"), &a.dir.join("key.pem"));
    assert_ne!(first, renewed);
    // The files are looked at every 2 s, at a handshake.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = a.call("GET", "/.well-known/jwks.json", None, "");
        assert_eq!(seen.status, 200);
        if seen.peer == renewed {
            break;
        }
        assert_eq!(seen.peer, first, "a certificate that is neither");
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // A broken renewal (a key that does not fit) is not served: the last
    // good certificate stays.
    let other = KeyPair::generate().unwrap();
    std::fs::write(a.dir.join("key.pem"), other.serialize_pem()).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..3 {
        let seen = a.call("GET", "/.well-known/jwks.json", None, "");
        assert_eq!(seen.status, 200);
        assert_eq!(seen.peer, renewed);
    }
}

#[test]
fn plain_http_off_loopback_and_half_a_tls_pair_are_refused_at_start() {
    let dir = temp_dir("refuse");
    let out = Command::new(bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen") && err.contains("allow_plain_http"),
        "{err}"
    );

    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.join("missing.pem"))
        .arg("--tls-key")
        .arg(dir.join("missing-key.pem"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.pem"), "{err}");

    // The gateway says the same of its own listener.
    let err = gateway_refuses(&dir, "0.0.0.0:0", "");
    assert!(
        err.contains("listen") && err.contains("allow_plain_http"),
        "{err}"
    );
    // Client certificates come with a TLS handshake: asked for on a plain
    // listener, the gateway does not start.
    let err = gateway_refuses(
        &dir,
        "127.0.0.1:0",
        "client_certificates = \"self_signed\"\n",
    );
    assert!(
        err.contains("client_certificates") && err.contains("tls_cert_file"),
        "{err}"
    );
    // Checking agents' certificates against a CA needs the CA; a CA file
    // that nothing would read is a mistake said at once.
    let tls = "tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n";
    let err = gateway_refuses(
        &dir,
        "127.0.0.1:0",
        &format!("{tls}client_certificates = \"pki\"\n"),
    );
    assert!(
        err.contains("client_ca_file") && err.contains("missing"),
        "{err}"
    );
    let err = gateway_refuses(
        &dir,
        "127.0.0.1:0",
        &format!("{tls}client_certificates = \"self_signed\"\nclient_ca_file = \"ca.pem\"\n"),
    );
    assert!(
        err.contains("client_ca_file") && err.contains("pki"),
        "{err}"
    );
}

/// Starts a gateway on `listen` with `extra` settings, which must refuse to
/// start: what it said.
fn gateway_refuses(dir: &Path, listen: &str, extra: &str) -> String {
    std::fs::write(dir.join("t"), "x").unwrap();
    std::fs::write(
        dir.join("gw.toml"),
        format!(
            "listen = \"{listen}\"\nauthority = \"https://127.0.0.1:1\"\ntoken_file = \"{}\"\nupstream = \"https://127.0.0.1:2\"\nlocation_base = \"https://ci.example.com\"\n{extra}",
            dir.join("t").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["gateway", "--config"])
        .arg(dir.join("gw.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An https upstream on the CA's certificate: answers every request with
/// what it saw, and counts them.
fn tls_upstream(ca: &Ca, dir: &Path) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    ca.leaf(&dir.join("up-cert.pem"), &dir.join("up-key.pem"));
    let files = mandate_authority::tls::TlsFiles {
        cert: dir.join("up-cert.pem"),
        key: dir.join("up-key.pem"),
    };
    let key = mandate_authority::tls::load(&files).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key))),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            let config = Arc::clone(&config);
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, sock);
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut headers = String::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                    headers.push_str(&h.to_ascii_lowercase());
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = json!({"line": line.trim(), "saw_mandate": headers.contains("\nmandate:") || headers.starts_with("mandate:"), "saw_dpop": headers.contains("dpop:")}).to_string();
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, count)
}

fn now() -> mandate_core::timestamp::UnixTime {
    mandate_core::timestamp::UnixTime::from_secs(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap(),
    )
    .unwrap()
}

/// A gateway config in the authority's directory: TLS on its side, the
/// authority and the upstream trusted through the CA file, one route.
fn gateway_config(a: &Authority, gw_port: u16, upstream: u16, extra: &str) {
    let dir = &a.dir;
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            r#"{common}
upstream = "https://127.0.0.1:{upstream}"
upstream_ca_file = "{dir}/ca.pem"
location_base = "https://ci.example.com"
{extra}

[[route]]
method = "GET"
path = "/logs/{{id}}"
type = "ci_logs"
action = "read"
"#,
            common = enforcement_point(a, "gw", gw_port),
            dir = dir.display(),
        ),
    )
    .unwrap();
}

/// The settings a gateway and an MCP proxy share, as `name` on `port`: TLS
/// on its side (a certificate from the CA), the authority over TLS trusted
/// through the CA file, an enforcer token, a spool. Writes the files.
fn enforcement_point(a: &Authority, name: &str, port: u16) -> String {
    let dir = &a.dir;
    a.ca.leaf(
        &dir.join(format!("{name}-cert.pem")),
        &dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(
        dir.join("enforcer.token"),
        a.token(&format!("{name}-1"), "enforcer"),
    )
    .unwrap();
    format!(
        r#"listen = "127.0.0.1:{port}"
authority = "https://127.0.0.1:{auth}"
authority_ca_file = "{dir}/ca.pem"
token_file = "{dir}/enforcer.token"
spool_file = "{dir}/{name}.spool"
tls_cert_file = "{dir}/{name}-cert.pem"
tls_key_file = "{dir}/{name}-key.pem""#,
        auth = a.port,
        dir = dir.display(),
    )
}

fn holder() -> mandate_core::keys::SigningKey {
    mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [9; 32])
}

/// A mandate to read CI logs, held by `holder`: (id, mandate).
fn grant(a: &Authority, holder: &mandate_core::keys::SigningKey, ticket: &str) -> (String, String) {
    grant_bound(a, &json!({"jwk": holder.public_jwk()}), ticket)
}

/// A mandate to read CI logs whose holder `cnf` is given: (id, mandate).
fn grant_bound(a: &Authority, cnf: &Value, ticket: &str) -> (String, String) {
    let asked = ask(a, cnf, ticket);
    assert_eq!(asked.status, 201, "{}", asked.body);
    let approved = a.call(
        "POST",
        &format!(
            "/v1/requests/{}/approve",
            asked.body["id"].as_str().unwrap()
        ),
        Some(&a.token("lead@acme.example", "principal")),
        "",
    );
    assert_eq!(approved.status, 200, "{}", approved.body);
    (
        approved.body["mandate_id"].as_str().unwrap().to_owned(),
        approved.body["mandate"].as_str().unwrap().to_owned(),
    )
}

/// The agent's request for that mandate, as the authority answered it.
fn ask(a: &Authority, cnf: &Value, ticket: &str) -> Answer {
    let request = json!({
        "principal": "lead@acme.example",
        "agent": {"id": "ci-agent", "instance": "run-1", "cnf": cnf},
        "purpose": {"objective": "Read the logs of the failing build", "business_context": ticket},
        "authorization_details": [{"type": "ci_logs", "locations": ["https://ci.example.com/logs"], "actions": ["read"]}],
        "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z", "terminal_events": [{"type": "build.fixed", "subject": ticket}]},
        "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"},
    });
    a.call(
        "POST",
        "/v1/requests",
        Some(&a.token("ci-agent", "agent")),
        &request.to_string(),
    )
}

/// One call through the gateway with the mandate and a fresh proof.
fn through_gateway(
    client: &Arc<rustls::ClientConfig>,
    gw_port: u16,
    holder: &mandate_core::keys::SigningKey,
    mandate: &str,
) -> Answer {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let jti = format!(
        "p-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let proof = mandate_core::pop::make_proof(
        holder,
        "GET",
        &format!("https://127.0.0.1:{gw_port}/logs/42"),
        None,
        &jti,
        now(),
    );
    https(
        client,
        gw_port,
        "GET",
        "/logs/42",
        &[
            ("Mandate", mandate),
            ("DPoP", proof.as_str()),
            ("mandate-agent-instance", "run-1"),
        ],
        "",
    )
    .unwrap()
}

fn kid_of(mandate: &str) -> String {
    let header = mandate.split('.').next().unwrap();
    let bytes = base64_url(header);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

fn base64_url(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = A.iter().position(|x| *x == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn a_rotated_key_is_used_without_a_wrong_denial_and_the_old_one_stops_verifying_when_retired() {
    let a = Authority::start("rotate");
    let (upstream, _) = tls_upstream(&a.ca, &a.dir);
    let gw_port = free_port();
    // Keys fetched every second here (60 s by default).
    gateway_config(&a, gw_port, upstream, "key_refresh_secs = 1");
    let holder = holder();
    let (_, old_mandate) = grant(&a, &holder, "ticket:CI-1");
    let old_kid = kid_of(&old_mandate);
    let _gw = listening("gateway", &a.dir.join("gateway.toml"), gw_port);
    let client = a.ca.client_config();
    let deadline = Instant::now() + Duration::from_secs(20);
    while through_gateway(&client, gw_port, &holder, &old_mandate).status != 200 {
        assert!(Instant::now() < deadline, "the gateway never allowed");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Rotate on the running authority's data directory: published now,
    // signing in 3 s, the old key retiring 6 s after that.
    let out = Command::new(bin())
        .args([
            "keys",
            "rotate",
            "--publish-secs",
            "3",
            "--overlap-secs",
            "6",
            "--data-dir",
        ])
        .arg(a.dir.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated_at = Instant::now();
    let jwks_len = || {
        a.call("GET", "/.well-known/jwks.json", None, "").body["keys"]
            .as_array()
            .unwrap()
            .len()
    };
    // Both keys are published within a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while jwks_len() != 2 {
        assert!(Instant::now() < deadline, "the new key was not published");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Until the old key retires, every request is allowed: with the old
    // mandate throughout, and with one issued under the new key as soon
    // as the new key signs.
    let mut new_mandate: Option<String> = None;
    let mut calls = 0;
    while rotated_at.elapsed() < Duration::from_millis(8_500) {
        let r = through_gateway(&client, gw_port, &holder, &old_mandate);
        assert_eq!(
            r.status, 200,
            "old mandate wrongly denied during the overlap: {}",
            r.body
        );
        calls += 1;
        if new_mandate.is_none() && rotated_at.elapsed() > Duration::from_millis(4_000) {
            let (_, m) = grant(&a, &holder, "ticket:CI-2");
            assert_ne!(
                kid_of(&m),
                old_kid,
                "a mandate issued after the switch is signed by the new key"
            );
            new_mandate = Some(m);
        }
        if let Some(m) = &new_mandate {
            let r = through_gateway(&client, gw_port, &holder, m);
            assert_eq!(r.status, 200, "new mandate wrongly denied: {}", r.body);
            calls += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(calls > 20, "{calls}");
    let new_mandate = new_mandate.unwrap();
    // After the retirement (9 s, plus a second for the ring and one for the
    // gateway's fetch), the old key is gone everywhere.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = through_gateway(&client, gw_port, &holder, &old_mandate);
        if r.status == 403 {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            Instant::now() < deadline,
            "the retired key still verifies at the gateway"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(jwks_len(), 1);
    assert_eq!(
        through_gateway(&client, gw_port, &holder, &new_mandate).status,
        200
    );
    let listed = Command::new(bin())
        .args(["--output", "json", "keys", "list", "--data-dir"])
        .arg(a.dir.join("data"))
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let status: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["retired", "signing"]);
}

#[test]
fn a_gateway_on_tls_enforces_mandates_and_forwards_to_an_https_upstream_it_verifies() {
    let a = Authority::start("gateway");
    let dir = a.dir.clone();
    let (upstream, forwarded) = tls_upstream(&a.ca, &dir);
    // The gateway's own certificate is from the same CA.
    let gw_port = free_port();
    gateway_config(&a, gw_port, upstream, "delivery = \"push\"");

    let holder = holder();
    let (mandate_id, mandate) = grant(&a, &holder, "ticket:CI-1");

    // The gateway trusts the authority and the upstream only through the CA file.
    let _gw = listening("gateway", &dir.join("gateway.toml"), gw_port);
    let client = a.ca.client_config();
    let call = |_: &str| through_gateway(&client, gw_port, &holder, &mandate);
    // Fresh once it has the authority's state (over TLS).
    let allowed = until(
        || call(&format!("p-{}", Instant::now().elapsed().as_nanos())),
        |r| r.status == 200,
    );
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.body["line"], "GET /logs/42 HTTP/1.1");
    // The mandate and the proof stop at the gateway.
    assert_eq!(allowed.body["saw_mandate"], false);
    assert_eq!(allowed.body["saw_dpop"], false);

    // The end of the mandate reaches the gateway by push over TLS.
    let revoked = a.call(
        "POST",
        &format!("/v1/mandates/{mandate_id}/revoke"),
        Some(&a.token("lead@acme.example", "principal")),
        &json!({"reason": "build fixed"}).to_string(),
    );
    assert!(revoked.status < 300, "{}", revoked.body);
    let denied = until(
        || call(&format!("q-{}", Instant::now().elapsed().as_nanos())),
        |r| r.status == 403,
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(
        denied.body.to_string().contains("revoked"),
        "{}",
        denied.body
    );
    // From now on nothing reaches the upstream.
    let before = forwarded.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(call("r-1").status, 403);
    assert_eq!(
        forwarded.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "a denied request reached the upstream"
    );
}

/// An agent's self-signed TLS client certificate (RFC 8705 §2.2): its
/// DER and its key.
fn agent_certificate(name: &str) -> (rustls_pki_types::CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.der().clone(), key)
}

/// Presents `chain` signed for with `key`, whether or not they belong
/// together (an attacker's client may present a certificate it copied).
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl Ca {
    /// A client that trusts the CA and presents `cert` with `key`.
    fn client_with_certificate(
        &self,
        cert: &rustls_pki_types::CertificateDer<'static>,
        key: &KeyPair,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        let certified = rustls::sign::CertifiedKey::new(vec![cert.clone()], signer);
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Presents(Arc::new(certified))));
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

impl Ca {
    /// A client certificate for the agent, signed by this CA, and its key.
    fn client_leaf(&self) -> (rustls_pki_types::CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["ci-agent".to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.der().clone(), key)
    }
}

/// `client_certificates = "pki"` (RFC 8705 §2.1): the gateway accepts only
/// client certificates from the agents' CA, and then binds by thumbprint as
/// in self-signed mode. A self-signed certificate, even one a mandate
/// names, gets no connection.
#[test]
fn with_a_client_ca_only_that_cas_certificates_reach_the_decision() {
    let a = Authority::start("mtls-pki");
    let dir = a.dir.clone();
    let (upstream, forwarded) = tls_upstream(&a.ca, &dir);
    let agents_ca = Ca::new();
    std::fs::write(dir.join("agents-ca.pem"), agents_ca.pem()).unwrap();
    let gw_port = free_port();
    gateway_config(
        &a,
        gw_port,
        upstream,
        &format!(
            "delivery = \"push\"\nclient_certificates = \"pki\"\nclient_ca_file = \"{}\"",
            dir.join("agents-ca.pem").display()
        ),
    );
    let holder = holder();
    let (issued, issued_key) = agents_ca.client_leaf();
    let (own, own_key) = agent_certificate("ci-agent");
    let bind = |der: &rustls_pki_types::CertificateDer<'_>, ticket: &str| {
        grant_bound(
            &a,
            &json!({"jwk": holder.public_jwk(), "x5t#S256": mandate_core::hash::sha256_b64(der.as_ref())}),
            ticket,
        )
        .1
    };
    let (to_issued, to_own) = (bind(&issued, "ticket:CI-11"), bind(&own, "ticket:CI-12"));
    let _gw = listening("gateway", &dir.join("gateway.toml"), gw_port);

    let agent = a.ca.client_with_certificate(&issued, &issued_key);
    let allowed = until(
        || unproved(&agent, gw_port, &to_issued).unwrap(),
        |r| r.status == 200,
    );
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let reached = forwarded.load(std::sync::atomic::Ordering::SeqCst);
    let outsider = a.ca.client_with_certificate(&own, &own_key);
    assert!(
        unproved(&outsider, gw_port, &to_own).is_err(),
        "a certificate from outside the agents' CA was accepted"
    );
    // The CA's certificate still binds by thumbprint: not another mandate's.
    let r = unproved(&agent, gw_port, &to_own).unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.to_string().contains("pop_certificate_mismatch"),
        "{}",
        r.body
    );
    // And agents without certificates still connect (DPoP).
    let (_, keyed) = grant(&a, &holder, "ticket:CI-13");
    let r = through_gateway(&a.ca.client_config(), gw_port, &holder, &keyed);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        forwarded.load(std::sync::atomic::Ordering::SeqCst),
        reached + 1,
        "only the keyed mandate's request was forwarded after the first"
    );
}

/// A call through the gateway with the mandate and no DPoP proof.
fn unproved(
    client: &Arc<rustls::ClientConfig>,
    gw_port: u16,
    mandate: &str,
) -> Result<Answer, String> {
    https(
        client,
        gw_port,
        "GET",
        "/logs/42",
        &[("Mandate", mandate), ("mandate-agent-instance", "run-1")],
        "",
    )
}

/// RFC 8705 through the real gateway: a mandate bound to the agent's TLS
/// client certificate is used with no per-request proof, on a connection
/// that presented that certificate, and on no other: not without one (a
/// valid DPoP proof does not stand in), not with another certificate, not
/// with the certificate copied but without its key; and it still ends when
/// revoked. A DPoP-bound mandate keeps working on the same gateway without
/// a certificate.
#[test]
fn a_certificate_bound_mandate_is_used_only_on_a_connection_that_proves_its_certificate() {
    let a = Authority::start("mtls");
    let dir = a.dir.clone();
    let (upstream, forwarded) = tls_upstream(&a.ca, &dir);
    let gw_port = free_port();
    gateway_config(
        &a,
        gw_port,
        upstream,
        "delivery = \"push\"\nclient_certificates = \"self_signed\"",
    );
    let holder = holder();
    let (cert, cert_key) = agent_certificate("ci-agent");
    let thumbprint = mandate_core::hash::sha256_b64(cert.as_ref());

    // A thumbprint that is not one is refused when asked for, by name.
    let bad = ask(
        &a,
        &json!({"jwk": holder.public_jwk(), "x5t#S256": "not-a-thumbprint"}),
        "ticket:CI-9",
    );
    assert!(
        (400..500).contains(&bad.status) && bad.body.to_string().contains("x5t#S256"),
        "{} {}",
        bad.status,
        bad.body
    );

    let (mandate_id, mandate) = grant_bound(
        &a,
        &json!({"jwk": holder.public_jwk(), "x5t#S256": thumbprint}),
        "ticket:CI-7",
    );
    let payload: Value =
        serde_json::from_slice(&base64_url(mandate.split('.').nth(1).unwrap())).unwrap();
    assert_eq!(payload["agent"]["cnf"]["x5t#S256"], thumbprint.as_str());
    let (_, dpop_mandate) = grant(&a, &holder, "ticket:CI-8");

    let _gw = listening("gateway", &dir.join("gateway.toml"), gw_port);

    let agent = a.ca.client_with_certificate(&cert, &cert_key);
    let allowed = until(
        || unproved(&agent, gw_port, &mandate).unwrap(),
        |r| r.status == 200,
    );
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.body["line"], "GET /logs/42 HTTP/1.1");
    let reached = forwarded.load(std::sync::atomic::Ordering::SeqCst);

    // Whoever copied the mandate string, even with a valid proof by the
    // holder key, but no certificate: refused.
    let plain = a.ca.client_config();
    let r = through_gateway(&plain, gw_port, &holder, &mandate);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.to_string().contains("pop_certificate_missing"),
        "{}",
        r.body
    );
    // Their own certificate: refused.
    let (other, other_key) = agent_certificate("ci-agent");
    let thief = a.ca.client_with_certificate(&other, &other_key);
    let r = unproved(&thief, gw_port, &mandate).unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.to_string().contains("pop_certificate_mismatch"),
        "{}",
        r.body
    );
    // The agent's certificate (public, copied) with their own key: the
    // handshake's signature does not verify, so there is no connection.
    let copier = a.ca.client_with_certificate(&cert, &other_key);
    assert!(
        unproved(&copier, gw_port, &mandate).is_err(),
        "a certificate presented without its key was accepted"
    );
    assert_eq!(
        forwarded.load(std::sync::atomic::Ordering::SeqCst),
        reached,
        "a refused request reached the upstream"
    );

    // Certificates are optional: a DPoP-bound mandate needs none.
    let r = through_gateway(&plain, gw_port, &holder, &dpop_mandate);
    assert_eq!(r.status, 200, "{}", r.body);
    // And a certificate does not stand in for its proof.
    let r = unproved(&agent, gw_port, &dpop_mandate).unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.to_string().contains("pop_missing"), "{}", r.body);

    // The certificate proves who holds the mandate, not that it is in
    // force: revoked, it is refused on the agent's own connection.
    let revoked = a.call(
        "POST",
        &format!("/v1/mandates/{mandate_id}/revoke"),
        Some(&a.token("lead@acme.example", "principal")),
        &json!({"reason": "build fixed"}).to_string(),
    );
    assert!(revoked.status < 300, "{}", revoked.body);
    let denied = until(
        || unproved(&agent, gw_port, &mandate).unwrap(),
        |r| r.status == 403,
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(
        denied.body.to_string().contains("revoked"),
        "{}",
        denied.body
    );
}

/// A stand-in MCP server over plain HTTP: answers every `tools/call` with
/// a result naming the call's id, and counts the calls it received.
fn mcp_upstream() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(sock.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    if h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let call: Value = serde_json::from_slice(&body).unwrap();
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = json!({"jsonrpc": "2.0", "id": call["id"],
                    "result": {"content": [{"type": "text", "text": "log lines"}]}})
                .to_string();
                let _ = write!(
                    sock,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    (port, count)
}

/// The MCP proxy asks for client certificates as the gateway does: a
/// certificate-bound mandate's tool call is decided by the connection's
/// certificate, and refused without it (even with a valid DPoP proof) or
/// with another; the refused calls never reach the MCP server.
#[test]
fn the_mcp_proxy_decides_a_certificate_bound_mandate_by_the_connections_certificate() {
    let a = Authority::start("mcp-mtls");
    let dir = a.dir.clone();
    let (upstream, calls) = mcp_upstream();
    let port = free_port();
    std::fs::write(
        dir.join("mcp.toml"),
        format!(
            r#"{common}
client_certificates = "self_signed"
public_url = "https://127.0.0.1:{port}"

[[server]]
name = "ci"
url = "http://127.0.0.1:{upstream}"
location_base = "https://ci.example.com"

[[tool]]
name = "read_logs"
type = "ci_logs"
action = "read"
location = "https://ci.example.com/logs/42"
"#,
            common = enforcement_point(&a, "mcp", port),
        ),
    )
    .unwrap();
    let holder = holder();
    let (cert, cert_key) = agent_certificate("ci-agent");
    let (_, mandate) = grant_bound(
        &a,
        &json!({"jwk": holder.public_jwk(), "x5t#S256": mandate_core::hash::sha256_b64(cert.as_ref())}),
        "ticket:CI-5",
    );
    let _proxy = listening("mcp", &dir.join("mcp.toml"), port);

    let call = |client: &Arc<rustls::ClientConfig>, proof: Option<&str>| {
        let mut headers = vec![
            ("Mandate", mandate.as_str()),
            ("mandate-agent-instance", "run-1"),
            ("Accept", "application/json, text/event-stream"),
        ];
        if let Some(p) = proof {
            headers.push(("DPoP", p));
        }
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "read_logs", "arguments": {}}});
        https(client, port, "POST", "/mcp", &headers, &body.to_string()).unwrap()
    };
    let agent = a.ca.client_with_certificate(&cert, &cert_key);
    let allowed = until(|| call(&agent, None), |r| r.body["result"].is_object());
    assert_eq!(allowed.body["id"], 7, "{}", allowed.body);
    assert_eq!(
        allowed.body["result"]["content"][0]["text"], "log lines",
        "{}",
        allowed.body
    );
    let reached = calls.load(std::sync::atomic::Ordering::SeqCst);

    let reasons = |r: &Answer| r.body["error"]["data"]["reasons"].clone();
    let proof = mandate_core::pop::make_proof(
        &holder,
        "POST",
        &format!("https://127.0.0.1:{port}/mcp"),
        None,
        "mcp-p1",
        now(),
    );
    let r = call(&a.ca.client_config(), Some(&proof));
    assert_eq!(
        reasons(&r),
        json!(["pop_certificate_missing"]),
        "{}",
        r.body
    );
    let (other, other_key) = agent_certificate("ci-agent");
    let r = call(&a.ca.client_with_certificate(&other, &other_key), None);
    assert_eq!(
        reasons(&r),
        json!(["pop_certificate_mismatch"]),
        "{}",
        r.body
    );
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        reached,
        "a refused call reached the MCP server"
    );
}

/// The OpenID provider of the tests (panva/oidc-provider from npm; scripts/test
/// installs it): its port and its stdout, one line per token issued.
fn openid_provider(dir: &Path, secret: &str, ttl_secs: u32) -> (Guard, u16, PathBuf) {
    openid_provider_with(dir, secret, ttl_secs, None)
}

fn openid_provider_with(
    dir: &Path,
    secret: &str,
    ttl_secs: u32,
    client_jwk: Option<&str>,
) -> (Guard, u16, PathBuf) {
    let port = free_port();
    let log = dir.join("op.log");
    let script = format!(
        "{}/tests/interop/oidc-provider/provider.mjs",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = Command::new("node")
        .arg(script)
        .args([&port.to_string(), secret, &ttl_secs.to_string()])
        .args(client_jwk)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("node with oidc-provider installed (scripts/test runs npm ci)");
    wait_for_port(&mut child, port, "oidc-provider");
    (Guard(child), port, log)
}

#[test]
fn a_gateway_gets_its_token_from_the_identity_provider_by_client_credentials_and_renews_it() {
    let tmp = temp_dir("op");
    let secret = "gateway-secret-of-good-length";
    let (_op, op_port, log) = openid_provider(&tmp, secret, 4);
    // The authority trusts the provider: RS256 access tokens (at+jwt) for
    // the Mandate API, role and tenant in claims.
    let a = Authority::start_with(
        "client-credentials",
        &format!(
            r#"[[trusted_issuer]]
iss = "http://127.0.0.1:{op_port}"
jwks_url = "http://127.0.0.1:{op_port}/jwks"
audience = "api://mandate"
"#
        ),
    );
    let (upstream, _) = tls_upstream(&a.ca, &a.dir);
    let gw_port = free_port();
    std::fs::write(a.dir.join("gw.secret"), secret).unwrap();
    gateway_config(
        &a,
        gw_port,
        upstream,
        &format!(
            r#"[client_credentials]
token_endpoint = "http://127.0.0.1:{op_port}/token"
client_id = "gateway-1"
client_secret_file = "{}/gw.secret"
scope = "mandate"
"#,
            a.dir.display()
        ),
    );
    // No token file: the gateway's only credential is its client secret.
    let config = std::fs::read_to_string(a.dir.join("gateway.toml")).unwrap();
    let config = config.replace(
        &format!("token_file = \"{}/enforcer.token\"\n", a.dir.display()),
        "",
    );
    // [client_credentials] must come after the top-level keys.
    let (top, routes) = config.split_once("[[route]]").unwrap();
    let (top, cc) = top.split_once("[client_credentials]").unwrap();
    std::fs::write(
        a.dir.join("gateway.toml"),
        format!("{top}\n[client_credentials]{cc}\n[[route]]{routes}"),
    )
    .unwrap();
    assert!(
        !std::fs::read_to_string(a.dir.join("gateway.toml"))
            .unwrap()
            .contains("token_file")
    );

    let holder = holder();
    let (_, mandate) = grant(&a, &holder, "ticket:CI-3");
    let _gw = listening("gateway", &a.dir.join("gateway.toml"), gw_port);
    let client = a.ca.client_config();
    let deadline = Instant::now() + Duration::from_secs(20);
    while through_gateway(&client, gw_port, &holder, &mandate).status != 200 {
        assert!(Instant::now() < deadline, "the gateway never allowed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Tokens live 4 s; over 10 s the gateway stays fresh (it polls the
    // authority with its token), so it renewed them before they expired.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let r = through_gateway(&client, gw_port, &holder, &mandate);
        assert_eq!(r.status, 200, "denied while renewing: {}", r.body);
        std::thread::sleep(Duration::from_millis(250));
    }
    let issued = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| *l == "token issued")
        .count();
    assert!(issued >= 3, "{issued} tokens issued in 10 s of 4 s tokens");
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains("grant error"),
        "the provider refused a grant"
    );
}

#[test]
fn an_enforcement_point_may_prove_its_identity_with_a_signed_assertion_instead_of_a_secret() {
    let tmp = temp_dir("op-pkjwt");
    let key =
        mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [77; 32]);
    std::fs::write(
        tmp.join("client.jwk"),
        serde_json::to_string(&key.to_private_jwk()).unwrap(),
    )
    .unwrap();
    let public = serde_json::to_string(&key.public_jwk()).unwrap();
    let (_op, op_port, log) = openid_provider_with(&tmp, "unused-secret-unused", 60, Some(&public));
    let a = Authority::start_with(
        "private-key-jwt",
        &format!(
            "[[trusted_issuer]]\niss = \"http://127.0.0.1:{op_port}\"\njwks_url = \"http://127.0.0.1:{op_port}/jwks\"\naudience = \"api://mandate\"\n"
        ),
    );
    let grant = |private_key_file: PathBuf| mandate_enforce::client::ClientCredentials {
        token_endpoint: format!("http://127.0.0.1:{op_port}/token"),
        client_id: "gateway-2".into(),
        client_secret_file: None,
        private_key_file: Some(private_key_file),
        scope: Some("mandate".into()),
        resource: None,
    };
    let base = format!("https://127.0.0.1:{}", a.port);
    // The provider accepts the assertion; the authority accepts its token
    // (creating a stream needs the enforcer role).
    let client = mandate_enforce::client::AuthorityClient::with_client_credentials(
        &base,
        grant(tmp.join("client.jwk")),
    )
    .unwrap()
    .with_ca_file(&a.dir.join("ca.pem"))
    .unwrap();
    client.create_stream(None).unwrap();
    // An assertion signed by another key is refused by the provider.
    let other =
        mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [78; 32]);
    std::fs::write(
        tmp.join("other.jwk"),
        serde_json::to_string(&other.to_private_jwk()).unwrap(),
    )
    .unwrap();
    let e = mandate_enforce::client::AuthorityClient::with_client_credentials(
        &base,
        grant(tmp.join("other.jwk")),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("401") || e.to_string().contains("invalid_client"),
        "{e}"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("grant error")
    );
}
