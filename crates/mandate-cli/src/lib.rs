//! The `mandate` command-line tool.
//!
//! Exit codes: 0 ok/allow, 1 failure, 2 deny or invalid signature, 3 invalid
//! input. `--output json` prints machine-readable results on stdout and
//! errors as JSON on stderr.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod command;
mod error;
mod io;

pub use error::CliError;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Readable text.
    #[default]
    Text,
    /// JSON.
    Json,
}

/// Execution Mandates: issue, inspect, attenuate, verify and evaluate.
#[derive(Debug, Parser)]
#[command(name = "mandate", version, about)]
struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generates a signing key: private JWK written with mode 0600, public JWK on stdout.
    Keygen(command::keygen::Args),
    /// Prints the public JWKS of one or more keys.
    Jwks(command::jwks::Args),
    /// Signs a root mandate (offline and development use).
    Issue(command::issue::Args),
    /// Shows a mandate and its chain, without verifying anything.
    Inspect(command::inspect::Args),
    /// Verifies a mandate chain: signatures, links and attenuation.
    Verify(command::verify::Args),
    /// Derives an attenuated child mandate offline, signed with the holder key.
    Attenuate(command::attenuate::Args),
    /// Decides one proposed action (an AuthZEN evaluation request).
    Evaluate(command::evaluate::Args),
    /// Makes a DPoP proof for one request with the holder key (proof of possession).
    Dpop(command::dpop::Args),
    /// Runs the authority service (embedded SQLite; keys created on first start).
    Serve(command::serve::Args),
    /// Runs the gateway: a reverse proxy (and nginx `auth_request` endpoint) deciding locally.
    Gateway(command::gateway::Args),
    /// Runs the MCP proxy: decides every tool call (Streamable HTTP, or stdio around a server command).
    Mcp(command::mcp::Args),
    /// Mints a short-lived caller token from the local identity issuer.
    Token(command::token::Args),
    /// Verifies, queries or exports the audit log.
    #[command(subcommand)]
    Audit(command::audit::Command),
    /// Lists, rotates or retires the authority's signing keys.
    #[command(subcommand)]
    Keys(command::keys::Command),
}

/// Runs the tool with these arguments and returns its exit code.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 3 } else { 0 };
            // Help and version go to stdout, usage errors to stderr.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let out = cli.output;
    let result = match cli.command {
        Command::Keygen(a) => command::keygen::run(a, out),
        Command::Jwks(a) => command::jwks::run(a, out),
        Command::Issue(a) => command::issue::run(a, out),
        Command::Inspect(a) => command::inspect::run(a, out),
        Command::Verify(a) => command::verify::run(a, out),
        Command::Attenuate(a) => command::attenuate::run(a, out),
        Command::Evaluate(a) => command::evaluate::run(a, out),
        Command::Dpop(a) => command::dpop::run(a, out),
        Command::Serve(a) => command::serve::run(a, out),
        Command::Token(a) => command::token::run(a, out),
        Command::Gateway(a) => command::gateway::run(a, out),
        Command::Mcp(a) => command::mcp::run(a, out),
        Command::Audit(c) => command::audit::run(c, out),
        Command::Keys(c) => command::keys::run(c, out),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            e.report(out);
            ExitCode::from(e.exit_code())
        }
    }
}
