//! `mandate inspect JWS`: a readable summary, with no verification implied.

use std::fmt::Write as _;

use mandate_core::chain::{UnverifiedMandate, parse_unverified};
use mandate_core::model::MandateClaims;

use crate::command::print_json;
use crate::{CliError, Output, io};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The mandate: the compact chain, `@FILE`, or `-` for stdin.
    mandate: String,
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    let presented = io::mandate_arg(&a.mandate)?;
    let chain = parse_unverified(&presented).map_err(|e| CliError::Input {
        codes: e.codes(),
        message: e.to_string(),
    })?;
    match out {
        Output::Json => print_json(&serde_json::json!({
            "verified": false,
            "note": "inspection only: no signature, chain or state was checked",
            "chain": chain.iter().map(|m| serde_json::json!({
                "alg": m.alg.as_str(),
                "kid": m.kid,
                "jws_sha256": m.jws_sha256,
                "claims": m.claims,
            })).collect::<Vec<_>>(),
        })),
        Output::Text => print!("{}", render(&chain)),
    }
    Ok(0)
}

fn render(chain: &[UnverifiedMandate]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "NOT VERIFIED: inspection only. No signature, chain link, attenuation or state was checked; use `mandate verify` or `mandate evaluate`."
    );
    for (i, m) in chain.iter().enumerate() {
        let role = if i == 0 { "root" } else { "child" };
        let _ = writeln!(
            s,
            "\n[{i}] {role} mandate {}  ({}, kid {})",
            m.claims.mandate_id,
            m.alg,
            m.kid.as_deref().unwrap_or("-")
        );
        describe(&mut s, &m.claims);
    }
    s
}

fn describe(s: &mut String, c: &MandateClaims) {
    let _ = writeln!(s, "  issuer      {}", c.iss);
    let _ = writeln!(
        s,
        "  principal   {} (idp {}, grant {})",
        c.principal.sub, c.principal.iss, c.principal.grant_ref
    );
    let _ = writeln!(
        s,
        "  agent       {} instance {}{}",
        c.agent.id,
        c.agent.instance,
        if c.agent.cnf.is_some() {
            ", holds a delegation key"
        } else {
            ""
        }
    );
    if let Some(x5t) = c.agent.cnf.as_ref().and_then(|k| k.x5t_s256.as_deref()) {
        let _ = writeln!(
            s,
            "  used only over mutual TLS with the client certificate x5t#S256 {x5t}"
        );
    }
    let _ = writeln!(s, "  objective   {}", c.purpose.objective);
    let _ = writeln!(s, "  context     {}", c.purpose.business_context);
    let _ = writeln!(
        s,
        "  valid       {} .. {} (hard expiry)",
        c.nbf, c.lifecycle.hard_expiry
    );
    for d in &c.authorization_details {
        let _ = writeln!(
            s,
            "  may         {} on {} at {}",
            d.actions.join(", "),
            d.type_,
            d.locations.join(", ")
        );
        for (k, v) in &d.resource {
            let _ = writeln!(s, "                resource {k} = {v}");
        }
        for (k, v) in &d.constraints {
            let _ = writeln!(s, "                constraint {k} = {v}");
        }
    }
    for cond in &c.conditions {
        let _ = writeln!(
            s,
            "  condition   {}: {} (else {})",
            cond.id,
            cond.expression,
            cond.on_failure.as_str()
        );
    }
    for t in &c.lifecycle.terminal_events {
        let _ = writeln!(
            s,
            "  ends on     {}{}",
            t.type_,
            t.subject
                .as_ref()
                .map(|x| format!(" about {x}"))
                .unwrap_or_default()
        );
    }
    if c.lifecycle.one_time {
        let _ = writeln!(s, "  one-time    usable for a single action");
    }
    let d = &c.delegation;
    if d.permitted && d.max_additional_hops > 0 {
        let _ = writeln!(
            s,
            "  delegation  up to {} more hop(s), {}",
            d.max_additional_hops,
            d.attenuation.as_str()
        );
    } else {
        let _ = writeln!(s, "  delegation  not permitted");
    }
    if c.token_binding.is_some() {
        let _ = writeln!(s, "  token       bound by SHA-256");
    }
}
