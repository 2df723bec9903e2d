//! Listing with cursor pagination, and a database from the previous release
//! upgraded in place.

use std::collections::HashSet;

use mandate_authority::auth::Role;
use serde_json::{Value, json};

use crate::support::*;

/// Every page of `path` (which has its filters, `?` included) with `limit`,
/// following `next`; the items' `key`s in order, and the pages' sizes.
fn every_page(
    s: &Server,
    token: &str,
    path: &str,
    limit: usize,
    key: &str,
) -> (Vec<String>, Vec<usize>) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{sep}limit={limit}");
    let (mut keys, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let (st, page) = s.call("GET", &url, Some(token), None);
        assert_eq!(st, 200, "{url}: {page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit, "{page}");
        sizes.push(items.len());
        keys.extend(items.iter().map(|i| i[key].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => url = format!("{path}{sep}limit={limit}&cursor={next}"),
            None => return (keys, sizes),
        }
        assert!(sizes.len() < 100, "pagination does not end");
    }
}

fn request(s: &Server, c: &Cast, principal: &str, pr: u32) -> String {
    let (st, r) = s.call(
        "POST",
        "/v1/requests",
        Some(&c.agent),
        Some(&pr_request(principal, pr)),
    );
    assert_eq!(st, 201, "{r}");
    r["id"].as_str().unwrap().to_owned()
}

#[test]
fn requests_are_listed_newest_first_each_exactly_once_across_pages_even_while_new_ones_arrive() {
    let s = Server::start("list-requests");
    let c = Cast::new(&s);
    let made: Vec<String> = (1..=7)
        .map(|pr| request(&s, &c, "vp@acme.example", pr))
        .collect();
    // Someone else's request: not the principal's to see.
    request(&s, &c, "cfo@acme.example", 99);

    // Newest first: by the time the authority recorded them (ties, made in
    // the same millisecond, by id).
    let order = |items: &[Value]| -> Vec<(i64, String)> {
        items
            .iter()
            .map(|i| {
                (
                    i["created_ms"].as_i64().unwrap(),
                    i["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (st, first) = s.call("GET", "/v1/requests?limit=3", Some(&c.principal), None);
    assert_eq!(st, 200, "{first}");
    let first_items = order(first["items"].as_array().unwrap());
    assert_eq!(first_items.len(), 3);
    assert_eq!(first["items"][0]["state"], "pending");
    assert!(
        first["items"][0]["request"]["purpose"]["objective"]
            .as_str()
            .unwrap()
            .starts_with("Watch PR #")
    );

    // A request made between two pages does not shift the next page.
    let late = request(&s, &c, "vp@acme.example", 8);
    let next = first["next"].as_str().unwrap();
    let (_, second) = s.call(
        "GET",
        &format!("/v1/requests?limit=3&cursor={next}"),
        Some(&c.principal),
        None,
    );
    let second_items = order(second["items"].as_array().unwrap());
    assert_eq!(second_items.len(), 3);
    assert!(
        second_items.iter().all(|i| i.1 != late),
        "the late request is not on a later page"
    );

    let (_, everything) = s.call("GET", "/v1/requests?limit=500", Some(&c.principal), None);
    let mut sorted = order(everything["items"].as_array().unwrap());
    let listed = sorted.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, sorted, "newest first");
    assert_eq!(listed[0].1, late, "the late one is the newest");
    assert_eq!(
        &listed[1..4],
        &first_items[..],
        "the first page was the newest three of then"
    );
    assert_eq!(&listed[4..7], &second_items[..]);

    let (all, sizes) = every_page(&s, &c.principal, "/v1/requests", 3, "id");
    assert_eq!(sizes, vec![3, 3, 2], "8 requests in pages of 3");
    assert_eq!(
        all,
        listed.iter().map(|i| i.1.clone()).collect::<Vec<_>>(),
        "pages agree with one big page"
    );
    let mut want: HashSet<String> = made.iter().cloned().collect();
    want.insert(late);
    assert_eq!(
        all.iter().cloned().collect::<HashSet<_>>(),
        want,
        "every request once, only the principal's own"
    );

    // The admin sees the tenant's nine; the agent its own nine; filters narrow.
    assert_eq!(every_page(&s, &c.admin, "/v1/requests", 4, "id").0.len(), 9);
    assert_eq!(
        every_page(&s, &c.agent, "/v1/requests", 50, "id").0.len(),
        9
    );
    let (cfo, _) = every_page(
        &s,
        &c.admin,
        "/v1/requests?principal=cfo@acme.example",
        50,
        "id",
    );
    assert_eq!(cfo.len(), 1);
    let other = s.token("agent-8", Role::Agent, "acme");
    assert!(
        every_page(&s, &other, "/v1/requests", 50, "id")
            .0
            .is_empty(),
        "another agent's requests are not listed"
    );
    let other_tenant = s.token("admin@globex.example", Role::Admin, "globex");
    assert!(
        every_page(&s, &other_tenant, "/v1/requests", 50, "id")
            .0
            .is_empty(),
        "another tenant sees nothing"
    );

    // Approve one and deny one: the state filter follows.
    let (st, shown) = s.call(
        "GET",
        &format!("/v1/requests/{}", made[0]),
        Some(&c.principal),
        None,
    );
    assert_eq!(st, 200);
    let (st, _) = s.call(
        "POST",
        &format!("/v1/requests/{}/approve", made[0]),
        Some(&c.principal),
        Some(&json!({"consent_sha256": shown["consent_sha256"]})),
    );
    assert_eq!(st, 200);
    let (st, _) = s.call(
        "POST",
        &format!("/v1/requests/{}/deny", made[1]),
        Some(&c.principal),
        Some(&json!({"reason": "no"})),
    );
    assert_eq!(st, 200);
    assert_eq!(
        every_page(&s, &c.principal, "/v1/requests?state=approved", 2, "id").0,
        vec![made[0].clone()]
    );
    assert_eq!(
        every_page(&s, &c.principal, "/v1/requests?state=denied", 2, "id").0,
        vec![made[1].clone()]
    );
    assert_eq!(
        every_page(&s, &c.principal, "/v1/requests?state=pending", 2, "id")
            .0
            .len(),
        6
    );

    let (st, e) = s.call("GET", "/v1/requests", Some(&c.enforcer), None);
    assert_eq!((st, e["code"].as_str()), (403, Some("forbidden")), "{e}");
}

#[test]
fn a_malformed_limit_cursor_or_filter_is_refused_naming_the_parameter() {
    let s = Server::start("list-malformed");
    let c = Cast::new(&s);
    for pr in 1..=3 {
        request(&s, &c, "vp@acme.example", pr);
    }
    let (_, page) = s.call("GET", "/v1/requests?limit=1", Some(&c.principal), None);
    let request_cursor = page["next"].as_str().unwrap().to_owned();
    for (path, field) in [
        ("/v1/requests?limit=0".to_owned(), "limit"),
        ("/v1/requests?limit=501".to_owned(), "limit"),
        ("/v1/requests?limit=ten".to_owned(), "limit"),
        ("/v1/requests?cursor=not-a-cursor!".to_owned(), "cursor"),
        ("/v1/requests?cursor=bWFuZGF0ZXM6MTox".to_owned(), "cursor"),
        (format!("/v1/mandates?cursor={request_cursor}"), "cursor"),
        (format!("/v1/audit?cursor={request_cursor}"), "cursor"),
        ("/v1/requests?state=lost".to_owned(), "state"),
        ("/v1/mandates?state=pending".to_owned(), "state"),
        ("/v1/audit?outcome=maybe".to_owned(), "outcome"),
        ("/v1/audit?from=yesterday".to_owned(), "from"),
    ] {
        let (st, e) = s.call("GET", &path, Some(&c.admin), None);
        assert_eq!(
            (st, e["code"].as_str()),
            (400, Some("invalid_request")),
            "{path}: {e}"
        );
        assert!(
            e["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{path}: {e}"
        );
    }
    let (st, _) = s.call("GET", "/v1/requests", None, None);
    assert_eq!(st, 401);
}

#[test]
fn mandates_are_listed_by_state_agent_and_principal_and_the_audit_log_page_by_page() {
    let s = Server::start("list-mandates");
    let c = Cast::new(&s);
    let (root, _) = grant(&s, &c, &procurement_request("vp@acme.example"));
    let watchers: Vec<String> = (1..=4)
        .map(|pr| grant(&s, &c, &pr_request("vp@acme.example", pr)).0)
        .collect();
    let (st, _) = s.call(
        "POST",
        &format!("/v1/mandates/{}/revoke", watchers[1]),
        Some(&c.principal),
        Some(&json!({"reason": "done"})),
    );
    assert_eq!(st, 200);

    let (all, sizes) = every_page(&s, &c.admin, "/v1/mandates", 2, "mandate_id");
    assert_eq!(sizes, vec![2, 2, 1]);
    let (_, one) = s.call("GET", "/v1/mandates?limit=500", Some(&c.admin), None);
    let listed: Vec<(i64, String)> = one["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["created_ms"].as_i64().unwrap(),
                m["mandate_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, sorted, "newest first");
    assert_eq!(
        all,
        listed.iter().map(|m| m.1.clone()).collect::<Vec<_>>(),
        "pages agree with one big page"
    );
    let mut want: HashSet<String> = watchers.iter().cloned().collect();
    want.insert(root.clone());
    assert_eq!(all.iter().cloned().collect::<HashSet<_>>(), want);
    assert_eq!(
        every_page(&s, &c.admin, "/v1/mandates?state=revoked", 2, "mandate_id").0,
        vec![watchers[1].clone()]
    );
    assert_eq!(
        every_page(
            &s,
            &c.admin,
            "/v1/mandates?agent=urn:agent:code/pr-watcher@1.0&state=active",
            2,
            "mandate_id"
        )
        .0
        .len(),
        3
    );
    assert!(
        every_page(
            &s,
            &c.admin,
            "/v1/mandates?principal=cfo@acme.example",
            2,
            "mandate_id"
        )
        .0
        .is_empty()
    );
    let (_, page) = s.call("GET", "/v1/mandates?limit=1", Some(&c.principal), None);
    assert!(
        page["items"][0]["objective"]
            .as_str()
            .unwrap()
            .starts_with("Watch PR #"),
        "{page}"
    );
    assert_eq!(page["items"][0]["agent"], "urn:agent:code/pr-watcher@1.0");
    assert_eq!(page["items"][0]["state"], "active");
    let (st, _) = s.call("GET", "/v1/mandates", Some(&c.events), None);
    assert_eq!(st, 403);
    let stranger = s.token("cfo@acme.example", Role::Principal, "acme");
    assert!(
        every_page(&s, &stranger, "/v1/mandates", 10, "mandate_id")
            .0
            .is_empty()
    );

    // The audit log: every record once across pages, newest first.
    let (refs, _) = every_page(&s, &c.admin, "/v1/audit", 4, "reference");
    let seqs: Vec<i64> = refs.iter().map(|r| r.parse().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert_eq!(seqs.last(), Some(&1));
    assert_eq!(seqs.len(), seqs.iter().collect::<HashSet<_>>().len());
    let (_, health) = s.call("GET", "/healthz", None, None);
    assert_eq!(
        i64::try_from(seqs.len()).unwrap(),
        health["audit_records"].as_i64().unwrap(),
        "{health}"
    );

    // One mandate's records; decisions by outcome.
    let (about, _) = every_page(
        &s,
        &c.admin,
        &format!("/v1/audit?mandate={}", watchers[1]),
        2,
        "reference",
    );
    let (st, page) = s.call(
        "GET",
        &format!("/v1/audit?mandate={}&limit=50", watchers[1]),
        Some(&c.admin),
        None,
    );
    assert_eq!(st, 200);
    let kinds: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["revoked", "issued", "approved"], "{page}");
    assert_eq!(about.len(), 3);
    let (st, d) = s.call(
        "POST",
        "/access/v1/evaluation",
        Some(&c.enforcer),
        Some(&as_leaf(read_pr(
            &grant(&s, &c, &pr_request("vp@acme.example", 9)).1,
            8,
        ))),
    );
    assert_eq!((st, &d["decision"]), (200, &json!(false)), "{d}");
    let (st, page) = s.call("GET", "/v1/audit?outcome=deny", Some(&c.admin), None);
    assert_eq!(st, 200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["kind"], "decision");
    assert_eq!(items[0]["body"]["decision"], "deny");
    let (_, page) = s.call("GET", "/v1/audit?outcome=allow", Some(&c.admin), None);
    assert!(page["items"].as_array().unwrap().is_empty(), "{page}");

    // A principal reads the records of what they granted; nobody else's.
    assert!(
        !every_page(&s, &c.principal, "/v1/audit", 50, "reference")
            .0
            .is_empty()
    );
    assert!(
        every_page(&s, &stranger, "/v1/audit", 50, "reference")
            .0
            .is_empty()
    );
    let (st, _) = s.call("GET", "/v1/audit", Some(&c.agent), None);
    assert_eq!(st, 403);
}

/// The data directory `testdata/store/schema-1` was written by the release
/// before schema versions existed (a request flow, a denial, facts, a
/// decision, a revocation, a merged pull request's event).
fn previous_release_data(name: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/store/schema-1");
    for f in std::fs::read_dir(src).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    dir
}

fn user_version(data: &std::path::Path) -> u32 {
    let c = rusqlite::Connection::open(mandate_store::database_path(data)).unwrap();
    c.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn a_database_from_the_previous_release_is_upgraded_in_place_and_keeps_every_record() {
    if on_postgres() {
        // The fixture is an SQLite file; PostgreSQL's migrations are
        // exercised by every test of this run, from an empty database.
        return;
    }
    let dir = previous_release_data("upgrade");
    assert_eq!(
        user_version(&dir.join("data")),
        0,
        "the fixture predates schema versions"
    );
    let s = Server::start_in(dir.clone());
    let c = Cast::new(&s);
    assert_eq!(
        user_version(&s.data_dir()),
        mandate_store::schema::SCHEMA_VERSION
    );

    let (mandates, _) = every_page(&s, &c.admin, "/v1/mandates", 50, "mandate_id");
    assert_eq!(mandates.len(), 3);
    let states: HashSet<String> = every_page(&s, &c.admin, "/v1/mandates", 50, "state")
        .0
        .into_iter()
        .collect();
    assert_eq!(
        states,
        ["revoked", "completed", "active"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(every_page(&s, &c.admin, "/v1/requests", 2, "id").0.len(), 5);

    // Schema 4's indexes are built over the old records: each ended
    // mandate's end is found through them, and the live one has none.
    let ids = every_page(&s, &c.admin, "/v1/mandates", 50, "mandate_id").0;
    let states = every_page(&s, &c.admin, "/v1/mandates", 50, "state").0;
    for (id, state) in ids.iter().zip(&states) {
        let end = s
            .state
            .store
            .read(|conn| mandate_store::audit::ended(conn, id))
            .unwrap();
        let expected = (state != "active").then_some(state.as_str());
        assert_eq!(end.as_ref().map(|r| r.kind.as_str()), expected, "{id}");
    }
    let (refs, _) = every_page(&s, &c.admin, "/v1/audit", 7, "reference");
    assert_eq!(refs.len(), 19);

    // The chain written by the old release still verifies, checkpoint included.
    let report = s
        .state
        .store
        .read(|conn| {
            mandate_store::audit::verify(
                conn,
                &mandate_store::checkpoint_path(&s.data_dir()),
                &s.state.checkpoint_key,
            )
        })
        .unwrap();
    assert_eq!(report.first_problem, None);
    assert_eq!(report.records, 19);

    // It keeps working: a new grant is recorded and the revoked one stays revoked.
    let (fresh, _) = grant(&s, &c, &pr_request("vp@acme.example", 77));
    let (st, revoked) = s.call("GET", "/v1/mandates?state=revoked", Some(&c.admin), None);
    assert_eq!(st, 200);
    assert_eq!(revoked["items"].as_array().unwrap().len(), 1);
    let data = s.stop();

    // Opening again is a no-op for the schema and keeps the new grant.
    let s = Server::start_in(data);
    let c = Cast::new(&s);
    assert_eq!(
        user_version(&s.data_dir()),
        mandate_store::schema::SCHEMA_VERSION
    );
    let (st, m) = s.call(
        "GET",
        &format!("/v1/mandates/{fresh}"),
        Some(&c.admin),
        None,
    );
    assert_eq!((st, m["state"].as_str()), (200, Some("active")));
}

#[test]
fn a_database_written_by_a_newer_release_is_refused_and_left_untouched() {
    if on_postgres() {
        // The fixture is an SQLite file; PostgreSQL's migrations are
        // exercised by every test of this run, from an empty database.
        return;
    }
    let dir = previous_release_data("newer");
    let db = mandate_store::database_path(&dir.join("data"));
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let config = mandate_authority::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        ..mandate_authority::Config::default()
    };
    let Err(err) = mandate_authority::AppState::open(config) else {
        panic!("a database from a newer release was opened");
    };
    assert!(err.contains("schema version 99"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "nothing written");
}
