//! `mandate mcp --config mcp.toml [-- SERVER COMMAND...]`

use std::path::PathBuf;
use std::sync::Arc;

use mandate_enforce::mcp::http::HttpProxy;
use mandate_enforce::mcp::stdio::{self, Session};
use mandate_enforce::mcp::{McpConfig, Proxy};

use crate::{CliError, Output};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Log format on stderr: `text` or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = crate::command::LogFormat::Text)]
    log_format: crate::command::LogFormat,
    /// The proxy's configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// A local MCP server to wrap over stdio (after `--`); without it the
    /// proxy serves Streamable HTTP on `listen`.
    #[arg(last = true)]
    server: Vec<String>,
}

fn io(path: &str, e: impl ToString) -> CliError {
    CliError::Io {
        path: path.into(),
        message: e.to_string(),
    }
}

/// Async workers: `MANDATE_MCP_WORKERS`, else 1. Relaying a message is
/// short work between two waits; one worker saves the wake-ups of one
/// worker handing a connection's readiness to another, which cost more
/// than the work on a small machine (scripts/load-mcp.sh).
fn workers() -> usize {
    std::env::var("MANDATE_MCP_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=512).contains(n))
        .unwrap_or(1)
}

/// Runs the command.
pub fn run(a: Args, _out: Output) -> Result<u8, CliError> {
    crate::command::init_logging(a.log_format);
    let stdio_mode = !a.server.is_empty();
    let config = McpConfig::from_file(&a.config, stdio_mode)
        .map_err(|e| CliError::input("invalid_config", e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()
        .map_err(|e| io("runtime", e))?;
    rt.block_on(async move {
        let listener = match &config.listen {
            Some(l) => Some(
                tokio::net::TcpListener::bind(l)
                    .await
                    .map_err(|e| io(&format!("listen {l}"), e))?,
            ),
            None => None,
        };
        let proxy: Arc<Proxy> = tokio::task::spawn_blocking(move || Proxy::start(config))
            .await
            .map_err(|e| io("mcp", e))?
            .map_err(|e| io("authority", e))?;
        let http =
            HttpProxy::new(Arc::clone(&proxy)).map_err(|e| CliError::input("invalid_config", e))?;
        let tls = crate::command::tls_acceptor(
            proxy.config.tls_cert_file.as_deref(),
            proxy.config.tls_key_file.as_deref(),
            crate::command::client_certificates(
                proxy.config.client_certificates,
                proxy.config.client_ca_file.as_deref(),
            ),
        )?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let limits = mandate_authority::server::Limits {
            request_timeout: None,
            ..mandate_authority::server::Limits::default()
        };
        let code = if stdio_mode {
            let session =
                Session::load(&proxy).map_err(|e| CliError::input("invalid_config", e))?;
            // stdout is the protocol's: everything said to people goes to stderr.
            let server = listener.map(|l| {
                tokio::spawn(mandate_authority::server::run_with(
                    l,
                    mandate_authority::http::observed(proxy.point.router()),
                    limits,
                    tls.clone(),
                    std::future::pending::<()>(),
                ))
            });
            eprintln!("mandate mcp: wrapping `{}` over stdio", a.server.join(" "));
            let code = stdio::run(Arc::clone(&proxy), &a.server, session)
                .await
                .map_err(|e| io("server", e))?;
            if let Some(s) = server {
                s.abort();
            }
            u8::try_from(code).unwrap_or(1)
        } else {
            let Some(listener) = listener else {
                return Err(CliError::input("invalid_config", "listen: missing"));
            };
            let addr = listener.local_addr().map_err(|e| io("listen", e))?;
            for u in &proxy.upstreams {
                eprintln!(
                    "mandate mcp listening on {scheme}://{addr}{} -> {}",
                    u.path,
                    u.config.url.as_deref().unwrap_or_default()
                );
            }
            mandate_authority::server::run_with(
                listener,
                mandate_authority::http::observed(http.router()),
                limits,
                tls,
                crate::command::serve::shutdown_signal(),
            )
            .await
            .map_err(|e| io("serve", e))?;
            0
        };
        // Every decision made is shipped, or kept in the spool for the next run.
        let p = Arc::clone(&proxy);
        let _ = tokio::task::spawn_blocking(move || p.point.stop()).await;
        eprintln!("mandate mcp stopped; decisions shipped or spooled");
        Ok(code)
    })
}
