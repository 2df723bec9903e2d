//! The console over a real socket: sign-in, consent, governance, audit, and
//! the protections (roles, escaping, CSRF).

use std::io::{Read, Write};
use std::net::TcpStream;

use mandate_authority::auth::Role;
use serde_json::json;

use crate::support::*;

struct Resp {
    status: u16,
    head: String,
    body: String,
}

fn send(s: &Server, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Resp {
    let mut t = TcpStream::connect(s.addr).unwrap();
    let body = form.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        s.addr,
        body.len()
    );
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    t.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    t.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or((text.clone(), String::new()));
    Resp {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head,
        body,
    }
}

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn sign_in(s: &Server, token: &str) -> (String, String) {
    let r = send(
        s,
        "POST",
        "/console/login",
        None,
        Some(&format!("token={}", enc(token))),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let set = header(&r, "set-cookie").unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = send(s, "GET", "/console/requests", Some(&cookie), None);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    (cookie, csrf)
}

fn field(body: &str, name: &str) -> String {
    body.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_principal_reviews_approves_watches_and_revokes_and_hostile_text_stays_text() {
    let s = Server::start("console");
    let c = Cast::new(&s);
    let mut req = procurement_request("vp@acme.example");
    req["purpose"]["objective"] = json!("<script>alert('owned')</script> Source a vendor");
    let (st, r) = s.call("POST", "/v1/requests", Some(&c.agent), Some(&req));
    assert_eq!(st, 201);
    let rid = r["id"].as_str().unwrap();

    // Agents cannot reach the console; unauthenticated visitors are sent to sign in.
    assert_eq!(
        send(
            &s,
            "POST",
            "/console/login",
            None,
            Some(&format!("token={}", enc(&c.agent)))
        )
        .status,
        403
    );
    assert_eq!(
        header(
            &send(&s, "GET", "/console/mandates", None, None),
            "location"
        ),
        Some("/console/login")
    );

    let (cookie, csrf) = sign_in(&s, &c.principal);
    let list = send(&s, "GET", "/console/requests", Some(&cookie), None);
    assert!(list.body.contains(&format!("/console/requests/{rid}")));
    assert!(
        !list.body.contains("<script>alert"),
        "unescaped agent text in the list"
    );

    let consent = send(
        &s,
        "GET",
        &format!("/console/requests/{rid}"),
        Some(&cookie),
        None,
    );
    assert_eq!(consent.status, 200);
    // The hostile purpose is on the page, as text: escaped in the markup,
    // itself once the entities are read.
    assert!(unescape(&consent.body).contains("<script>alert('owned')</script>"));
    assert!(
        !consent.body.contains("<script>alert"),
        "the purpose must render as text"
    );
    for words in [
        "procurement.contingency_program.status == 'active'",
        "the mandate is suspended and you are notified",
        "2099-01-01T00:00:00Z",
        "contingency_program.cancelled",
        "sanctions_screening",
    ] {
        assert!(
            unescape(&consent.body).contains(words),
            "the consent screen lacks {words}"
        );
    }
    assert!(
        header(&consent, "content-security-policy")
            .is_some_and(|v| v.contains("default-src 'none'"))
    );
    let shown = field(&consent.body, "shown");

    // A form without the session's CSRF token is refused and changes nothing.
    let forged = send(
        &s,
        "POST",
        &format!("/console/requests/{rid}/approve"),
        Some(&cookie),
        Some(&format!("csrf=wrong&shown={shown}")),
    );
    assert_eq!(forged.status, 403);
    let missing = send(
        &s,
        "POST",
        &format!("/console/requests/{rid}/approve"),
        Some(&cookie),
        Some(&format!("shown={shown}")),
    );
    assert!(missing.status >= 400);
    assert_eq!(
        s.call(
            "GET",
            &format!("/v1/requests/{rid}"),
            Some(&c.principal),
            None
        )
        .1["state"],
        "pending"
    );

    let approved = send(
        &s,
        "POST",
        &format!("/console/requests/{rid}/approve"),
        Some(&cookie),
        Some(&format!("csrf={csrf}&shown={shown}")),
    );
    assert_eq!(approved.status, 303, "{}", approved.body);
    let location = header(&approved, "location").unwrap().to_owned();
    let mid = location.trim_start_matches("/console/mandates/").to_owned();
    let (_, m) = s.call("GET", &format!("/v1/mandates/{mid}"), Some(&c.admin), None);
    assert_eq!(m["state"], "active");
    let conn = open_db(&s.data_dir());
    let recorded: String = conn.query_row("SELECT json_extract(record, '$.body.shown_sha256') FROM audit WHERE kind = 'consent_shown'", mandate_store::params![], |r| r.get(0)).unwrap();
    assert_eq!(
        recorded, shown,
        "the consent hash recorded is the hash of what the page showed"
    );
    // In the approval's own commit (one batch, one commit time): the
    // evidence cannot be lost while the approval stands.
    let commits: i64 = conn
        .query_row(
            "SELECT COUNT(DISTINCT at_ms) FROM audit WHERE mandate_id = ?1 AND kind IN ('approved', 'issued', 'consent_shown')",
            mandate_store::params![mid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(commits, 1);

    // Decide once allowed, then revoke through the confirmation page, then an attempt after the end.
    set_facts(
        &s,
        &c,
        &json!({"procurement": {"contingency_program": {"status": "active"}}}),
    );
    let mandate = m["mandate"].as_str().unwrap();
    assert_eq!(decide(&s, &c, &search_request(mandate))["decision"], true);
    let confirm = send(
        &s,
        "GET",
        &format!("/console/mandates/{mid}/confirm?op=revoke"),
        Some(&cookie),
        None,
    );
    assert!(confirm.body.contains("descendant mandate(s)"));
    let done = send(
        &s,
        "POST",
        &format!("/console/mandates/{mid}/act"),
        Some(&cookie),
        Some(&format!("csrf={csrf}&op=revoke&reason=deal+collapsed")),
    );
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(
        reasons(&decide(&s, &c, &search_request(mandate))),
        ["revoked"]
    );
    let detail = send(
        &s,
        "GET",
        &format!("/console/mandates/{mid}"),
        Some(&cookie),
        None,
    );
    assert!(detail.body.contains("revoked"));
    assert!(
        detail.body.contains("(after end)"),
        "the attempt after the end is marked"
    );
    assert!(!detail.body.contains("<script>alert"));

    // Audit: verified, searchable, exportable.
    let audit = send(
        &s,
        "GET",
        &format!("/console/audit?mandate={mid}&outcome=deny"),
        Some(&cookie),
        None,
    );
    assert!(audit.body.contains("Audit chain intact"));
    assert!(audit.body.contains("revoked"));
    let export = send(
        &s,
        "GET",
        &format!("/console/audit/export?mandate={mid}"),
        Some(&cookie),
        None,
    );
    assert_eq!(
        header(&export, "content-type"),
        Some("application/x-ndjson")
    );
    assert!(
        export
            .body
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
    assert!(
        send(&s, "GET", "/console/facts", Some(&cookie), None)
            .body
            .contains("contingency_program")
    );

    // Signing out ends the session.
    assert_eq!(
        send(
            &s,
            "POST",
            "/console/logout",
            Some(&cookie),
            Some(&format!("csrf={csrf}"))
        )
        .status,
        303
    );
    assert_eq!(
        header(
            &send(&s, "GET", "/console/mandates", Some(&cookie), None),
            "location"
        ),
        Some("/console/login")
    );
}

#[test]
fn a_principal_sees_only_their_own_mandates_and_an_admin_the_tenants() {
    let s = Server::start("console-scope");
    let c = Cast::new(&s);
    let (mine, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let other = s.token("cfo@acme.example", Role::Principal, "acme");
    let (_, r) = s.call(
        "POST",
        "/v1/requests",
        Some(&c.agent),
        Some(&procurement_request("cfo@acme.example")),
    );
    let (_, a) = s.call(
        "POST",
        &format!("/v1/requests/{}/approve", r["id"].as_str().unwrap()),
        Some(&other),
        None,
    );
    let theirs = a["mandate_id"].as_str().unwrap().to_owned();

    let (cookie, _) = sign_in(&s, &c.principal);
    let list = send(&s, "GET", "/console/mandates", Some(&cookie), None);
    assert!(list.body.contains(&mine) && !list.body.contains(&theirs));
    assert_eq!(
        send(
            &s,
            "GET",
            &format!("/console/mandates/{theirs}"),
            Some(&cookie),
            None
        )
        .status,
        404
    );
    let (admin_cookie, _) = sign_in(&s, &c.admin);
    let all = send(&s, "GET", "/console/mandates", Some(&admin_cookie), None);
    assert!(all.body.contains(&mine) && all.body.contains(&theirs));
    let (foreign, _) = sign_in(&s, &s.token("admin@globex.example", Role::Admin, "globex"));
    assert_eq!(
        send(
            &s,
            "GET",
            &format!("/console/mandates/{mine}"),
            Some(&foreign),
            None
        )
        .status,
        404
    );
}

/// A minimal OpenID provider on loopback: authorize (auto-consent), token
/// (checks the PKCE verifier), JWKS.
fn fake_idp() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use base64::Engine as _;
    use std::collections::HashMap;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let key =
        mandate_core::keys::SigningKey::from_seed(mandate_core::keys::Algorithm::EdDSA, [77; 32])
            .with_kid("idp-key");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (issuer, seen) = (base.clone(), log.clone());
    std::thread::spawn(move || {
        let mut codes: HashMap<String, (String, String)> = HashMap::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let req = String::from_utf8_lossy(&data).into_owned();
            let line = req.lines().next().unwrap_or("").to_owned();
            let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let body = req.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
            let params = |q: &str| -> HashMap<String, String> {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), urldecode(v)))
                    .collect()
            };
            seen.lock().unwrap().push(line.clone());
            let response = if target.starts_with("/jwks") {
                let b = json!({"keys": [key.public_jwk()]}).to_string();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                    b.len()
                )
            } else if let Some(q) = target.strip_prefix("/authorize?") {
                let p = params(q);
                let code = format!("code-{}", codes.len());
                codes.insert(
                    code.clone(),
                    (p["code_challenge"].clone(), p["nonce"].clone()),
                );
                assert_eq!(p["code_challenge_method"], "S256");
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: {}?code={code}&state={}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    p["redirect_uri"], p["state"]
                )
            } else if target.starts_with("/token") {
                let p = params(&body);
                let ok = codes.remove(&p["code"]).filter(|(challenge, _)| {
                    *challenge
                        == base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(mandate_core::hash::sha256(p["code_verifier"].as_bytes()))
                });
                match ok {
                    Some((_, nonce)) => {
                        let now = mandate_authority::auth::now_secs();
                        let claims = json!({"iss": issuer, "sub": "vp@acme.example", "aud": "mandate-console", "iat": now, "exp": now + 300,
                            "nonce": nonce, "role": "principal", "tenant": "acme"});
                        let header = json!({"alg": "EdDSA", "kid": "idp-key"});
                        let id_token = {
                            let mut t = base64::engine::general_purpose::URL_SAFE_NO_PAD
                                .encode(header.to_string());
                            t.push('.');
                            t.push_str(
                                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                                    .encode(claims.to_string()),
                            );
                            let sig = key.sign(t.as_bytes());
                            t.push('.');
                            t.push_str(
                                &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig),
                            );
                            t
                        };
                        let b = json!({"id_token": id_token, "token_type": "Bearer"}).to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                            b.len()
                        )
                    }
                    None => {
                        "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_owned()
                    }
                }
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (base, log)
}

fn urldecode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
            );
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn get_absolute(url: &str) -> Resp {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut t = TcpStream::connect(host).unwrap();
    t.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = Vec::new();
    t.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or((text.clone(), String::new()));
    Resp {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head,
        body,
    }
}

