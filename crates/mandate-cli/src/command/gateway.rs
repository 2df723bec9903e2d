//! `mandate gateway --config gateway.toml`

use std::path::PathBuf;

use mandate_enforce::gateway::{Gateway, GatewayConfig};

use crate::{CliError, Output};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Log format on stderr: `text` or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = crate::command::LogFormat::Text)]
    log_format: crate::command::LogFormat,
    /// The gateway's configuration (TOML).
    #[arg(long)]
    config: PathBuf,
}

/// Runs the command.
pub fn run(a: Args, _out: Output) -> Result<u8, CliError> {
    crate::command::init_logging(a.log_format);
    let config = GatewayConfig::from_file(&a.config)
        .map_err(|e| CliError::input("invalid_config", e.to_string()))?;
    let listen = config.listen.clone();
    let tls_files = (config.tls_cert_file.clone(), config.tls_key_file.clone());
    let clients = crate::command::client_certificates(
        config.client_certificates,
        config.client_ca_file.as_deref(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Io {
            path: "runtime".into(),
            message: e.to_string(),
        })?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| CliError::Io {
                path: format!("listen {listen}"),
                message: e.to_string(),
            })?;
        let gw = tokio::task::spawn_blocking(move || Gateway::start(config))
            .await
            .map_err(|e| CliError::Io {
                path: "gateway".into(),
                message: e.to_string(),
            })?
            .map_err(|e| CliError::Io {
                path: "authority".into(),
                message: e,
            })?;
        let tls =
            crate::command::tls_acceptor(tls_files.0.as_deref(), tls_files.1.as_deref(), clients)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!("mandate gateway listening on {scheme}://{listen}");
        // The authority's server loop: header-read timeout, a connection
        // limit and a shutdown deadline. No whole-request limit: proxied
        // requests take as long as their upstream does.
        let limits = mandate_authority::server::Limits {
            request_timeout: None,
            ..mandate_authority::server::Limits::default()
        };
        mandate_authority::server::run_with(
            listener,
            mandate_authority::http::observed(gw.router()),
            limits,
            tls,
            crate::command::serve::shutdown_signal(),
        )
        .await
        .map_err(|e| CliError::Io {
            path: "serve".into(),
            message: e.to_string(),
        })?;
        // SIGTERM or SIGINT: every decision made is shipped, or kept in the
        // spool for the next run, before the process ends.
        let _ = tokio::task::spawn_blocking(move || gw.stop()).await;
        eprintln!("mandate gateway stopped; decisions shipped or spooled");
        Ok(0)
    })
}
