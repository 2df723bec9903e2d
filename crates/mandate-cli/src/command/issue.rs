//! `mandate issue --key AUTHORITY.jwk --claims MANDATE.json [--at RFC3339]`
//!
//! The registered claims a claims file leaves out are filled in: `iat` and
//! `nbf` = now (or `--at`), `exp` = `lifecycle.hard_expiry`, `jti` =
//! `mandate_id`. An `iat`, `nbf` or `exp` written as an RFC 3339 time (as the
//! source text's example writes `iat`) becomes the NumericDate a JWT carries.

use mandate_core::chain::issue_root;
use mandate_core::keys::{PublicJwk, VerifyingKey};
use mandate_core::model::{Confirmation, MandateClaims};

use crate::command::print_json;
use crate::{CliError, Output, io};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The authority's private JWK.
    #[arg(long)]
    key: String,
    /// The mandate's claims (JSON).
    #[arg(long)]
    claims: String,
    /// The holder's public JWK, set as `agent.cnf.jwk` so the holder can derive children.
    #[arg(long)]
    holder: Option<String>,
    /// The holder's TLS client certificate (PEM): its thumbprint is set as
    /// `agent.cnf.x5t#S256`, so the mandate is used only over mutual TLS
    /// with that certificate (RFC 8705). Needs a holder key (`--holder` or
    /// the claims' `agent.cnf.jwk`).
    #[arg(long)]
    holder_cert: Option<String>,
    /// Issue time when the claims do not say (RFC 3339; default now).
    #[arg(long)]
    at: Option<String>,
}

/// Fills the registered claims the file left out and turns RFC 3339 times
/// into NumericDates, naming the member that cannot be read.
fn complete(
    mut v: serde_json::Value,
    now: mandate_core::timestamp::UnixTime,
    path: &str,
) -> Result<serde_json::Value, CliError> {
    use serde_json::Value;
    let Some(o) = v.as_object_mut() else {
        return Err(CliError::input(
            "invalid_input",
            format!("{path}: not a JSON object"),
        ));
    };
    for name in ["iat", "nbf", "exp"] {
        if let Some(Value::String(t)) = o.get(name) {
            let secs = mandate_core::timestamp::UnixTime::parse_rfc3339(t)
                .map_err(|e| CliError::input("invalid_input", format!("{path}: {name}: {e}")))?
                .secs();
            o.insert(name.into(), secs.into());
        }
    }
    if !o.contains_key("iat") {
        o.insert("iat".into(), now.secs().into());
    }
    if !o.contains_key("nbf") {
        let iat = o.get("iat").cloned().unwrap_or(Value::Null);
        o.insert("nbf".into(), iat);
    }
    if !o.contains_key("exp") {
        let hard = o
            .get("lifecycle")
            .and_then(|l| l.get("hard_expiry"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                CliError::input(
                    "invalid_input",
                    format!("{path}: exp: missing, and no lifecycle.hard_expiry to take it from"),
                )
            })?;
        let secs = mandate_core::timestamp::UnixTime::parse_rfc3339(hard)
            .map_err(|e| {
                CliError::input(
                    "invalid_input",
                    format!("{path}: lifecycle.hard_expiry: {e}"),
                )
            })?
            .secs();
        o.insert("exp".into(), secs.into());
    }
    if !o.contains_key("jti")
        && let Some(id) = o.get("mandate_id").cloned()
    {
        o.insert("jti".into(), id);
    }
    Ok(v)
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    let key = io::signing_key(&a.key)?;
    let raw: serde_json::Value = io::read_json(&a.claims)?;
    let now = io::time_arg(a.at.as_deref())?;
    let mut claims: MandateClaims =
        serde_path_to_error::deserialize(complete(raw, now, &a.claims)?).map_err(|e| {
            CliError::input(
                "invalid_input",
                format!("{}: {}: {}", a.claims, e.path(), e.inner()),
            )
        })?;
    if let Some(path) = &a.holder {
        let jwk: PublicJwk = io::read_json(path)?;
        VerifyingKey::from_jwk(&jwk)
            .map_err(|e| CliError::input("invalid_key", format!("{path}: {e}")))?;
        claims.agent.cnf = Some(Confirmation::key(jwk));
    }
    if let Some(path) = &a.holder_cert {
        io::bind_certificate(claims.agent.cnf.as_mut(), path, "--holder-cert", "--holder")?;
    }
    let jws = issue_root(&key, &claims).map_err(|e| CliError::Input {
        codes: e.codes(),
        message: format!("{}: {e}", a.claims),
    })?;
    match out {
        Output::Text => println!("{jws}"),
        Output::Json => print_json(&serde_json::json!({
            "mandate_id": claims.mandate_id,
            "mandate": jws,
        })),
    }
    Ok(0)
}
