//! `mandate audit verify|query|export --data-dir DIR [--database postgres://…]`

use std::path::PathBuf;

use mandate_authority::state::authority_key_path;
use mandate_core::keys::{PrivateJwk, SigningKey};
use mandate_store::audit;

use crate::command::print_json;
use crate::{CliError, Output, io};

/// The audit subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Detects any edited, deleted, reordered or truncated record.
    Verify {
        /// The authority's data directory.
        #[arg(long, default_value = "mandate-data")]
        data_dir: PathBuf,
        /// The authority's PostgreSQL database (`postgres://…`), when it
        /// does not use the embedded file; keys and checkpoint are still read
        /// from `--data-dir`.
        #[arg(long)]
        database: Option<String>,
        /// Also check against a checkpoint kept elsewhere (a copy of
        /// `GET /v1/audit/checkpoint` taken earlier): a log rolled back to an
        /// older checkpoint no longer holds the record this one names.
        #[arg(long, value_name = "FILE")]
        against: Option<PathBuf>,
    },
    /// Everything under a mandate and its descendants, in order (JSON lines).
    Query {
        /// The authority's data directory.
        #[arg(long, default_value = "mandate-data")]
        data_dir: PathBuf,
        /// The authority's PostgreSQL database (`postgres://…`), when it
        /// does not use the embedded file; keys and checkpoint are still read
        /// from `--data-dir`.
        #[arg(long)]
        database: Option<String>,
        /// The mandate.
        #[arg(long, required_unless_present = "decision")]
        mandate: Option<String>,
        /// Only the record that ended it and every decision attempted afterwards.
        #[arg(long)]
        after_end: bool,
        /// Instead: whether the decision recorded at `SEQ` (or item `ITEM` of
        /// the batch at `SEQ`: `SEQ.ITEM`) fell inside a valid mandate.
        #[arg(long, conflicts_with_all = ["mandate", "after_end"])]
        decision: Option<String>,
    },
    /// Every record, as JSON lines.
    Export {
        /// The authority's data directory.
        #[arg(long, default_value = "mandate-data")]
        data_dir: PathBuf,
        /// The authority's PostgreSQL database (`postgres://…`), when it
        /// does not use the embedded file; keys and checkpoint are still read
        /// from `--data-dir`.
        #[arg(long)]
        database: Option<String>,
    },
}

/// The log: the data directory's file, or the PostgreSQL database.
fn open(
    data_dir: &std::path::Path,
    database: Option<&str>,
) -> Result<mandate_store::sql::Connection, CliError> {
    match database {
        None => mandate_store::open_read_only(data_dir).map_err(store_err),
        Some(url) => {
            let u = mandate_authority::config::DatabaseUrl::parse(url)
                .map_err(|e| CliError::input("invalid_argument", format!("--database: {e}")))?;
            mandate_store::connect_postgres(u.expose()).map_err(|e| CliError::Io {
                path: u.redacted(),
                message: e.to_string(),
            })
        }
    }
}

fn store_err(e: mandate_store::StoreError) -> CliError {
    CliError::Io {
        path: "audit".into(),
        message: e.to_string(),
    }
}

fn print_lines(records: &[audit::AuditRecord]) {
    for r in records {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    }
}

/// Runs the command.
pub fn run(c: Command, out: Output) -> Result<u8, CliError> {
    match c {
        Command::Verify {
            data_dir,
            database,
            against,
        } => {
            let conn = open(&data_dir, database.as_deref())?;
            let jwk: PrivateJwk =
                io::read_json(&authority_key_path(&data_dir).display().to_string())?;
            let key = SigningKey::from_private_jwk(&jwk)
                .and_then(|k| k.verifying_key())
                .map_err(|e| CliError::input("invalid_key", e.to_string()))?;
            let mut report = audit::verify(&conn, &mandate_store::checkpoint_path(&data_dir), &key)
                .map_err(store_err)?;
            if let Some(path) = against {
                let kept = std::fs::read_to_string(&path).map_err(|e| CliError::Io {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                if let Some(problem) =
                    audit::verify_against(&conn, &kept, &key).map_err(store_err)?
                    && report.first_problem.is_none()
                {
                    report.first_problem = Some((report.records, problem));
                    report.intact = false;
                }
            }
            match out {
                Output::Json => print_json(&serde_json::to_value(&report).unwrap_or_default()),
                Output::Text => match &report.first_problem {
                    None => println!(
                        "INTACT  {} records, head {}, checkpoint at {}",
                        report.records,
                        report.head_hash,
                        report.checkpoint_seq.unwrap_or(0)
                    ),
                    Some((seq, what)) => println!("BROKEN  record {seq}: {what}"),
                },
            }
            Ok(if report.intact { 0 } else { 2 })
        }
        Command::Query {
            data_dir,
            database,
            mandate,
            after_end,
            decision,
        } => {
            let reference = match decision {
                Some(r) => {
                    let parsed = audit::parse_reference(&r).map_err(|e| {
                        CliError::input("invalid_argument", format!("--decision: {e}"))
                    })?;
                    Some((r, parsed))
                }
                None => None,
            };
            let conn = open(&data_dir, database.as_deref())?;
            if let Some((reference, (seq, item))) = reference {
                let Some((d, invalid)) =
                    audit::decision_validity(&conn, seq, item).map_err(store_err)?
                else {
                    return Err(CliError::input(
                        "not_found",
                        format!("--decision: record {reference} is not a decision"),
                    ));
                };
                match out {
                    Output::Json => print_json(
                        &serde_json::json!({"decision": d, "inside_valid_mandate": invalid.is_none(), "invalidated_by": invalid}),
                    ),
                    Output::Text => match &invalid {
                        None => println!(
                            "INSIDE  decision {reference} ({}) fell inside a valid mandate",
                            d.body
                                .get("decision")
                                .and_then(|v| v.as_str())
                                .unwrap_or("?")
                        ),
                        Some(r) => println!(
                            "AFTER END  decision {reference} came after record {} ({} of {})",
                            r.seq,
                            r.kind,
                            r.mandate_id.as_deref().unwrap_or("?")
                        ),
                    },
                }
                return Ok(0);
            }
            let mandate = mandate.unwrap_or_default();
            if after_end {
                let (ended, after) = audit::after_end(&conn, &mandate).map_err(store_err)?;
                match out {
                    Output::Json => {
                        print_json(&serde_json::json!({"ended_by": ended, "after_end": after}))
                    }
                    Output::Text => {
                        match &ended {
                            Some(e) => {
                                println!("ENDED   record {} ({}): {}", e.seq, e.kind, e.body)
                            }
                            None => println!("NOT ENDED"),
                        }
                        print_lines(&after);
                    }
                }
            } else {
                print_lines(&audit::records_for_tree(&conn, &mandate).map_err(store_err)?);
            }
            Ok(0)
        }
        Command::Export { data_dir, database } => {
            let conn = open(&data_dir, database.as_deref())?;
            print_lines(&audit::all(&conn).map_err(store_err)?);
            Ok(0)
        }
    }
}