#[test]
fn a_principal_signs_in_with_the_enterprise_idp_by_authorization_code_and_pkce() {
    let (idp, log) = fake_idp();
    let dir = temp_dir("oidc");
    // The redirect URI names the console; the test follows redirects itself, so any loopback URL works.
    let s = Server::start_configured(dir, |c| {
        c.trusted_issuer = vec![mandate_authority::config::TrustedIssuer {
            iss: idp.clone(),
            jwks_file: None,
            jwks_url: Some(format!("{idp}/jwks")),
            ..Default::default()
        }];
        c.console_oidc = Some(mandate_authority::config::ConsoleOidc {
            issuer: idp.clone(),
            authorization_endpoint: format!("{idp}/authorize"),
            token_endpoint: format!("{idp}/token"),
            client_id: "mandate-console".into(),
            client_secret_file: None,
            redirect_uri: "http://127.0.0.1/console/oidc/callback".into(),
            role_claim: "role".into(),
            tenant_claim: "tenant".into(),
        });
        c.console_identity = vec![mandate_authority::config::ConsoleIdentity {
            sub: "admin@acme.example".into(),
            role: "admin".into(),
            tenant: "acme".into(),
        }];
    });
    let login = send(&s, "GET", "/console/login", None, None);
    assert!(login.body.contains("/console/oidc") && login.body.contains("admin@acme.example"));

    let start = send(&s, "GET", "/console/oidc", None, None);
    assert_eq!(start.status, 303);
    let authorize = header(&start, "location").unwrap().to_owned();
    assert!(
        authorize.contains("code_challenge=")
            && authorize.contains("code_challenge_method=S256")
            && authorize.contains("nonce=")
    );
    let at_idp = get_absolute(&authorize);
    assert_eq!(at_idp.status, 302);
    let back = header(&at_idp, "location").unwrap().to_owned();
    let callback = back
        .split_once("/console")
        .map(|(_, p)| format!("/console{p}"))
        .unwrap();
    // The browser that started the sign-in carries its binding cookie back.
    let binding = header(&start, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(binding.starts_with("mandate_oidc="), "{binding}");
    let done = send(&s, "GET", &callback, Some(&binding), None);
    assert_eq!(done.status, 303, "{}", done.body);
    let cookie = header(&done, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = send(&s, "GET", "/console/requests", Some(&cookie), None);
    assert!(page.body.contains("vp@acme.example (principal)"));
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("POST /token")),
        "the code was exchanged at the token endpoint"
    );

    // The same callback again: the sign-in was consumed.
    assert_eq!(send(&s, "GET", &callback, Some(&binding), None).status, 400);

    // Login CSRF: an attacker signs in at the IdP in their own browser and
    // sends the victim the callback link. The victim's browser has no
    // binding for that sign-in (or another one): refused, no session.
    let attacker_start = send(&s, "GET", "/console/oidc", None, None);
    let attacker_at_idp = get_absolute(header(&attacker_start, "location").unwrap());
    let link = header(&attacker_at_idp, "location")
        .unwrap()
        .split_once("/console")
        .map(|(_, p)| format!("/console{p}"))
        .unwrap();
    let victims_own = send(&s, "GET", "/console/oidc", None, None);
    let victims_binding = header(&victims_own, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = send(&s, "GET", &link, Some(&victims_binding), None);
    assert_eq!(csrf.status, 400, "{}", csrf.body);
    assert!(
        csrf.body.contains("not started in this browser"),
        "{}",
        csrf.body
    );
    assert!(
        header(&csrf, "set-cookie").is_none(),
        "no session for the victim"
    );
    assert_eq!(send(&s, "GET", &link, None, None).status, 400);
    // A callback for a sign-in this console never started.
    assert_eq!(
        send(
            &s,
            "GET",
            "/console/oidc/callback?code=code-9&state=forged",
            None,
            None
        )
        .status,
        400
    );

    // The configured local identity.
    let picked = send(&s, "POST", "/console/login/pick", None, Some("identity=0"));
    assert_eq!(picked.status, 303);
    let admin_cookie = header(&picked, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        send(&s, "GET", "/console/requests", Some(&admin_cookie), None)
            .body
            .contains("admin@acme.example (admin)")
    );
}

#[test]
fn narrowing_the_scope_takes_effect_and_widening_needs_a_fresh_approval() {
    let s = Server::start("console-scope-change");
    let c = Cast::new(&s);
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let (cookie, csrf) = sign_in(&s, &c.principal);
    let details = |actions: serde_json::Value| {
        let mut d = procurement_request("x")["authorization_details"].clone();
        d[0]["actions"] = actions;
        d.to_string()
    };

    // Narrowing: a new revision at once.
    let narrow = send(
        &s,
        "POST",
        &format!("/console/mandates/{id}/scope"),
        Some(&cookie),
        Some(&format!(
            "csrf={csrf}&details={}",
            enc(&details(json!(["search"])))
        )),
    );
    assert_eq!(narrow.status, 303, "{}", narrow.body);
    let narrowed = header(&narrow, "location")
        .unwrap()
        .trim_start_matches("/console/mandates/")
        .to_owned();
    let (_, m) = s.call(
        "GET",
        &format!("/v1/mandates/{narrowed}"),
        Some(&c.admin),
        None,
    );
    assert_eq!(
        m["claims"]["authorization_details"][0]["actions"],
        json!(["search"])
    );
    assert_eq!(
        s.call("GET", &format!("/v1/mandates/{id}"), Some(&c.admin), None)
            .1["state"],
        "superseded"
    );

    // Widening: a page that says what is added, then only an approval of that page amends.
    let wide = details(json!(["search", "delete_vendor"]));
    let ask = send(
        &s,
        "POST",
        &format!("/console/mandates/{narrowed}/scope"),
        Some(&cookie),
        Some(&format!("csrf={csrf}&details={}", enc(&wide))),
    );
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("Approve the wider scope") && ask.body.contains("delete_vendor"));
    let approve = field(&ask.body, "approve");
    let forged = send(
        &s,
        "POST",
        &format!("/console/mandates/{narrowed}/scope"),
        Some(&cookie),
        Some(&format!(
            "csrf={csrf}&approve={approve}&details={}",
            enc(&details(json!([
                "search",
                "delete_vendor",
                "initiate_onboarding"
            ])))
        )),
    );
    assert_eq!(
        forged.status, 200,
        "an approval of another page must not amend"
    );
    let ok = send(
        &s,
        "POST",
        &format!("/console/mandates/{narrowed}/scope"),
        Some(&cookie),
        Some(&format!(
            "csrf={csrf}&approve={approve}&details={}",
            enc(&wide)
        )),
    );
    assert_eq!(ok.status, 303, "{}", ok.body);
    let widened = header(&ok, "location")
        .unwrap()
        .trim_start_matches("/console/mandates/")
        .to_owned();
    let (_, w) = s.call(
        "GET",
        &format!("/v1/mandates/{widened}"),
        Some(&c.admin),
        None,
    );
    assert_eq!(
        w["claims"]["authorization_details"][0]["actions"],
        json!(["search", "delete_vendor"])
    );
    let conn = open_db(&s.data_dir());
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE kind = 'widening_approved'",
            mandate_store::params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn amending_the_expiry_is_confirmed_with_what_it_supersedes() {
    let s = Server::start("console-amend");
    let c = Cast::new(&s);
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let (cookie, csrf) = sign_in(&s, &c.principal);
    let ask = send(
        &s,
        "GET",
        &format!("/console/mandates/{id}/confirm?op=amend&hard_expiry=2098-01-01T00:00:00Z"),
        Some(&cookie),
        None,
    );
    assert!(
        ask.body
            .contains("Amending issues a new revision with the hard expiry 2098-01-01T00:00:00Z"),
        "{}",
        ask.body
    );
    let done = send(
        &s,
        "POST",
        &format!("/console/mandates/{id}/act"),
        Some(&cookie),
        Some(&format!(
            "csrf={csrf}&op=amend&hard_expiry=2098-01-01T00%3A00%3A00Z&reason=shorter"
        )),
    );
    assert_eq!(done.status, 303, "{}", done.body);
    let new_id = header(&done, "location")
        .unwrap()
        .trim_start_matches("/console/mandates/")
        .to_owned();
    assert_ne!(new_id, id);
    let (_, m) = s.call(
        "GET",
        &format!("/v1/mandates/{new_id}"),
        Some(&c.admin),
        None,
    );
    assert_eq!(
        m["claims"]["lifecycle"]["hard_expiry"],
        "2098-01-01T00:00:00Z"
    );
    assert!(
        send(
            &s,
            "GET",
            &format!("/console/mandates/{new_id}"),
            Some(&cookie),
            None
        )
        .body
        .contains(&format!("Revision of <a href=\"/console/mandates/{id}\">"))
    );
}

/// The CRM's event that cancels the contingency program, as `source` posts it.
fn cancel_contingency(s: &Server, source: &str) {
    let (st, _) = s.call("POST", "/v1/events", Some(source), Some(&json!({"id": "crm-77", "type": "contingency_program.cancelled", "subject": "program:contingency-q4"})));
    assert_eq!(st, 202);
}

/// Mandate `id`'s console page as the holder of `token` sees it.
fn mandate_page(s: &Server, token: &str, id: &str) -> String {
    let (cookie, _) = sign_in(s, token);
    send(
        s,
        "GET",
        &format!("/console/mandates/{id}"),
        Some(&cookie),
        None,
    )
    .body
}

#[test]
fn the_timeline_shows_the_event_that_ended_the_mandate() {
    let s = Server::start("console-event");
    let c = Cast::new(&s);
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    cancel_contingency(&s, &c.events);
    let page = mandate_page(&s, &c.principal, &id);
    assert!(page.contains("<td class=\"\">event</td>"), "{page}");
    assert!(page.contains("contingency_program.cancelled program:contingency-q4"));
    assert!(page.contains("event:crm-77"));
}

/// Event ids come from the sources (a CRM's record id, a GitHub merge), so
/// two tenants can hold events with the same id: a timeline shows only
/// its own tenant's.
#[test]
fn a_timeline_never_shows_another_tenants_event_with_the_same_id() {
    let s = Server::start("console-event-tenant");
    let c = Cast::new(&s);
    let other = s.token("crm-other", Role::EventSource, "other");
    let (st, _) = s.call("POST", "/v1/events", Some(&other), Some(&json!({"id": "crm-77", "type": "deal.merger_announced", "subject": "deal:confidential-42"})));
    assert_eq!(st, 202);
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    cancel_contingency(&s, &c.events);
    let theirs: i64 = open_db(&s.data_dir())
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE kind = 'event' AND tenant = 'other'",
            mandate_store::params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(theirs, 1, "the other tenant's event is in the log");
    let page = mandate_page(&s, &c.principal, &id);
    assert!(page.contains("contingency_program.cancelled program:contingency-q4"));
    assert!(!page.contains("deal.merger_announced"), "{page}");
    assert!(!page.contains("confidential-42"), "{page}");
}

#[test]
fn the_mandate_page_shows_what_was_granted_how_it_ended_and_what_each_gateway_decision_was_about() {
    let s = Server::start("console-mandate-page");
    let c = Cast::new(&s);
    let (id, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    // A decision a gateway made and shipped.
    let (st, r) = s.call(
        "POST",
        "/v1/audit/decisions",
        Some(&c.enforcer),
        Some(&json!({"source": "stream-x", "first": 1, "records": [{
            "at_ms": 1_700_000_000_000_i64, "gateway": "127.0.0.1:8081", "method": "GET", "path": "/search",
            "chain": [id], "decision": "deny", "reasons": ["pop_missing"]}]})),
    );
    assert_eq!(st, 200, "{r}");
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{id}/revoke"),
        Some(&c.principal),
        Some(&json!({"reason": "vendor chosen elsewhere"})),
    );
    assert_eq!(st, 200);
    let (cookie, _) = sign_in(&s, &c.principal);
    let page = send(
        &s,
        "GET",
        &format!("/console/mandates/{id}"),
        Some(&cookie),
        None,
    );
    assert_eq!(page.status, 200);
    let b = &unescape(&page.body);
    // What the consent screen showed.
    for shown in [
        "What was granted",
        "standard-logistics-v3",                              // constraints
        "procurement.contingency_program.status == 'active'", // conditions
        "contingency_program.cancelled",                      // ending events
        "It may ask for one-time use of newly found tools",   // discovery
        "Delegation",
    ] {
        assert!(b.contains(shown), "missing {shown:?} in the mandate page");
    }
    assert!(b.contains("vendor chosen elsewhere"), "the revoke reason");
    assert!(
        b.contains("GET /search at gateway 127.0.0.1:8081"),
        "the gateway decision"
    );
    assert!(!b.contains("null /search"));
}

/// The `href` of the page's "next page" link (HTML entities undone).
fn next_href(body: &str) -> Option<String> {
    let start = body.find(r#"<a rel="next" href=""#)? + r#"<a rel="next" href=""#.len();
    let end = body[start..].find('"')? + start;
    Some(unescape(&body[start..end]))
}

/// Text with the HTML character references a page escapes with undone
/// (named and numeric), `&` last.
fn unescape(html: &str) -> String {
    let mut out = html.to_owned();
    for (entity, c) in [
        ("&lt;", "<"),
        ("&#60;", "<"),
        ("&gt;", ">"),
        ("&#62;", ">"),
        ("&quot;", "\""),
        ("&#34;", "\""),
        ("&#39;", "'"),
        ("&amp;", "&"),
        ("&#38;", "&"),
    ] {
        out = out.replace(entity, c);
    }
    out
}

#[test]
fn the_console_lists_page_through_requests_mandates_and_the_audit_log_with_filters_kept() {
    let s = Server::start("console-pages");
    let c = Cast::new(&s);
    for pr in 1..=5 {
        let (st, _) = s.call(
            "POST",
            "/v1/requests",
            Some(&c.agent),
            Some(&pr_request("vp@acme.example", pr)),
        );
        assert_eq!(st, 201);
    }
    let (cookie, _) = sign_in(&s, &c.principal);

    // Requests: pages of two, every pending request once.
    let mut path = "/console/requests?limit=2".to_owned();
    let mut seen = Vec::new();
    loop {
        let page = send(&s, "GET", &path, Some(&cookie), None);
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(
            page.body
                .match_indices("/console/requests/req-")
                .map(|(i, _)| page.body[i..i + 40].split('"').next().unwrap().to_owned()),
        );
        match next_href(&page.body) {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(
        seen.iter().collect::<std::collections::HashSet<_>>().len(),
        5
    );

    // Mandates: the filters travel with the cursor, URL-encoded.
    for pr in 11..=13 {
        grant(&s, &c, &pr_request("vp@acme.example", pr));
    }
    let first = send(
        &s,
        "GET",
        "/console/mandates?limit=2&agent=pr-watcher&principal=vp%40acme",
        Some(&cookie),
        None,
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let next = next_href(&first.body).expect("a second page");
    assert!(
        next.contains("agent=pr-watcher")
            && next.contains("principal=vp%40acme")
            && next.contains("limit=2"),
        "{next}"
    );
    let second = send(&s, "GET", &next, Some(&cookie), None);
    assert_eq!(second.status, 200);
    assert_eq!(
        second
            .body
            .matches(r#"<td class="state">active</td>"#)
            .count(),
        1,
        "{}",
        second.body
    );
    assert!(next_href(&second.body).is_none());

    // Audit: a filter with characters that mean something in a query and in
    // HTML is URL-encoded in the link, then HTML-escaped.
    let audit = send(
        &s,
        "GET",
        "/console/audit?limit=3&agent=a%26b%20%3Cc%3E",
        Some(&cookie),
        None,
    );
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert!(
        audit
            .body
            .contains("/console/audit/export?agent=a%26b+%3Cc%3E"),
        "{}",
        audit.body
    );
    let audit = send(&s, "GET", "/console/audit?limit=3", Some(&cookie), None);
    let next = next_href(&audit.body).expect("more records than one page of three");
    assert!(next.starts_with("/console/audit?limit=3&cursor="), "{next}");
    let older = send(&s, "GET", &next, Some(&cookie), None);
    assert_eq!(older.status, 200);
    assert!(older.body.contains("record(s) on this page"));

    // A forged cursor is a clear refusal, not a page of someone else's data.
    let bad = send(
        &s,
        "GET",
        "/console/audit?cursor=bm9wZQ",
        Some(&cookie),
        None,
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("cursor: not a cursor this list issued"),
        "{}",
        bad.body
    );
}
