//! The `files` certificate source: a PEM chain and key made elsewhere
//! (OpenSSL, a corporate CA), checked when loaded and watched: when either
//! file changes the pair is loaded again, and a broken pair is refused while
//! the current certificate keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{CertEvent, CertInfo, CertStore, Installed, Source, SourceStatus, TlsError, certified_key};
use crate::clock::now_unix;

/// Certificates expiring sooner than this are loaded with a warning.
const WARN_DAYS: i64 = 14;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

/// Loads and checks the pair, then serves it from `store`.
pub fn load(files: &CertFiles, domains: &[String], store: &CertStore) -> Result<CertInfo, TlsError> {
    let chain_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    // Order first: with the issuer first, the key would seem not to match.
    check_chain_order(&parse_chain(&chain_pem, &files.cert)?, &files.cert)?;
    let key = certified_key(&chain_pem, &key_pem, &files.cert)?;
    let info = CertInfo::inspect(key.cert[0].as_ref(), Source::Files)?;
    let cert = files.cert.display();
    for domain in domains {
        if !info.covers(domain) {
            return Err(TlsError::Invalid(format!(
                "the certificate in {cert} does not cover {domain} (it names {}); get one that does, or fix --domain",
                info.domains.join(", ")
            )));
        }
    }
    let now = now_unix();
    if now > info.not_after_unix {
        return Err(TlsError::Invalid(format!(
            "the certificate in {cert} expired on {}; renew it",
            info.not_after
        )));
    }
    if now < info.not_before_unix {
        return Err(TlsError::Invalid(format!(
            "the certificate in {cert} is not valid before {}; check the clock",
            info.not_before
        )));
    }
    let days_left = (info.not_after_unix - now) / 86_400;
    let mut status = SourceStatus::default();
    if days_left < WARN_DAYS {
        let warning = format!(
            "the certificate in {cert} expires in {days_left} days ({}); replace the files",
            info.not_after
        );
        tracing::warn!("{warning}");
        status.last_error = Some(warning);
    }
    store.set_status(Source::Files, status);
    store.install(Installed {
        key: Arc::new(key),
        info: info.clone(),
    });
    Ok(info)
}

fn parse_chain(pem: &str, origin: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: bad PEM certificate: {e}", origin.display())))
}

/// Each certificate must be issued by the next one: leaf first, then its
/// issuer, and so on (what clients expect, and what servers must send).
fn check_chain_order(chain: &[rustls::pki_types::CertificateDer<'_>], origin: &Path) -> Result<(), TlsError> {
    let parsed: Vec<_> = chain
        .iter()
        .map(|der| x509_parser::parse_x509_certificate(der.as_ref()).map(|(_, c)| c))
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: not a valid X.509 certificate: {e}", origin.display())))?;
    for (index, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer() != pair[1].subject() {
            return Err(TlsError::Invalid(format!(
                "the certificates in {} are out of order: certificate {} ({}) is not the issuer of certificate {} ({}); \
                 put the server's certificate first, then each issuer in turn",
                origin.display(),
                index + 2,
                pair[1].subject(),
                index + 1,
                pair[0].subject(),
            )));
        }
    }
    Ok(())
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches both files and reloads the pair when either changes.
pub fn spawn_watch(files: CertFiles, domains: Vec<String>, store: Arc<CertStore>) {
    tokio::spawn(async move {
        let mut last = (stamp(&files.cert), stamp(&files.key));
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = (stamp(&files.cert), stamp(&files.key));
            if now == last {
                continue;
            }
            // Give a writer replacing both files a moment to finish.
            tokio::time::sleep(Duration::from_millis(300)).await;
            last = (stamp(&files.cert), stamp(&files.key));
            match load(&files, &domains, &store) {
                Ok(info) => {
                    tracing::info!(
                        "reloaded the certificate from {} (valid until {})",
                        files.cert.display(),
                        info.not_after
                    );
                    store.notify(CertEvent::installed(&info, "reloaded from files"));
                }
                Err(e) => {
                    tracing::error!(
                        "certificate files changed but were not loaded, the current certificate keeps serving: {e}"
                    );
                    store.set_status(
                        Source::Files,
                        SourceStatus {
                            next_renewal: None,
                            last_error: Some(e.to_string()),
                        },
                    );
                    store.notify(CertEvent::failed(Source::Files, &e.to_string()));
                }
            }
        }
    });
}
