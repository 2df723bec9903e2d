//! `mandate evaluate --jwks JWKS.json --mandate JWS --request REQUEST.json
//! [--state STATE.json] [--token TOKEN] [--dpop PROOF --htm M --htu URL]
//! [--bearer] [--at RFC3339]`
//!
//! Every use of a mandate is proved with the holder key: the DPoP proof comes
//! from `--dpop` (or the request's `context.dpop`), for the method and URL of
//! `--htm`/`--htu` (or `context.htm`/`context.htu`). Without one the decision
//! is DENY `pop_missing`, unless `--bearer` (development only) says a
//! mandate alone is enough. One invocation cannot know what earlier ones saw:
//! replayed proofs are caught by the long-running enforcement points.

use mandate_core::decision::{Decision, decide};
use mandate_core::pop::{self, Possession, ReplayCache};
use mandate_core::request::EvaluationRequest;
use mandate_core::state::{StateDocument, StateSnapshot};

use crate::command::print_json;
use crate::command::verify::Trust;
use crate::{CliError, Output, io};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    trust: Trust,
    /// The mandate chain: compact, `@FILE`, or `-` for stdin.
    #[arg(long)]
    mandate: String,
    /// An AuthZEN evaluation request (JSON).
    #[arg(long)]
    request: String,
    /// The state snapshot (JSON): revoked/suspended/completed lists, events, facts.
    #[arg(long)]
    state: Option<String>,
    /// The access token presented with the mandate.
    #[arg(long)]
    token: Option<String>,
    /// The DPoP proof sent with the request (compact or `@FILE`), signed with
    /// the holder key the leaf binds (see `mandate dpop`).
    #[arg(long)]
    dpop: Option<String>,
    /// The method the proof must be for (default: the request's `context.htm`).
    #[arg(long)]
    htm: Option<String>,
    /// The URL the proof must be for (default: the request's `context.htu`).
    #[arg(long)]
    htu: Option<String>,
    /// Development only: decide on the mandate alone, without a proof of
    /// possession (whoever copies a mandate could then use it).
    #[arg(long, conflicts_with = "dpop")]
    bearer: bool,
    /// Decision time (RFC 3339; default now).
    #[arg(long)]
    at: Option<String>,
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    let verifier = a.trust.verifier()?;
    let presented = io::mandate_arg(&a.mandate)?;
    let mut request: EvaluationRequest = io::read_json(&a.request)?;
    if let Some(p) = &a.dpop {
        request
            .context
            .insert("dpop".into(), io::mandate_arg(p)?.into());
    }
    for (name, value) in [("htm", &a.htm), ("htu", &a.htu)] {
        if let Some(v) = value {
            request.context.insert(name.into(), v.clone().into());
        }
    }
    let state = match &a.state {
        Some(path) => {
            let doc: StateDocument = io::read_json(path)?;
            StateSnapshot::from_document(doc)
                .map_err(|e| CliError::input("invalid_input", format!("{path}: {e}")))?
        }
        None => StateSnapshot::new(),
    };
    let now = io::time_arg(a.at.as_deref())?;
    if a.bearer {
        eprintln!(
            "warning: --bearer: deciding on the mandate alone, without proof of possession (development only)"
        );
    }
    let token = a.token.as_deref();
    let decision = match verifier.verify(&presented) {
        Ok(chain) => {
            let possession = if a.bearer {
                Possession::Bearer
            } else {
                pop::from_context(&request, token)
            };
            let failure = pop::check(&chain, &possession, &ReplayCache::new(1), now);
            let mut d = decide(&chain, &request, token, &state, now);
            if let Some(e) = failure {
                d.deny_also(e.code());
            }
            d
        }
        Err(e) => Decision::from_chain_error(&e),
    };
    match out {
        Output::Json => print_json(&serde_json::to_value(&decision).unwrap_or_default()),
        Output::Text => print_text(&decision),
    }
    Ok(if decision.allow { 0 } else { 2 })
}

fn print_text(d: &Decision) {
    let chain: Vec<String> = d.chain.iter().map(ToString::to_string).collect();
    if d.allow {
        println!("ALLOW  chain: {}", chain.join(" -> "));
    } else {
        println!("DENY   {}", d.reasons.join(", "));
        if !chain.is_empty() {
            println!("       chain: {}", chain.join(" -> "));
        }
    }
    for o in &d.obligations {
        println!(
            "       obligation: {}",
            serde_json::to_string(o).unwrap_or_default()
        );
    }
}
