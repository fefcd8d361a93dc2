//! TLS for client listeners: certificates chosen by SNI, reloaded from disk without restart.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// Certificate chain (leaf first).
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A certificate that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    /// The file at fault.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// Picks the certificate whose names match the client's SNI (exact, then `*.` wildcard);
/// the first certificate answers clients without SNI or with an unknown name.
#[derive(Debug)]
struct SniResolver {
    entries: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            let wildcard = sni.split_once('.').map(|(_, rest)| format!("*.{rest}"));
            for matches_name in [
                |n: &str, sni: &str, _w: Option<&str>| n == sni,
                |n: &str, _sni: &str, w: Option<&str>| Some(n) == w,
            ] {
                if let Some((_, key)) = self.entries.iter().find(|(names, _)| {
                    names
                        .iter()
                        .any(|n| matches_name(n, &sni, wildcard.as_deref()))
                }) {
                    return Some(key.clone());
                }
            }
        }
        self.entries.first().map(|(_, k)| k.clone())
    }
}

fn load_one(
    files: &CertFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(Vec<String>, Arc<CertifiedKey>), TlsError> {
    let err = |path: &PathBuf, reason: String| TlsError {
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| err(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&files.cert, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(err(&files.cert, "no certificate in the file".into()));
    };
    let names: Vec<String> = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| err(&files.cert, format!("unreadable certificate: {e}")))?
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect();
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err(&files.key, e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| err(&files.key, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        err(
            &files.key,
            format!("does not match {}: {e}", files.cert.display()),
        )
    })?;
    Ok((names, Arc::new(certified)))
}

/// Builds a server configuration (HTTP/1.1 ALPN) from certificate files.
pub fn load(files: &[CertFiles]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let entries = files
        .iter()
        .map(|f| load_one(f, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    if entries.is_empty() {
        return Err(TlsError {
            path: String::new(),
            reason: "no certificate given".into(),
        });
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            path: String::new(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { entries }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The current TLS configuration of a listener, swapped on reload.
pub type SharedTls = Arc<ArcSwap<rustls::ServerConfig>>;

/// Reloads the certificates when any of their files changes (checked every `interval`); a
/// broken set is logged and the previous one kept.
pub async fn watch(
    files: Vec<CertFiles>,
    tls: SharedTls,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let stamp = |files: &[CertFiles]| -> Vec<Option<Vec<u8>>> {
        files
            .iter()
            .flat_map(|f| [&f.cert, &f.key])
            .map(|p| std::fs::read(p).ok())
            .collect()
    };
    let mut last = stamp(&files);
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = stamp(&files);
        if now == last {
            continue;
        }
        last = now;
        match load(&files) {
            Ok(config) => {
                tls.store(config);
                tracing::info!("TLS certificates reloaded");
            }
            Err(err) => {
                tracing::error!(%err, "TLS certificates not reloaded; keeping the current ones")
            }
        }
    }
}
