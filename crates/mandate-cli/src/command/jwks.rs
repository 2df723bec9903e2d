//! `mandate jwks KEY.jwk...`

use mandate_core::keys::{Jwks, PublicJwk, VerifyingKey};

use crate::command::print_json;
use crate::{CliError, Output, io};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Key files: private JWKs (their public half is used) or public JWKs.
    #[arg(required = true)]
    keys: Vec<String>,
}

/// Runs the command.
pub fn run(a: Args, _out: Output) -> Result<u8, CliError> {
    let mut keys = Vec::new();
    for path in &a.keys {
        let value: serde_json::Value = io::read_json(path)?;
        let public = if value.get("d").is_some() {
            io::signing_key(path)?.public_jwk()
        } else {
            let jwk: PublicJwk = serde_json::from_value(value)
                .map_err(|e| CliError::input("invalid_key", format!("{path}: {e}")))?;
            VerifyingKey::from_jwk(&jwk)
                .map_err(|e| CliError::input("invalid_key", format!("{path}: {e}")))?;
            jwk
        };
        keys.push(public);
    }
    print_json(&serde_json::to_value(Jwks { keys }).unwrap_or_default());
    Ok(0)
}
