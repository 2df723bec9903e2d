//! `mandate dpop --key HOLDER.jwk --method POST --url URL [--token T] [--at T]`:
//! a DPoP proof (RFC 9449) for one request, signed with the holder key the
//! mandate binds. Every use of a mandate carries one.

use mandate_core::pop::make_proof;

use crate::command::print_json;
use crate::{CliError, Output, io};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The holder's private JWK (the key the mandate's `agent.cnf.jwk` binds).
    #[arg(long)]
    key: String,
    /// The HTTP method of the request the proof is for (`htm`).
    #[arg(long)]
    method: String,
    /// The URL of the request (`htu`; query and fragment are ignored).
    #[arg(long)]
    url: String,
    /// The access token sent with the request, named by its hash (`ath`).
    #[arg(long)]
    token: Option<String>,
    /// The proof's time (RFC 3339; default now).
    #[arg(long)]
    at: Option<String>,
    /// How many proofs to print, one per line, each with its own `jti`
    /// (load tests: every request needs a fresh one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    count: u32,
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    let key = io::signing_key(&a.key)?;
    if a.method.is_empty() || !a.method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(CliError::input(
            "invalid_input",
            format!("--method: `{}` is not an upper-case HTTP method", a.method),
        ));
    }
    mandate_core::pop::normalize_htu(&a.url)
        .map_err(|e| CliError::input("invalid_input", format!("--url: {e}")))?;
    let now = io::time_arg(a.at.as_deref())?;
    let make = || {
        make_proof(
            &key,
            &a.method,
            &a.url,
            a.token.as_deref(),
            &mandate_enforce::sdk::random_jti(),
            now,
        )
    };
    if a.count > 1 {
        use std::io::Write as _;
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        for _ in 0..a.count {
            writeln!(w, "{}", make()).map_err(|e| CliError::Io {
                path: "stdout".into(),
                message: e.to_string(),
            })?;
        }
        w.flush().map_err(|e| CliError::Io {
            path: "stdout".into(),
            message: e.to_string(),
        })?;
        return Ok(0);
    }
    let proof = make();
    match out {
        Output::Text => println!("{proof}"),
        Output::Json => print_json(&serde_json::json!({"dpop": proof})),
    }
    Ok(0)
}
