//! `mandate serve [--config FILE] [--listen ADDR] [--data-dir DIR] [--database postgres://…] [--issuer URL] [--tls-cert PEM --tls-key PEM]`

use std::path::PathBuf;

use mandate_authority::{AppState, Config};

use crate::{CliError, Output};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Log format on stderr: `text` or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = crate::command::LogFormat::Text)]
    log_format: crate::command::LogFormat,
    /// A TOML configuration file (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (default ./mandate-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL database (`postgres://USER@HOST:PORT/DB`) instead of the
    /// embedded SQLite file; several `serve` processes may share one.
    #[arg(long)]
    database: Option<String>,
    /// The public URL of this authority, used as `iss` of mandates.
    #[arg(long)]
    issuer: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM; read again when it changes).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy).
    #[arg(long)]
    allow_plain_http: bool,
    /// Trust this CA (PEM) for outbound calls (push receivers, identity
    /// providers) besides the public roots.
    #[arg(long)]
    outbound_ca: Option<PathBuf>,
}

fn config(a: &Args) -> Result<Config, CliError> {
    let mut c = match &a.config {
        Some(p) => {
            Config::from_file(p).map_err(|e| CliError::input("invalid_config", e.to_string()))?
        }
        None => Config::default(),
    };
    if let Some(l) = &a.listen {
        c.listen = l.clone();
    }
    if let Some(d) = &a.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(d) = &a.database {
        c.database = Some(
            mandate_authority::config::DatabaseUrl::parse(d)
                .map_err(|e| CliError::input("invalid_config", format!("database: {e}")))?,
        );
    }
    if let Some(i) = &a.issuer {
        c.issuer = Some(i.clone());
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        c.tls_cert_file = Some(cert.clone());
        c.tls_key_file = Some(key.clone());
    }
    if a.allow_plain_http {
        c.allow_plain_http = true;
    }
    if let Some(ca) = &a.outbound_ca {
        c.outbound_ca_file = Some(ca.clone());
    }
    c.validate()
        .map_err(|e| CliError::input("invalid_config", e.to_string()))?;
    Ok(c)
}

/// Runs the command: validates the configuration before binding, then
/// serves until SIGINT or SIGTERM, finishing every acknowledged write.
pub fn run(a: Args, _out: Output) -> Result<u8, CliError> {
    crate::command::init_logging(a.log_format);
    let config = config(&a)?;
    config
        .validate()
        .map_err(|e| CliError::input("invalid_config", e.to_string()))?;
    let addr = config
        .listen_addr()
        .map_err(|e| CliError::input("invalid_config", e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Io {
            path: "runtime".into(),
            message: e.to_string(),
        })?;
    rt.block_on(async move {
        let mut config = config;
        let data_dir = match &config.database {
            Some(d) => format!("{}, database {}", config.data_dir.display(), d.redacted()),
            None => config.data_dir.display().to_string(),
        };
        // Bound now (so the issuer can name the port actually bound), but
        // listening only once the data directory is open: a client that
        // connects as soon as the port answers finds the keys, the local
        // issuer's included, in place and in force.
        let listen_err = |e: std::io::Error| CliError::Io {
            path: format!("listen {addr}"),
            message: e.to_string(),
        };
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(listen_err)?;
        #[cfg(unix)]
        socket.set_reuseaddr(true).map_err(listen_err)?;
        socket.bind(addr).map_err(listen_err)?;
        let local = socket
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // Without `issuer`, the metadata and every mandate name the address
        // actually bound (with `--listen 127.0.0.1:0`, not port 0). Set
        // `issuer` to the public https URL in any real deployment: it must
        // stay the same across restarts for mandates to keep verifying.
        let scheme = if config.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        if config.issuer.is_none() {
            config.issuer = Some(format!("{scheme}://{local}"));
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
            // A certificate that cannot be read stops the start, not the first client.
            mandate_authority::tls::load(&mandate_authority::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .map_err(|e| CliError::input("invalid_config", e))?;
        }
        let state = AppState::open(config).map_err(|e| CliError::input("invalid_config", e))?;
        let listener = socket.listen(1024).map_err(listen_err)?;
        eprintln!("mandate authority listening on {scheme}://{local} (data in {data_dir})");
        mandate_authority::serve(state, listener, shutdown_signal())
            .await
            .map_err(|e| CliError::Io {
                path: "serve".into(),
                message: e.to_string(),
            })?;
        eprintln!("mandate authority stopped; every acknowledged change is on disk");
        Ok(0)
    })
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
