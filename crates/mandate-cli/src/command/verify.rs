//! `mandate verify --jwks JWKS.json JWS`

use mandate_core::chain::Verifier;
use mandate_core::decision::IAT_LEEWAY_SECS;
use mandate_core::keys::Algorithm;

use crate::command::{chain_invalid, print_json};
use crate::{CliError, Output, io};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    trust: Trust,
    /// Check every mandate's validity window at this time (RFC 3339) instead
    /// of now. `iat` may be up to 60 s ahead (clock skew); expiry has no leeway.
    #[arg(long)]
    at: Option<String>,
    /// The mandate: the compact chain, `@FILE`, or `-` for stdin.
    mandate: String,
}

/// What a verifier trusts: shared by `verify` and `evaluate`.
#[derive(Debug, clap::Args)]
pub struct Trust {
    /// The authority's public JWKS.
    #[arg(long)]
    jwks: String,
    /// Require this issuer on the root.
    #[arg(long)]
    issuer: Option<String>,
    /// Allowed algorithms (comma-separated).
    #[arg(long, default_value = "EdDSA", value_delimiter = ',', value_parser = ["EdDSA", "ES256"])]
    alg: Vec<String>,
}

impl Trust {
    /// Builds the verifier these flags describe.
    pub(crate) fn verifier(&self) -> Result<Verifier, CliError> {
        let mut v = Verifier::new(io::key_set(&self.jwks)?)
            .with_algorithms(self.alg.iter().filter_map(|a| Algorithm::from_name(a)));
        if let Some(iss) = &self.issuer {
            v = v.with_issuer(iss);
        }
        Ok(v)
    }
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    let verifier = a.trust.verifier()?;
    let presented = io::mandate_arg(&a.mandate)?;
    let chain = verifier
        .verify_uncached(&presented)
        .map_err(|e| chain_invalid(&e))?;
    let mut window = Vec::new();
    let now = io::time_arg(a.at.as_deref())?;
    for m in chain.mandates() {
        let c = m.claims();
        if now >= c.exp || now >= c.lifecycle.hard_expiry {
            window.push(format!("{} expired at {}", c.mandate_id, c.exp));
        } else if now < c.nbf {
            window.push(format!("{} not valid before {}", c.mandate_id, c.nbf));
        } else if now.secs().saturating_add(IAT_LEEWAY_SECS) < c.iat.secs() {
            window.push(format!("{} issued in the future ({})", c.mandate_id, c.iat));
        }
    }
    let ids: Vec<String> = chain.ids().iter().map(ToString::to_string).collect();
    match out {
        Output::Json => print_json(&serde_json::json!({
            "valid": window.is_empty(),
            "chain": ids,
            "problems": window,
        })),
        Output::Text => {
            if window.is_empty() {
                println!("VALID  chain: {}", ids.join(" -> "));
                println!(
                    "       signatures, links and attenuation verified; state (revocation, events, facts) is checked by `evaluate`"
                );
            } else {
                println!("INVALID  {}", window.join("; "));
            }
        }
    }
    Ok(if window.is_empty() { 0 } else { 2 })
}
