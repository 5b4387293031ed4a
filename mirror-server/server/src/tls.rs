//! HTTPS: the rustls server configuration (TLS 1.2 and 1.3, rustls' modern suites only) and the
//! certificate in use, which can be swapped while the server runs — by the file watcher (a
//! certbot-style /etc/letsencrypt/live/HOST layout) or by the ACME task after a renewal.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// A certificate chain with its key, and when it expires.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded").field("not_after", &self.not_after).finish()
    }
}

/// Parses a PEM chain and PEM key (as certbot writes them: fullchain.pem and privkey.pem).
pub fn parse_pem(chain_pem: &[u8], key_pem: &[u8], origin: &Path) -> Result<Loaded, CertError> {
    let invalid = |what: String| CertError::Invalid { path: origin.to_path_buf(), what };
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &chain_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("unreadable certificate PEM: {e}")))?;
    let first = chain.first().ok_or_else(|| invalid("no certificate in the file".into()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| invalid(format!("unreadable key PEM: {e}")))?
        .ok_or_else(|| invalid("no private key in the file".into()))?;
    let signing = any_supported_type(&key).map_err(|e| invalid(format!("unsupported private key: {e}")))?;
    let (not_before, not_after) = validity(first).map_err(invalid)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| invalid(format!("the key does not belong to the certificate: {e}")))?;
    Ok(Loaded { key: Arc::new(certified), not_before, not_after })
}

/// The validity window of a DER certificate.
pub fn validity(cert: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok((at(parsed.validity().not_before), at(parsed.validity().not_after)))
}

pub fn load_files(cert: &Path, key: &Path) -> Result<Loaded, CertError> {
    let read = |p: &Path| std::fs::read(p).map_err(|source| CertError::Read { path: p.to_path_buf(), source });
    parse_pem(&read(cert)?, &read(key)?, cert)
}

/// The certificate handed to every new handshake; replaced atomically on renewal or reload.
#[derive(Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<Loaded>>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("current", &self.current()).finish()
    }
}

impl CertStore {
    pub fn set(&self, loaded: Loaded) {
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(Arc::new(loaded));
        }
    }

    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Whole days until the certificate in use expires (negative once expired); None without one.
    /// When the certificate in use expires.
    pub fn not_after(&self) -> Option<SystemTime> {
        Some(self.current()?.not_after)
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.key.clone())
    }
}

/// The server configuration: TLS 1.2 and 1.3 with rustls' default (AEAD, forward-secret)
/// suites, HTTP/1.1 by ALPN, certificates from the store.
pub fn server_config(store: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Identity of a file's current content, to notice certbot's renewals (it swaps symlinks).
pub fn file_stamp(path: &Path) -> Option<(u64, SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?, m.len()))
}

/// Watches certificate files and swaps them in when they change; a broken replacement is
/// logged and the certificate in use is kept.
pub async fn watch_files(store: Arc<CertStore>, cert: PathBuf, key: PathBuf, every: Duration) {
    let mut seen = (file_stamp(&cert), file_stamp(&key));
    loop {
        tokio::time::sleep(every).await;
        let now = (file_stamp(&cert), file_stamp(&key));
        if now == seen {
            continue;
        }
        match load_files(&cert, &key) {
            Ok(loaded) => {
                tracing::info!(cert = %cert.display(), not_after = ?loaded.not_after, "certificate reloaded");
                store.set(loaded);
                seen = now;
            }
            Err(e) => tracing::error!(error = %e, "the new certificate files are not usable; keeping the old one"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn parses_a_chain_and_key_and_reads_the_validity() {
        let (cert, key) = self_signed("mirror.example.net");
        let loaded = parse_pem(cert.as_bytes(), key.as_bytes(), Path::new("x.pem")).unwrap();
        assert!(loaded.not_after > loaded.not_before);
        let store = CertStore::default();
        assert_eq!(store.not_after(), None);
        store.set(loaded);
        let left = store.not_after().unwrap().duration_since(SystemTime::now()).unwrap();
        assert!(left > std::time::Duration::from_secs(300 * 86400), "{left:?}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_with_the_file_name() {
        let (cert, _) = self_signed("a.example.net");
        let (_, other_key) = self_signed("b.example.net");
        let err = parse_pem(cert.as_bytes(), other_key.as_bytes(), Path::new("/etc/le/fullchain.pem")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/etc/le/fullchain.pem") && text.contains("does not belong"), "{text}");
        let err = parse_pem(b"", b"", Path::new("empty.pem")).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
