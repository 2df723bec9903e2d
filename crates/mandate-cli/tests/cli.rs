//! The `mandate` binary, driven as a user would: exit codes, outputs, files,
//! the README quick start, and interoperability with PyJWT.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mandate")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

struct Dir(tempdir::TempDir);

mod tempdir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "mandate-cli-test-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Dir {
    fn new() -> Self {
        let d = Dir(tempdir::TempDir::new());
        std::fs::copy(
            repo().join("testdata/procurement-mandate.json"),
            d.path("procurement-mandate.json"),
        )
        .unwrap();
        for f in [
            "child-search-only.json",
            "child-widened.json",
            "request-search.json",
            "state-active.json",
            "state-cancelled.json",
        ] {
            std::fs::copy(repo().join("testdata/examples").join(f), d.path(f)).unwrap();
        }
        d
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.0.join(name)
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .current_dir(&self.0.0)
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }
    /// Authority and agent keys, the JWKS, and the root bound to the agent.
    fn setup(&self) {
        self.ok(&["keygen", "--out", "authority.jwk"]);
        let agent_pub = self.ok(&["keygen", "--out", "agent.jwk"]);
        self.write("agent.pub.jwk", &agent_pub);
        let jwks = self.ok(&["jwks", "authority.jwk"]);
        self.write("jwks.json", &jwks);
        let root = self.ok(&[
            "issue",
            "--key",
            "authority.jwk",
            "--holder",
            "agent.pub.jwk",
            "--claims",
            "procurement-mandate.json",
        ]);
        self.write("root.jws", &root);
    }
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn keygen_writes_a_private_key_readable_only_by_its_owner_and_never_overwrites() {
    let d = Dir::new();
    let public = d.ok(&["keygen", "--out", "k.jwk", "--alg", "ES256"]);
    let public: serde_json::Value = serde_json::from_str(&public).unwrap();
    assert_eq!(public["alg"], "ES256");
    assert!(
        public.get("d").is_none(),
        "the public JWK must not carry the private part"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.path("k.jwk"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = d.run(&["keygen", "--out", "k.jwk"]);
    assert_eq!(code(&again), Some(1));
    assert!(stderr(&again).contains("k.jwk"));
}

#[test]
fn issue_inspect_verify_attenuate_evaluate() {
    let d = Dir::new();
    d.setup();
    let inspect = d.ok(&["inspect", "@root.jws"]);
    assert!(inspect.starts_with("NOT VERIFIED"), "{inspect}");
    assert!(
        inspect.contains(
            "procurement.contingency_program.status == 'active' (else suspend_and_notify)"
        )
    );
    assert!(
        d.ok(&[
            "verify",
            "--jwks",
            "jwks.json",
            "@root.jws",
            "--at",
            "2025-10-02T09:00:00Z"
        ])
        .starts_with("VALID")
    );

    let sub_pub = d.ok(&["keygen", "--out", "sub.jwk"]);
    d.write("sub.pub.jwk", &sub_pub);
    let child = d.ok(&[
        "attenuate",
        "--parent",
        "@root.jws",
        "--holder-key",
        "agent.jwk",
        "--child-holder",
        "sub.pub.jwk",
        "--claims",
        "child-search-only.json",
        "--at",
        "2025-10-02T08:00:00Z",
    ]);
    d.write("child.jws", &child);
    // Each evaluation carries a fresh proof by the sub-agent's key, made at
    // the decision's time for the request's method and URL.
    let eval_with = |state: &str, at: &str, key: &str| {
        let proof = d.ok(&[
            "dpop",
            "--key",
            key,
            "--method",
            "POST",
            "--url",
            "https://vendor-portal.example.com/search",
            "--at",
            at,
        ]);
        d.write("proof.jwt", &proof);
        d.run(&[
            "evaluate",
            "--jwks",
            "jwks.json",
            "--mandate",
            "@child.jws",
            "--request",
            "request-search.json",
            "--state",
            state,
            "--dpop",
            "@proof.jwt",
            "--at",
            at,
        ])
    };
    let eval = |state: &str, at: &str| eval_with(state, at, "sub.jwk");
    // The parent's holder key is not the child's: its proof proves nothing.
    let stolen = eval_with("state-active.json", "2025-10-02T09:00:00Z", "agent.jwk");
    assert_eq!(code(&stolen), Some(2));
    assert!(
        stdout(&stolen).starts_with("DENY   pop_invalid"),
        "{}",
        stdout(&stolen)
    );
    // No proof at all.
    let bare = d.run(&[
        "evaluate",
        "--jwks",
        "jwks.json",
        "--mandate",
        "@child.jws",
        "--request",
        "request-search.json",
        "--state",
        "state-active.json",
        "--at",
        "2025-10-02T09:00:00Z",
    ]);
    assert!(
        stdout(&bare).starts_with("DENY   pop_missing"),
        "{}",
        stdout(&bare)
    );
    let allow = eval("state-active.json", "2025-10-02T09:00:00Z");
    assert_eq!(code(&allow), Some(0));
    assert!(stdout(&allow).starts_with("ALLOW"));
    let expired = eval("state-active.json", "2025-10-09T09:00:00Z");
    assert_eq!(code(&expired), Some(2));
    assert!(stdout(&expired).starts_with("DENY   expired"));
    let cancelled = eval("state-cancelled.json", "2025-10-02T09:00:00Z");
    assert_eq!(code(&cancelled), Some(2));
    assert!(stdout(&cancelled).contains("completed, condition_failed:program-active"));
    assert!(stdout(&cancelled).contains("\"type\":\"notify_principal\""));
}

#[test]
fn attenuate_refuses_a_widened_child_with_exit_2_like_a_deny_naming_the_dimension() {
    let d = Dir::new();
    d.setup();
    let out = d.run(&[
        "attenuate",
        "--parent",
        "@root.jws",
        "--holder-key",
        "agent.jwk",
        "--claims",
        "child-widened.json",
        "--at",
        "2025-10-02T08:00:00Z",
    ]);
    // A policy refusal, not unreadable input.
    assert_eq!(code(&out), Some(2));
    assert!(
        stderr(&out).contains("attenuation_violation:actions"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    let json = d.run(&[
        "--output",
        "json",
        "attenuate",
        "--parent",
        "@root.jws",
        "--holder-key",
        "agent.jwk",
        "--claims",
        "child-widened.json",
        "--at",
        "2025-10-02T08:00:00Z",
    ]);
    let err: serde_json::Value = serde_json::from_str(&stderr(&json)).unwrap();
    assert_eq!(
        err["error"]["codes"],
        serde_json::json!(["attenuation_violation:actions"])
    );
}

#[test]
fn verify_checks_the_validity_window_now_unless_told_otherwise() {
    let d = Dir::new();
    d.setup();
    // The quick start's root expired in 2025: without --at, `now` is checked.
    let out = d.run(&["verify", "--jwks", "jwks.json", "@root.jws"]);
    assert_eq!(code(&out), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("INVALID"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("expired at"));
    // Before it was issued is not valid either.
    let out = d.run(&[
        "verify",
        "--jwks",
        "jwks.json",
        "@root.jws",
        "--at",
        "2020-01-01T00:00:00Z",
    ]);
    assert_eq!(code(&out), Some(2), "{out:?}");
}

#[test]
fn a_tampered_or_foreign_mandate_fails_verification_with_exit_2() {
    let d = Dir::new();
    d.setup();
    let root = std::fs::read_to_string(d.path("root.jws")).unwrap();
    let (head, sig) = root.trim().rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head}.{flipped}{}", &sig[1..]);
    let out = d.run(&["verify", "--jwks", "jwks.json", &tampered]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("signature_invalid"));

    d.ok(&["keygen", "--out", "other.jwk"]);
    let other = d.ok(&["jwks", "other.jwk"]);
    d.write("other.json", &other);
    let out = d.run(&[
        "--output",
        "json",
        "evaluate",
        "--jwks",
        "other.json",
        "--mandate",
        "@root.jws",
        "--request",
        "request-search.json",
    ]);
    assert_eq!(code(&out), Some(2));
    let decision: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(decision["allow"], false);
    assert_eq!(decision["reasons"], serde_json::json!(["unknown_kid"]));
}

#[test]
fn invalid_input_exits_3_and_names_the_field() {
    let d = Dir::new();
    d.ok(&["keygen", "--out", "authority.jwk"]);
    let text = std::fs::read_to_string(d.path("procurement-mandate.json")).unwrap();
    d.write(
        "bad.json",
        &text.replace("\"2025-10-15T17:00:00Z\"", "\"next tuesday\""),
    );
    let out = d.run(&["issue", "--key", "authority.jwk", "--claims", "bad.json"]);
    assert_eq!(code(&out), Some(3));
    assert!(
        stderr(&out).contains("lifecycle.hard_expiry"),
        "{}",
        stderr(&out)
    );
    d.write(
        "dup.json",
        &text.replacen("{", "{\"iss\": \"https://evil.example.com\",", 1),
    );
    let out = d.run(&["issue", "--key", "authority.jwk", "--claims", "dup.json"]);
    assert_eq!(code(&out), Some(3));
    assert!(
        stderr(&out).contains("duplicate member `iss`"),
        "{}",
        stderr(&out)
    );
    let out = d.run(&[
        "evaluate",
        "--jwks",
        "missing.json",
        "--mandate",
        "x",
        "--request",
        "y",
    ]);
    assert_eq!(code(&out), Some(1));
    let out = d.run(&["frobnicate"]);
    assert_eq!(code(&out), Some(3));
    let out = d.run(&["audit", "query", "--data-dir", "data", "--decision", "12.x"]);
    assert_eq!(code(&out), Some(3));
    assert!(
        stderr(&out).contains("--decision: `12.x` is not SEQ or SEQ.ITEM"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_readme_quick_start_shows_what_the_tool_prints() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/quickstart.sh"))
        .env("MANDATE_BIN", bin())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("<!-- quickstart:begin -->")
        .nth(1)
        .and_then(|s| s.split("<!-- quickstart:end -->").next())
        .expect("README.md has a quickstart block");
    let shown: String = block
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        shown.trim(),
        stdout(&out).trim(),
        "README quick start drifted from scripts/quickstart.sh"
    );
}

fn python_has_pyjwt() -> bool {
    Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_root_mandate_made_by_the_cli_verifies_with_pyjwt() {
    assert!(
        python_has_pyjwt(),
        "PyJWT is required: python3 -m pip install 'pyjwt[crypto]' (scripts/test does this)"
    );
    let d = Dir::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let exp = now + 3600;
    let mut claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path("procurement-mandate.json")).unwrap())
            .unwrap();
    claims["iat"] = (now - 60).into();
    claims["nbf"] = (now - 60).into();
    claims["exp"] = exp.into();
    let expiry = Command::new("date")
        .args(["-u", "-d", &format!("@{exp}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    claims["lifecycle"]["hard_expiry"] = String::from_utf8(expiry.stdout).unwrap().trim().into();
    d.write("live.json", &claims.to_string());
    let script = repo().join("crates/mandate-cli/tests/interop/pyjwt_verify.py");
    for alg in ["EdDSA", "ES256"] {
        d.ok(&["keygen", "--out", &format!("{alg}.jwk"), "--alg", alg]);
        let jwks = d.ok(&["jwks", &format!("{alg}.jwk")]);
        d.write("jwks.json", &jwks);
        let jws = d.ok(&[
            "issue",
            "--key",
            &format!("{alg}.jwk"),
            "--claims",
            "live.json",
        ]);
        d.write("root.jws", &jws);
        let out = Command::new("python3")
            .arg(&script)
            .args([d.path("jwks.json"), d.path("root.jws")])
            .arg(alg)
            .output()
            .unwrap();
        assert_eq!(
            code(&out),
            Some(0),
            "PyJWT rejected a {alg} root: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(stdout(&out).trim(), "mnd-logistics-sourcing-7f2a");

        // And PyJWT refuses a tampered one, so the check above can fail.
        let (head, sig) = jws.trim().rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        d.write("root.jws", &format!("{head}.{flipped}{}", &sig[1..]));
        let out = Command::new("python3")
            .arg(&script)
            .args([d.path("jwks.json"), d.path("root.jws")])
            .arg(alg)
            .output()
            .unwrap();
        assert_eq!(code(&out), Some(1), "PyJWT accepted a tampered {alg} root");
    }
}

#[test]
fn the_readme_authority_quick_start_shows_what_the_server_answers() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/authority-quickstart.sh"))
        .env("MANDATE_BIN", bin())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("<!-- authority-quickstart:begin -->")
        .nth(1)
        .and_then(|s| s.split("<!-- authority-quickstart:end -->").next())
        .expect("README.md has an authority quick start block");
    let shown: String = block
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        shown.trim(),
        stdout(&out).trim(),
        "README authority quick start drifted from scripts/authority-quickstart.sh"
    );
    assert!(stdout(&out).contains("ALLOW"));
    assert!(stdout(&out).contains("DENY completed"));
}

#[test]
fn the_source_texts_own_example_mandate_issues_with_its_registered_claims_filled_in() {
    let d = Dir::new();
    d.setup();
    std::fs::copy(
        repo().join("testdata/examples/source-text-mandate.json"),
        d.path("source.json"),
    )
    .unwrap();
    let jws = d.ok(&[
        "issue",
        "--key",
        "authority.jwk",
        "--holder",
        "agent.pub.jwk",
        "--claims",
        "source.json",
        "--at",
        "2025-10-01T08:00:00Z",
    ]);
    let claims = mandate_core::jws::unverified_payload(jws.trim()).unwrap();
    // `iat` as the text wrote it (RFC 3339), as a NumericDate; the rest filled.
    assert_eq!(claims["iat"], 1_759_305_600);
    assert_eq!(claims["nbf"], 1_759_305_600);
    assert_eq!(claims["exp"], 1_760_547_600, "exp = lifecycle.hard_expiry");
    assert_eq!(claims["jti"], "mnd-logistics-sourcing-7f2a");
    d.write("source.jws", &jws);
    let v = d.ok(&[
        "verify",
        "--jwks",
        "jwks.json",
        "@source.jws",
        "--at",
        "2025-10-02T09:00:00Z",
    ]);
    assert!(v.starts_with("VALID"), "{v}");
}

/// The leaf's claims of a compact chain (not verified).
fn leaf_claims(chain: &str) -> serde_json::Value {
    use mandate_core::b64;
    let leaf = chain.trim().rsplit('~').next().unwrap();
    serde_json::from_slice(&b64::decode(leaf.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

/// A self-signed certificate (PEM) and its thumbprint, as RFC 8705 §3.1
/// computes it: base64url of the SHA-256 of the DER.
fn certificate(d: &Dir, name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    d.write(&format!("{name}.pem"), &cert.pem());
    mandate_core::hash::sha256_b64(cert.der())
}

#[test]
fn issue_and_attenuate_bind_a_holder_certificate_by_its_thumbprint() {
    let d = Dir::new();
    d.setup();
    let agents = certificate(&d, "agent-cert");
    let root = d.ok(&[
        "issue",
        "--key",
        "authority.jwk",
        "--holder",
        "agent.pub.jwk",
        "--holder-cert",
        "agent-cert.pem",
        "--claims",
        "procurement-mandate.json",
    ]);
    d.write("bound.jws", &root);
    assert_eq!(
        leaf_claims(&root)["agent"]["cnf"]["x5t#S256"],
        agents.as_str()
    );
    assert!(leaf_claims(&root)["agent"]["cnf"]["jwk"].is_object());
    let inspect = d.ok(&["inspect", "@bound.jws"]);
    assert!(
        inspect.contains(&format!(
            "used only over mutual TLS with the client certificate x5t#S256 {agents}"
        )),
        "{inspect}"
    );
    assert!(!d.ok(&["inspect", "@root.jws"]).contains("mutual TLS"));

    // The child binds the sub-agent's certificate, not its parent's.
    let sub_pub = d.ok(&["keygen", "--out", "sub.jwk"]);
    d.write("sub.pub.jwk", &sub_pub);
    let subs = certificate(&d, "sub-cert");
    let child = d.ok(&[
        "attenuate",
        "--parent",
        "@bound.jws",
        "--holder-key",
        "agent.jwk",
        "--child-holder",
        "sub.pub.jwk",
        "--child-holder-cert",
        "sub-cert.pem",
        "--claims",
        "child-search-only.json",
        "--at",
        "2025-10-02T08:00:00Z",
    ]);
    assert_eq!(
        leaf_claims(&child)["agent"]["cnf"]["x5t#S256"],
        subs.as_str()
    );

    // A certificate with no holder key to go with it, or a file that holds
    // no certificate: exit 3, naming what is wrong.
    let out = d.run(&[
        "issue",
        "--key",
        "authority.jwk",
        "--holder-cert",
        "agent-cert.pem",
        "--claims",
        "procurement-mandate.json",
    ]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--holder-cert"), "{}", stderr(&out));
    d.write("not-a-cert.pem", "hello");
    let out = d.run(&[
        "issue",
        "--key",
        "authority.jwk",
        "--holder",
        "agent.pub.jwk",
        "--holder-cert",
        "not-a-cert.pem",
        "--claims",
        "procurement-mandate.json",
    ]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not-a-cert.pem") && stderr(&out).contains("certificate"),
        "{}",
        stderr(&out)
    );
}
