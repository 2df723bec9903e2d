//! `mandate evaluate --jwks JWKS.json --mandate JWS --request REQUEST.json
//! [--state STATE.json] [--token TOKEN] [--at RFC3339]`

use mandate_core::decision::{Decision, decide_presented};
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
    /// Decision time (RFC 3339; default now).
    #[arg(long)]
    at: Option<String>,
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    let verifier = a.trust.verifier()?;
    let presented = io::mandate_arg(&a.mandate)?;
    let request: EvaluationRequest = io::read_json(&a.request)?;
    let state = match &a.state {
        Some(path) => {
            let doc: StateDocument = io::read_json(path)?;
            StateSnapshot::from_document(doc)
                .map_err(|e| CliError::input("invalid_input", format!("{path}: {e}")))?
        }
        None => StateSnapshot::new(),
    };
    let now = io::time_arg(a.at.as_deref())?;
    let decision = decide_presented(
        &verifier,
        &presented,
        &request,
        a.token.as_deref(),
        &state,
        now,
    );
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
