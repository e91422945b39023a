//! One TLS client setup for every protocol (POP3 now, the IMAP sink later): system trust store,
//! plus an optional private CA, with certificate checks on unless the config explicitly turns them off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Why a TLS connector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read CA file {path}: {source}; check `ca_file` points to a readable PEM bundle"
    )]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} holds no PEM certificate; `ca_file` must contain `-----BEGIN CERTIFICATE-----` blocks")]
    NoCertificate { path: PathBuf },
    #[error("CA file {path} has an invalid certificate: {source}")]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: native_tls::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Build(#[source] native_tls::Error),
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// A connector that trusts the system roots plus every certificate in `ca_file` (PEM, may hold
/// several). `danger_accept_invalid_certs` disables certificate and host name checks and says so
/// in a warning, because it makes the connection open to interception.
pub fn connector(
    ca_file: Option<&Path>,
    danger_accept_invalid_certs: bool,
) -> Result<tokio_native_tls::TlsConnector, TlsError> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = ca_file {
        for cert in read_pem_bundle(path)? {
            builder.add_root_certificate(cert);
        }
    }
    if danger_accept_invalid_certs {
        tracing::warn!(
            "TLS certificate verification disabled by danger_accept_invalid_certs; the connection can be intercepted"
        );
        builder.danger_accept_invalid_certs(true);
        builder.danger_accept_invalid_hostnames(true);
    }
    // Built here, once: building parses the system CA bundle (about a million instructions),
    // which a connector kept as a builder would do again at every handshake.
    let built = builder.build().map_err(TlsError::Build)?;
    Ok(tokio_native_tls::TlsConnector::from(built))
}

/// The connector for this TLS setup, built at its first use and shared after that: a poll
/// does not read and parse the CA file again (nor log the `danger_accept_invalid_certs`
/// warning again). A changed `ca_file` is picked up at restart.
pub fn shared_connector(
    ca_file: Option<&Path>,
    danger_accept_invalid_certs: bool,
) -> Result<Arc<tokio_native_tls::TlsConnector>, TlsError> {
    type Key = (Option<PathBuf>, bool);
    static BUILT: OnceLock<Mutex<HashMap<Key, Arc<tokio_native_tls::TlsConnector>>>> =
        OnceLock::new();
    let key = (ca_file.map(Path::to_path_buf), danger_accept_invalid_certs);
    let cache = BUILT.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    // Built outside the lock (it reads a file); a concurrent first build just loses the race.
    let built = Arc::new(connector(ca_file, danger_accept_invalid_certs)?);
    Ok(cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(built)
        .clone())
}

/// Every certificate of a PEM bundle; native-tls only parses one block at a time.
fn read_pem_bundle(path: &Path) -> Result<Vec<native_tls::Certificate>, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TlsError::ReadCa {
        path: path.to_owned(),
        source,
    })?;
    let mut certs = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        let cert =
            native_tls::Certificate::from_pem(&rest.as_bytes()[start..end]).map_err(|source| {
                TlsError::BadCertificate {
                    path: path.to_owned(),
                    source,
                }
            })?;
        certs.push(cert);
        rest = &rest[end..];
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The `notAfter` of a DER certificate as Unix seconds, for the expiry metric.
pub fn not_after_unix(der: &[u8]) -> Option<i64> {
    let cert = openssl::x509::X509::from_der(der).ok()?;
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(cert.not_after()).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn rejects_ca_file_without_certificate() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "not a certificate").unwrap();
        assert!(matches!(
            connector(Some(f.path()), false),
            Err(TlsError::NoCertificate { .. })
        ));
    }

    #[test]
    fn reports_missing_ca_file() {
        let err = connector(Some(Path::new("/nonexistent/ca.pem")), false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn a_shared_connector_is_built_once_per_setup() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        // Any parsable certificate will do: borrow one from the system store.
        let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap();
        let end = system.find(END).unwrap() + END.len();
        std::fs::write(&ca, &system[system.find(BEGIN).unwrap()..end]).unwrap();
        let first = shared_connector(Some(&ca), false).unwrap();
        // Not read again: gone from disk, the second poll still gets its connector.
        std::fs::remove_file(&ca).unwrap();
        let second = shared_connector(Some(&ca), false).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert!(shared_connector(Some(&ca), true).is_err());
    }

    #[test]
    fn builds_with_system_roots() {
        assert!(connector(None, false).is_ok());
    }
}
