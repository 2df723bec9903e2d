//! One module per verb.

pub mod attenuate;
pub mod audit;
pub mod dpop;
pub mod evaluate;
pub mod gateway;
pub mod inspect;
pub mod issue;
pub mod jwks;
pub mod keygen;
pub mod serve;
pub mod token;
pub mod verify;

use mandate_core::chain::ChainError;

use crate::CliError;

/// A chain that did not verify: exit 2 with its reason codes.
pub(crate) fn chain_invalid(e: &ChainError) -> CliError {
    CliError::Invalid {
        codes: e.codes(),
        message: format!("{} ({e})", e.codes().join(", ")),
    }
}

/// Prints a JSON value on stdout.
pub(crate) fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
