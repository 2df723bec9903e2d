//! `mandate keygen --out KEY.jwk [--alg EdDSA|ES256]`

use mandate_core::keys::{Algorithm, SigningKey};

use crate::command::print_json;
use crate::{CliError, Output, io};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the private JWK (created with mode 0600; never overwritten).
    #[arg(long)]
    out: String,
    /// Signature algorithm.
    #[arg(long, default_value = "EdDSA", value_parser = ["EdDSA", "ES256"])]
    alg: String,
    /// Key id (default: the RFC 7638 thumbprint).
    #[arg(long)]
    kid: Option<String>,
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    let alg = Algorithm::from_name(&a.alg).unwrap_or(Algorithm::EdDSA);
    let mut key = SigningKey::generate(alg, &mut rand_core::OsRng);
    if let Some(kid) = a.kid {
        key = key.with_kid(kid);
    }
    let private = serde_json::to_vec_pretty(&key.to_private_jwk())
        .map_err(|e| CliError::input("invalid_input", e.to_string()))?;
    io::write_private(&a.out, &private)?;
    let public = serde_json::to_value(key.public_jwk()).unwrap_or_default();
    match out {
        Output::Json => {
            print_json(&serde_json::json!({"private_key_file": a.out, "public_jwk": public}))
        }
        Output::Text => print_json(&public),
    }
    Ok(0)
}
