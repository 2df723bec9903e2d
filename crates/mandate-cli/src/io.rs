//! Reading inputs: files, `@file` and `-` (stdin) for mandates.

use std::io::Read as _;

use mandate_core::json::from_slice_strict;
use serde::de::DeserializeOwned;

use crate::CliError;

/// Largest input file read.
const MAX_INPUT: u64 = 4 << 20;

/// Reads a whole file, bounded.
pub fn read(path: &str) -> Result<Vec<u8>, CliError> {
    let io = |e: std::io::Error| CliError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    file.take(MAX_INPUT + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > MAX_INPUT {
        return Err(CliError::input(
            "too_large",
            format!("{path}: larger than {MAX_INPUT} bytes"),
        ));
    }
    Ok(buf)
}

/// Reads a JSON file strictly (no duplicate members; errors name the path).
pub fn read_json<T: DeserializeOwned>(path: &str) -> Result<T, CliError> {
    let bytes = read(path)?;
    from_slice_strict(&bytes).map_err(|e| {
        let code = if e.duplicate {
            "duplicate_member"
        } else {
            "invalid_input"
        };
        CliError::input(code, format!("{path}: {e}"))
    })
}

/// A mandate argument: the compact string itself, `@FILE`, or `-` for stdin.
pub fn mandate_arg(arg: &str) -> Result<String, CliError> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(MAX_INPUT)
            .read_to_string(&mut s)
            .map_err(|e| CliError::Io {
                path: "stdin".into(),
                message: e.to_string(),
            })?;
        s
    } else if let Some(path) = arg.strip_prefix('@') {
        String::from_utf8(read(path)?)
            .map_err(|_| CliError::input("invalid_input", format!("{path}: not UTF-8")))?
    } else {
        arg.to_owned()
    };
    Ok(text.trim().to_owned())
}

/// Writes a file with mode 0600, refusing to overwrite.
pub fn write_private(path: &str, data: &[u8]) -> Result<(), CliError> {
    use std::io::Write as _;
    let io = |e: std::io::Error| CliError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Parses `--at`, or the current time.
pub fn time_arg(at: Option<&str>) -> Result<mandate_core::timestamp::UnixTime, CliError> {
    use mandate_core::timestamp::UnixTime;
    match at {
        Some(s) => UnixTime::parse_rfc3339(s)
            .map_err(|e| CliError::input("invalid_input", format!("--at: {e}"))),
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            UnixTime::from_secs(secs)
                .map_err(|e| CliError::input("invalid_input", format!("clock: {e}")))
        }
    }
}

/// Reads a signing key from a private JWK file.
pub fn signing_key(path: &str) -> Result<mandate_core::keys::SigningKey, CliError> {
    let jwk: mandate_core::keys::PrivateJwk = read_json(path)?;
    mandate_core::keys::SigningKey::from_private_jwk(&jwk)
        .map_err(|e| CliError::input("invalid_key", format!("{path}: {e}")))
}

/// Reads a JWKS file into a key set.
pub fn key_set(path: &str) -> Result<mandate_core::keys::KeySet, CliError> {
    let jwks: mandate_core::keys::Jwks = read_json(path)?;
    mandate_core::keys::KeySet::from_jwks(&jwks)
        .map_err(|(i, e)| CliError::input("invalid_key", format!("{path}: keys[{i}].{e}")))
}

/// The `x5t#S256` (RFC 8705 §3.1) of the first certificate in a PEM file:
/// base64url of the SHA-256 of its DER.
///
/// # Errors
/// A file that cannot be read or holds no PEM certificate.
pub fn certificate_thumbprint(path: &str) -> Result<String, CliError> {
    use rustls_pki_types::pem::PemObject as _;
    let pem = read(path)?;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| {
            CliError::input("invalid_input", format!("{path}: no PEM certificate in it"))
        })?
        .map_err(|e| CliError::input("invalid_input", format!("{path}: {e}")))?;
    Ok(mandate_core::model::certificate_thumbprint(der.as_ref()))
}

/// Binds the certificate in the PEM file `path` (given as `flag`) to the
/// holder confirmation `cnf` (its `x5t#S256`): a certificate goes with a
/// holder key (`key_flag` or the claims' `agent.cnf.jwk`), never alone.
///
/// # Errors
/// No holder key, or a file that holds no PEM certificate.
pub fn bind_certificate(
    cnf: Option<&mut mandate_core::model::Confirmation>,
    path: &str,
    flag: &str,
    key_flag: &str,
) -> Result<(), CliError> {
    let cnf = cnf.ok_or_else(|| {
        CliError::input(
            "invalid_input",
            format!("{flag}: no holder key to go with it (give {key_flag} or agent.cnf.jwk)"),
        )
    })?;
    cnf.x5t_s256 = Some(certificate_thumbprint(path)?);
    Ok(())
}
