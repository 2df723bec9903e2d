//! `mandate issue --key AUTHORITY.jwk --claims MANDATE.json`

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
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    let key = io::signing_key(&a.key)?;
    let mut claims: MandateClaims = io::read_json(&a.claims)?;
    if let Some(path) = &a.holder {
        let jwk: PublicJwk = io::read_json(path)?;
        VerifyingKey::from_jwk(&jwk)
            .map_err(|e| CliError::input("invalid_key", format!("{path}: {e}")))?;
        claims.agent.cnf = Some(Confirmation { jwk });
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
