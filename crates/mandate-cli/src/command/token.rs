//! `mandate token --sub S --role R [--tenant T] [--ttl SECS] [--data-dir DIR]`

use std::path::PathBuf;

use mandate_authority::auth::{Role, mint, now_secs};
use mandate_authority::state::{issuer_key_path, load_or_create_key};

use crate::command::print_json;
use crate::{CliError, Output};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The caller's subject (e.g. alice@example.com).
    #[arg(long)]
    sub: String,
    /// principal, admin, agent, event_source or enforcer.
    #[arg(long, value_parser = ["principal", "admin", "agent", "event_source", "enforcer"])]
    role: String,
    /// The tenant.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Lifetime in seconds (at most a day).
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
    /// The authority's data directory (holds the local issuer's key).
    #[arg(long, default_value = "mandate-data")]
    data_dir: PathBuf,
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    if !(1..=86_400).contains(&a.ttl) {
        return Err(CliError::input(
            "invalid_input",
            "--ttl: must be between 1 and 86400 seconds",
        ));
    }
    let role: Role = serde_json::from_value(serde_json::Value::String(a.role.clone()))
        .map_err(|e| CliError::input("invalid_input", format!("--role: {e}")))?;
    std::fs::create_dir_all(&a.data_dir).map_err(|e| CliError::Io {
        path: a.data_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let key = load_or_create_key(&issuer_key_path(&a.data_dir)).map_err(|e| CliError::Io {
        path: "local issuer key".into(),
        message: e,
    })?;
    let token = mint(&key, &a.sub, role, &a.tenant, now_secs(), a.ttl);
    match out {
        Output::Text => println!("{token}"),
        Output::Json => print_json(
            &serde_json::json!({"token": token, "sub": a.sub, "role": a.role, "tenant": a.tenant, "expires_in": a.ttl}),
        ),
    }
    Ok(0)
}
