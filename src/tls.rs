//! HTTPS: the rustls server configuration built from `--tls-cert` and `--tls-key` (PEM),
//! with HTTP/2 and HTTP/1.1 offered by ALPN, and a certificate that can be swapped while
//! serving (SIGHUP, or the files changing): handshakes after the swap present the new
//! certificate, connections already open keep theirs.

use std::{fmt, path::PathBuf, sync::Arc};

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_rustls::TlsAcceptor;

use crate::reload::{Reload, ReloadOutcome, WatchedFiles};

/// The TLS side of the listener: an acceptor whose certificate can be reloaded.
pub struct Tls {
    acceptor: TlsAcceptor,
    certificate: Arc<Certificate>,
    files: WatchedFiles,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Hands every handshake the certificate in force.
#[derive(Debug)]
struct Certificate(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl Tls {
    /// Loads the certificate chain at `cert` and the private key at `key` (PEM) and builds
    /// the server configuration (TLS 1.2 and 1.3 with rustls' safe defaults, `ring`).
    ///
    /// # Errors
    /// A sentence naming the file that cannot be read or used, or saying that the key
    /// does not belong to the certificate.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = WatchedFiles::new(vec![cert, key]);
        let contents = files
            .read_all()
            .map_err(|e| format!("cannot read TLS files: {e}"))?;
        let certified = certified_key(&files, &contents, &provider)?;
        let certificate = Arc::new(Certificate(ArcSwap::from_pointee(certified)));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
            files,
            provider,
        })
    }

    /// The acceptor for new connections (a clone of a handle).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

impl Reload for Tls {
    fn what(&self) -> &'static str {
        "tls"
    }

    fn reload(&self, force: bool) -> ReloadOutcome {
        let Some(contents) = self.files.read(force) else {
            return ReloadOutcome::Unchanged;
        };
        let loaded = contents
            .map_err(|e| format!("cannot read TLS files: {e}"))
            .and_then(|c| certified_key(&self.files, &c, &self.provider));
        match loaded {
            Ok(certified) => {
                self.certificate.0.store(Arc::new(certified));
                ReloadOutcome::Reloaded(format!(
                    "TLS certificate from {}",
                    self.files.paths()[0].display()
                ))
            }
            Err(why) => ReloadOutcome::Failed(why),
        }
    }
}

fn certified_key(
    files: &WatchedFiles,
    contents: &[Vec<u8>],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let (cert_path, key_path) = (files.paths()[0].display(), files.paths()[1].display());
    let chain = CertificateDer::pem_slice_iter(&contents[0])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert_path}: not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{cert_path}: no CERTIFICATE block found"));
    }
    let key = PrivateKeyDer::from_pem_slice(&contents[1])
        .map_err(|e| format!("{key_path}: not a PEM private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{key_path} cannot be used with {cert_path}: {e}"))
}
