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
    assert!(
        consent
            .body
            .contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;")
    );
    assert!(
        !consent.body.contains("<script>alert"),
        "the purpose must render as text"
    );
    for words in [
        "procurement.contingency_program.status == &#39;active&#39;",
        "the mandate is suspended and you are notified",
        "2099-01-01T00:00:00Z",
        "contingency_program.cancelled",
        "sanctions_screening",
    ] {
        assert!(
            consent.body.contains(words),
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
    let conn = mandate_store::open_read_only(&s.data_dir()).unwrap();
    let recorded: String = conn.query_row("SELECT json_extract(record, '$.body.shown_sha256') FROM audit WHERE kind = 'consent_shown'", [], |r| r.get(0)).unwrap();
    assert_eq!(
        recorded, shown,
        "the consent hash recorded is the hash of what the page showed"
    );

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
