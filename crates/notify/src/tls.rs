//! TLS of `https://` receivers: rustls with the ring provider, trusting the
//! system's root certificates and, when a receiver names one, its own CA
//! file (a private CA).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// The system's root certificates, read once per process; a certificate
/// that cannot be read or used is logged and skipped.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "cannot read a system root certificate; skipped");
        }
        if found.certs.is_empty() {
            tracing::warn!(
                "no system root certificates found: https receivers are trusted only through their ca_file"
            );
        }
        found.certs
    })
}

/// The certificates of a PEM file (one or more `CERTIFICATE` blocks; other
/// blocks are ignored). The error says what is wrong, naming the path.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The client configuration of one receiver: ring, TLS 1.2 and 1.3, the
/// system's roots (for `https://` URLs) plus the certificates of `ca_file`,
/// no client certificate, HTTP/1.1 (the only protocol the client speaks).
/// An error is about `ca_file` and names its path.
pub(crate) fn client_config(
    https: bool,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    if https {
        let (_, skipped) = roots.add_parsable_certificates(system_roots().iter().cloned());
        if skipped > 0 {
            tracing::debug!(
                skipped,
                "system root certificates rustls cannot use; skipped"
            );
        }
    }
    if let Some(path) = ca_file {
        for (i, cert) in read_ca_file(path)?.into_iter().enumerate() {
            roots.add(cert).map_err(|e| {
                format!(
                    "certificate {} of {} is not a usable CA certificate: {e}",
                    i + 1,
                    path.display()
                )
            })?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS configuration: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(true, Some(&missing)).unwrap_err();
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(true, Some(&empty)).unwrap_err();
        assert!(
            e.contains("no PEM certificate") && e.contains("empty.pem"),
            "{e}"
        );

        // A certificate block whose body is not a certificate.
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = client_config(true, Some(&bad)).unwrap_err();
        assert!(e.contains("bad.pem"), "{e}");
    }

    #[test]
    fn plain_http_needs_no_roots() {
        let c = client_config(false, None).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_client_with_this_configuration_needs_no_process_wide_provider() {
        // reqwest is built with `rustls-no-provider`: a client without a
        // ready configuration panics unless a default provider is installed.
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        #[allow(clippy::disallowed_methods)]
        let built = reqwest::Client::builder()
            .tls_backend_preconfigured(client_config(true, None).unwrap())
            .build();
        assert!(built.is_ok());
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }
}
