//! HTTPS: the rustls server configuration built from `--tls-cert`,
//! `--tls-key` and, for mutual TLS, `--tls-client-ca`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::Config;

/// The rustls provider the service uses: ring, which the build already has
/// (async-nats brings it). rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange; aws-lc-rs, which has it, needs a C toolchain
/// build of its own.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Installs ring as the process's default rustls provider, once; a provider
/// installed before (by this or another library) stays.
pub fn install_default_provider() {
    let _ = provider().install_default();
}

/// The server's TLS configuration, `None` when it serves plain HTTP. Refuses
/// (with a message naming the flags) a certificate without its key or the
/// other way round, a client CA without both, and files that do not hold
/// what they should.
pub fn server_config(config: &Config) -> Result<Option<Arc<ServerConfig>>, String> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if config.tls_client_ca.is_some() {
                return Err("--tls-client-ca requires client certificates on HTTPS: it needs --tls-cert and --tls-key"
                    .to_string());
            }
            return Ok(None);
        }
        (Some(_), None) => return Err("--tls-cert needs --tls-key (the certificate's private key)".to_string()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert (the certificate it belongs to)".to_string()),
    };
    install_default_provider();
    let chain = certificates(cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: no PEM private key: {e}", key.display()))?;
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &config.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "--tls-client-ca")? {
                roots.add(cert).map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server =
        builder.with_single_cert(chain, key).map_err(|e| format!("--tls-cert / --tls-key {}: {e}", cert.display()))?;
    // HTTP/1.1 only: a client that offers only other protocols is refused
    // in the handshake.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(server)))
}

/// The PEM certificates in `path`, at least one.
fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: no PEM certificate in the file", path.display()));
    }
    Ok(certs)
}
