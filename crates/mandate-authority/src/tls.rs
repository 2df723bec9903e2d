//! TLS for the servers (`mandate serve`, `mandate gateway`, `mandate mcp`):
//! rustls with a certificate chain and a private key from PEM files, read
//! again when either file changes (checked at most every
//! [`RELOAD_CHECK`]), so a renewed certificate is served without a restart.
//! A renewal that cannot be read is logged and the last good certificate
//! stays in use. Only TLS 1.2 and 1.3 with rustls's safe defaults; ALPN
//! `http/1.1`.
//!
//! Plain HTTP is for loopback: [`check_plain`] refuses to serve it on any
//! other address unless the operator says so (`allow_plain_http`, for a
//! service behind a TLS-terminating proxy).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the files are looked at for a change (at a handshake).
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reads the pair into a key rustls can sign with.
///
/// # Errors
/// A file that cannot be read, holds no certificate or no key, or a key
/// that does not fit the certificate.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("tls cert {}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls cert {}: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls cert {}: no certificate in it",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("tls key {}: {e}", files.key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls key {}: {e}", files.key.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        format!(
            "tls key {}: does not fit the certificate: {e}",
            files.key.display()
        )
    })?;
    Ok(Arc::new(certified))
}

struct Current {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

/// Serves the current certificate, reloading it when its files change.
pub struct Reloading {
    files: TlsFiles,
    every: Duration,
    current: Mutex<Current>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Reloading {
    /// Loads the pair now (an error stops the start).
    ///
    /// # Errors
    /// As [`load`].
    pub fn new(files: TlsFiles, every: Duration) -> Result<Self, String> {
        let key = load(&files)?;
        let stamps = (modified(&files.cert), modified(&files.key));
        Ok(Self {
            files,
            every,
            current: Mutex::new(Current {
                key,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The key to present now (reloaded first when the files changed).
    #[must_use]
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut c = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.checked.elapsed() >= self.every {
            c.checked = Instant::now();
            let stamps = (modified(&self.files.cert), modified(&self.files.key));
            if stamps != c.stamps {
                match load(&self.files) {
                    Ok(k) => {
                        tracing::info!(cert = %self.files.cert.display(), "tls certificate reloaded");
                        c.key = k;
                        c.stamps = stamps;
                    }
                    Err(e) => {
                        // Half-written during a renewal, say: keep serving
                        // the last good pair and look again next time.
                        tracing::warn!(error = %e, "tls certificate not reloaded; the previous one stays in use");
                    }
                }
            }
        }
        Arc::clone(&c.key)
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS acceptor over the files.
///
/// # Errors
/// As [`load`], or a rustls configuration error.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    acceptor_with(files, ClientCertificates::Off)
}

/// Whether a TLS server asks its clients for a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientCertificates {
    /// No client certificates are asked for.
    #[default]
    Off,
    /// Self-signed certificate mutual TLS (RFC 8705 §2.2): every client is
    /// asked for a certificate and may decline (a client with DPoP proofs
    /// needs none). A certificate is not checked against any CA: what
    /// counts is that the handshake's signature verifies with its key,
    /// which proves the client holds that key, and its thumbprint, which a
    /// certificate-bound mandate (`agent.cnf.x5t#S256`) must name.
    SelfSigned,
    /// PKI mutual TLS (RFC 8705 §2.1): every client is asked for a
    /// certificate and may decline; one that does not chain to a CA in
    /// this file (PEM), or is outside its validity period, ends the
    /// handshake (rustls's WebPKI verifier).
    Pki(PathBuf),
}

/// Accepts any client certificate whose key signed the handshake (the
/// signature checks are rustls's own, with the provider's algorithms):
/// possession of the key is what a certificate-bound mandate needs; the
/// thumbprint is compared with the mandate's later, per request.
#[derive(Debug)]
struct SelfSignedClients {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for SelfSignedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // Not a chain to a CA (RFC 8705 §2.2). A certificate no key can be
        // read from fails the handshake signature check that follows
        // (rustls parses it there), so nothing unproved gets through.
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS acceptor over the files, asking clients for certificates as
/// `clients` says (the connection's certificate then reaches handlers as
/// [`mandate_core::pop::ClientCertificate`]).
///
/// # Errors
/// As [`load`], or a rustls configuration error.
pub fn acceptor_with(
    files: &TlsFiles,
    clients: ClientCertificates,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let resolver = Reloading::new(files.clone(), RELOAD_CHECK)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match clients {
        ClientCertificates::Off => builder.with_no_client_auth(),
        ClientCertificates::SelfSigned => {
            builder.with_client_cert_verifier(Arc::new(SelfSignedClients { algorithms }))
        }
        ClientCertificates::Pki(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&ca)
                .map_err(|e| format!("client ca {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("client ca {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("client ca {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("client ca {}: no certificate in it", ca.display()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Extra roots for the authority's own outbound calls (pushed SETs,
/// identity providers' JWKS and token endpoints), besides the public ones.
static OUTBOUND: std::sync::RwLock<Option<ureq::tls::RootCerts>> = std::sync::RwLock::new(None);

/// Trusts the CA certificates in `ca` (PEM) for the authority's outbound
/// calls besides the public roots (Mozilla's): receivers and identity
/// providers on a private PKI. Process-wide; `None` goes back to the
/// public roots alone.
///
/// # Errors
/// A file that cannot be read or holds no certificate.
pub fn set_outbound_ca(ca: Option<&Path>) -> Result<(), String> {
    let roots = match ca {
        None => None,
        Some(path) => Some(roots_with(path)?),
    };
    if let Ok(mut o) = OUTBOUND.write() {
        *o = roots;
    }
    Ok(())
}

/// The public roots and the certificates in the PEM file at `ca`.
///
/// # Errors
/// A file that cannot be read or holds no certificate.
pub fn roots_with(ca: &Path) -> Result<ureq::tls::RootCerts, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("outbound_ca_file {}: {e}", ca.display()))?;
    let mut certs: Vec<ureq::tls::Certificate<'static>> = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.map_err(|e| format!("outbound_ca_file {}: {e}", ca.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "outbound_ca_file {}: no certificate in it",
            ca.display()
        ));
    }
    certs.extend(
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()),
    );
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// The HTTP agent of an outbound call: a global timeout, statuses as
/// answers (not errors), the public roots and any [`set_outbound_ca`].
#[must_use]
pub fn agent(timeout: Duration) -> ureq::Agent {
    let mut b = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false);
    if let Ok(o) = OUTBOUND.read()
        && let Some(r) = o.as_ref()
    {
        b = b.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(r.clone())
                .build(),
        );
    }
    b.build().into()
}

/// Refuses plain HTTP on an address that is not loopback, unless allowed.
///
/// # Errors
/// What to set instead.
pub fn check_plain(listen: &std::net::SocketAddr, allow_plain_http: bool) -> Result<(), String> {
    if listen.ip().is_loopback() || allow_plain_http {
        return Ok(());
    }
    Err(format!(
        "listen {listen}: plain HTTP is served on loopback only; give a certificate and key \
         (tls_cert_file, tls_key_file) or, behind a proxy that terminates TLS, set \
         allow_plain_http = true"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, c.cert.pem()).unwrap();
        std::fs::write(&files.key, c.signing_key.serialize_pem()).unwrap();
        files
    }

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mandate-tls-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_renewal_is_not() {
        let dir = temp();
        let files = write_pair(&dir, "one.test");
        let r = Reloading::new(files.clone(), Duration::ZERO).unwrap();
        let first = r.current().cert[0].clone();
        // A broken renewal (the key half-written): the old pair stays.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
        assert_eq!(r.current().cert[0], first);
        // A good one: served from the next handshake on.
        std::thread::sleep(Duration::from_millis(20));
        let _ = write_pair(&dir, "two.test");
        assert_ne!(r.current().cert[0], first);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_that_does_not_fit_the_certificate_is_refused_at_start() {
        let dir = temp();
        let files = write_pair(&dir, "one.test");
        let other = rcgen::generate_simple_self_signed(vec!["x.test".to_owned()]).unwrap();
        std::fs::write(&files.key, other.signing_key.serialize_pem()).unwrap();
        let e = load(&files).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn plain_http_is_for_loopback_unless_allowed() {
        assert!(check_plain(&"127.0.0.1:8080".parse().unwrap(), false).is_ok());
        assert!(check_plain(&"[::1]:8080".parse().unwrap(), false).is_ok());
        let e = check_plain(&"0.0.0.0:8080".parse().unwrap(), false).unwrap_err();
        assert!(e.contains("allow_plain_http"), "{e}");
        assert!(check_plain(&"0.0.0.0:8080".parse().unwrap(), true).is_ok());
    }
}
