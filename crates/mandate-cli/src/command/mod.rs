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
pub mod keys;
pub mod mcp;
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

/// How the long-running commands (`serve`, `gateway`) log to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (structured: level, target, fields, spans),
    /// for log pipelines.
    Json,
}

/// A gateway's or MCP proxy's settings as the TLS layer's (validated
/// before: `pki` comes with its CA file).
pub(crate) fn client_certificates(
    c: mandate_enforce::gateway::ClientCertificates,
    ca_file: Option<&std::path::Path>,
) -> mandate_authority::tls::ClientCertificates {
    use mandate_authority::tls::ClientCertificates as Tls;
    use mandate_enforce::gateway::ClientCertificates as Setting;
    match (c, ca_file) {
        (Setting::SelfSigned, _) => Tls::SelfSigned,
        (Setting::Pki, Some(ca)) => Tls::Pki(ca.to_owned()),
        (Setting::Off | Setting::Pki, _) => Tls::Off,
    }
}

/// The TLS acceptor of a server given a certificate and key (none when
/// neither is given), asking clients for certificates as `clients` says; a
/// pair that cannot be read stops the start.
pub(crate) fn tls_acceptor(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    clients: mandate_authority::tls::ClientCertificates,
) -> Result<Option<tokio_rustls::TlsAcceptor>, crate::CliError> {
    match (cert, key) {
        (Some(cert), Some(key)) => mandate_authority::tls::acceptor_with(
            &mandate_authority::tls::TlsFiles {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            clients,
        )
        .map(Some)
        .map_err(|e| crate::CliError::input("invalid_config", e)),
        _ => Ok(None),
    }
}

/// Starts logging at `RUST_LOG` (default `info`) in `format`. Request spans
/// (method, route, request id, status, latency) are at `debug`.
pub(crate) fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
