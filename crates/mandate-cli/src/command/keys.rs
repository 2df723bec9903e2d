//! `mandate keys list|rotate|retire --data-dir DIR`: the authority's
//! signing keys over time (see `mandate_authority::keyring`). Run on the
//! data directory of a running authority: it takes the change within a
//! second, without a restart.

use std::path::PathBuf;

use mandate_authority::auth::now_secs;
use mandate_authority::keyring;

use crate::command::print_json;
use crate::{CliError, Output};

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Lists the keys: when each signs from and retires.
    List {
        /// The authority's data directory.
        #[arg(long, default_value = "mandate-data")]
        data_dir: PathBuf,
    },
    /// Adds a key: published now, signing after `--publish-secs`; the keys
    /// signing until then retire `--overlap-secs` after it takes over.
    Rotate {
        /// The authority's data directory.
        #[arg(long, default_value = "mandate-data")]
        data_dir: PathBuf,
        /// How long the new key is published before it signs (enforcement
        /// points fetch keys every 60 s by default).
        #[arg(long, default_value_t = 300)]
        publish_secs: i64,
        /// How long what the old keys signed keeps verifying after the new
        /// key takes over (mandates they issued must be issued again by then).
        #[arg(long, default_value_t = 7 * 86_400)]
        overlap_secs: i64,
    },
    /// Retires a key now (a key that leaked): nothing it signed verifies.
    Retire {
        /// The authority's data directory.
        #[arg(long, default_value = "mandate-data")]
        data_dir: PathBuf,
        /// The key's `kid`.
        kid: String,
    },
}

fn fail(e: String) -> CliError {
    CliError::input("keyring", e)
}

fn when(ms: i64) -> String {
    mandate_core::timestamp::UnixTime::from_secs(ms / 1000)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Runs a subcommand.
pub fn run(c: Command, out: Output) -> Result<u8, CliError> {
    let now_ms = now_secs() * 1000;
    match c {
        Command::List { data_dir } => {
            let (ring, keys) = keyring::load(&data_dir).map_err(fail)?;
            let signing = keyring::at(&keys, now_ms).map(|(k, _)| k.kid().to_owned());
            let rows: Vec<serde_json::Value> = ring
                .keys
                .iter()
                .map(|e| {
                    let retired = e.retire_at_ms.is_some_and(|r| r <= now_ms);
                    let status = if signing.as_deref() == Some(e.kid.as_str()) {
                        "signing"
                    } else if retired {
                        "retired"
                    } else if e.signs_from_ms > now_ms {
                        "published"
                    } else {
                        "retiring"
                    };
                    serde_json::json!({"kid": e.kid, "status": status,
                        "signs_from": when(e.signs_from_ms),
                        "retires_at": e.retire_at_ms.map(when)})
                })
                .collect();
            match out {
                Output::Json => print_json(&serde_json::json!({"keys": rows})),
                Output::Text => {
                    for r in rows {
                        let f = |k: &str| {
                            r.get(k)
                                .and_then(|v| v.as_str())
                                .unwrap_or("never")
                                .to_owned()
                        };
                        println!(
                            "{}  {:9}  signs from {}  retires {}",
                            f("kid"),
                            f("status"),
                            f("signs_from"),
                            f("retires_at")
                        );
                    }
                }
            }
        }
        Command::Rotate {
            data_dir,
            publish_secs,
            overlap_secs,
        } => {
            if !(0..=30 * 86_400).contains(&publish_secs) {
                return Err(fail("--publish-secs: between 0 and 2592000".into()));
            }
            if !(0..=366 * 86_400).contains(&overlap_secs) {
                return Err(fail("--overlap-secs: between 0 and 31622400".into()));
            }
            let e = keyring::rotate(&data_dir, now_ms, publish_secs, overlap_secs).map_err(fail)?;
            match out {
                Output::Json => print_json(
                    &serde_json::json!({"kid": e.kid, "signs_from": when(e.signs_from_ms)}),
                ),
                Output::Text => {
                    println!("{} published; signs from {}", e.kid, when(e.signs_from_ms))
                }
            }
        }
        Command::Retire { data_dir, kid } => {
            keyring::retire(&data_dir, &kid, now_ms).map_err(fail)?;
            match out {
                Output::Json => print_json(&serde_json::json!({"kid": kid, "retired": true})),
                Output::Text => println!("{kid} retired"),
            }
        }
    }
    Ok(0)
}
