//! `mandate attenuate --parent JWS --holder-key KEY.jwk --claims CHILD.json`

use mandate_core::chain::{ChildSpec, derive_child};
use mandate_core::id::MandateId;
use rand_core::RngCore as _;

use crate::command::print_json;
use crate::{CliError, Output, io};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The parent mandate chain: compact, `@FILE`, or `-` for stdin.
    #[arg(long)]
    parent: String,
    /// The holder's private JWK (the key the parent's `agent.cnf.jwk` binds).
    #[arg(long)]
    holder_key: String,
    /// What the holder chooses for the child: `agent`, `authorization_details`,
    /// extra `conditions`, `lifecycle`, `delegation` (and optionally `mandate_id`, `token_binding`).
    #[arg(long)]
    claims: String,
    /// The child holder's public JWK, bound as the child's `agent.cnf.jwk`
    /// (the key the sub-agent proves possession with).
    #[arg(long)]
    child_holder: Option<String>,
    /// The child holder's TLS client certificate (PEM), bound as the
    /// child's `agent.cnf.x5t#S256`: the sub-agent then uses the child only
    /// over mutual TLS with that certificate (RFC 8705). Needs
    /// `--child-holder` (or the claims' `agent.cnf.jwk`).
    #[arg(long)]
    child_holder_cert: Option<String>,
    /// Issue time (RFC 3339; default now).
    #[arg(long)]
    at: Option<String>,
}

/// Runs the command.
pub fn run(a: Args, out: Output) -> Result<u8, CliError> {
    let parent = io::mandate_arg(&a.parent)?;
    let key = io::signing_key(&a.holder_key)?;
    let mut spec: ChildSpec = io::read_json(&a.claims)?;
    if let Some(path) = &a.child_holder {
        let jwk: mandate_core::keys::PublicJwk = io::read_json(path)?;
        mandate_core::keys::VerifyingKey::from_jwk(&jwk)
            .map_err(|e| CliError::input("invalid_input", format!("{path}: {e}")))?;
        spec.agent.cnf = Some(mandate_core::model::Confirmation::key(jwk));
    }
    if let Some(path) = &a.child_holder_cert {
        io::bind_certificate(
            spec.agent.cnf.as_mut(),
            path,
            "--child-holder-cert",
            "--child-holder",
        )?;
    }
    let now = io::time_arg(a.at.as_deref())?;
    let id = match &spec.mandate_id {
        Some(id) => id.clone(),
        None => {
            let mut bytes = [0u8; 8];
            rand_core::OsRng.fill_bytes(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            MandateId::new(format!("mnd-{hex}"))
                .map_err(|e| CliError::input("invalid_input", e.to_string()))?
        }
    };
    // A child beyond its parent is a policy refusal (exit 2, like a deny);
    // input that cannot be read is exit 3.
    let chain = derive_child(&parent, &key, &spec, id.clone(), now).map_err(|e| match e {
        mandate_core::chain::IssueError::Attenuation(_) => CliError::Invalid {
            codes: e.codes(),
            message: format!("refused: {e}"),
        },
        _ => CliError::Input {
            codes: e.codes(),
            message: format!("refused: {e}"),
        },
    })?;
    match out {
        Output::Text => println!("{chain}"),
        Output::Json => print_json(&serde_json::json!({"mandate_id": id, "mandate": chain})),
    }
    Ok(0)
}
