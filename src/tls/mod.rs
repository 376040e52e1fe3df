//! TLS termination: where certificates come from (a local CA, files, ACME),
//! the store the TLS listeners pick them from by SNI, and what the admin API
//! reports about them.
//!
//! Sources install certificates into one [`CertStore`]; a handshake resolves
//! its certificate from the store at that moment, so a renewed certificate
//! serves new connections at once and never touches open ones.

pub mod acme;
pub mod files;
pub mod local_ca;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} holds no PEM certificate; expected '-----BEGIN CERTIFICATE-----' blocks, the server's certificate first"
    )]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key; expected a '-----BEGIN PRIVATE KEY-----' (or RSA/EC) block")]
    NoKey { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    #[error(
        "the local CA is half there: {} exists but {} does not; restore the missing file, or move {} away to make a new CA (clients must then trust the new ca.pem)",
        present.display(), missing.display(), present.display()
    )]
    HalfCa { present: PathBuf, missing: PathBuf },
}

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    SelfSigned,
    Files,
    Acme,
}

/// What the admin API and `cert status` show about a certificate.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct CertInfo {
    pub source: Source,
    /// DNS names and IP addresses the certificate is valid for.
    pub domains: Vec<String>,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// Seconds since the epoch, for arithmetic.
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl CertInfo {
    /// Reads names, issuer and validity from a DER certificate.
    pub fn inspect(der: &[u8], source: Source) -> Result<CertInfo, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TlsError::Invalid(format!("not a valid X.509 certificate: {e}")))?;
        let mut domains = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => domains.push(dns.to_ascii_lowercase()),
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            domains.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let common_name = |name: &x509_parser::x509::X509Name<'_>| {
            name.iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_string))
                .unwrap_or_else(|| name.to_string())
        };
        let validity = cert.validity();
        let not_before_unix = validity.not_before.timestamp();
        let not_after_unix = validity.not_after.timestamp();
        Ok(CertInfo {
            source,
            domains,
            subject: common_name(cert.subject()),
            issuer: common_name(cert.issuer()),
            serial: cert.raw_serial_as_string(),
            not_before: rfc3339(not_before_unix),
            not_after: rfc3339(not_after_unix),
            not_before_unix,
            not_after_unix,
        })
    }

    /// True when the certificate names `host` (exactly, or by a wildcard
    /// covering one label).
    pub fn covers(&self, host: &str) -> bool {
        covers(&self.domains, host)
    }

    /// When a third of the lifetime is left: the time to renew.
    pub fn renew_at_unix(&self) -> i64 {
        self.not_after_unix - (self.not_after_unix - self.not_before_unix) / 3
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Does any of `names` cover `host`? `*.example.com` covers `a.example.com`
/// but neither `example.com` nor `a.b.example.com`.
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|name| {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => name == host,
        }
    })
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-11-25T22:36:49Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (year, month, day) = crate::clock::civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A certificate ready to serve, with what is known about it.
#[derive(Debug)]
pub struct Installed {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Status of one certificate source, for the admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub next_renewal: Option<String>,
    pub last_error: Option<String>,
}

/// What happened to a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertAction {
    Installed,
    Failed,
}

/// A certificate event for the admin API's event stream.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CertEvent {
    pub source: Source,
    pub action: CertAction,
    pub domains: Vec<String>,
    pub not_after: Option<String>,
    pub detail: String,
}

impl CertEvent {
    pub fn installed(info: &CertInfo, detail: &str) -> Self {
        CertEvent {
            source: info.source,
            action: CertAction::Installed,
            domains: info.domains.clone(),
            not_after: Some(info.not_after.clone()),
            detail: detail.into(),
        }
    }

    pub fn failed(source: Source, error: &str) -> Self {
        CertEvent {
            source,
            action: CertAction::Failed,
            domains: Vec::new(),
            not_after: None,
            detail: error.into(),
        }
    }
}

/// Every certificate the TLS listeners may serve, chosen per handshake by SNI.
#[derive(Debug)]
pub struct CertStore {
    events: tokio::sync::broadcast::Sender<CertEvent>,
    installed: RwLock<Vec<Arc<Installed>>>,
    status: RwLock<HashMap<&'static str, SourceStatus>>,
    /// TLS-ALPN-01 challenge certificates by domain.
    alpn_challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations by token.
    http_challenges: RwLock<HashMap<String, String>>,
}

fn source_key(source: Source) -> &'static str {
    match source {
        Source::SelfSigned => "self-signed",
        Source::Files => "files",
        Source::Acme => "acme",
    }
}

impl Default for CertStore {
    fn default() -> Self {
        CertStore {
            events: tokio::sync::broadcast::channel(64).0,
            installed: RwLock::default(),
            status: RwLock::default(),
            alpn_challenges: RwLock::default(),
            http_challenges: RwLock::default(),
        }
    }
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Certificate events from now on (installed, renewed, failed).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<CertEvent> {
        self.events.subscribe()
    }

    pub fn notify(&self, event: CertEvent) {
        let _ = self.events.send(event);
    }

    /// Serves `cert` from now on, replacing the one from the same source
    /// for the same names.
    pub fn install(&self, cert: Installed) {
        let mut list = self.installed.write().unwrap_or_else(|e| e.into_inner());
        list.retain(|c| !(c.info.source == cert.info.source && c.info.domains == cert.info.domains));
        list.push(Arc::new(cert));
    }

    pub fn certificates(&self) -> Vec<Arc<Installed>> {
        self.installed.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_status(&self, source: Source, status: SourceStatus) {
        self.status
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(source_key(source), status);
    }

    pub fn status(&self, source: Source) -> SourceStatus {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(source_key(source))
            .cloned()
            .unwrap_or_default()
    }

    /// The certificate for a server name: the first covering it, else the
    /// first installed (clients without SNI, or asking for an IP address).
    pub fn for_name(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let list = self.installed.read().unwrap_or_else(|e| e.into_inner());
        name.and_then(|n| list.iter().find(|c| c.info.covers(n)))
            .or_else(|| list.first())
            .map(|c| c.key.clone())
    }

    pub fn set_alpn_challenge(&self, domain: &str, key: Option<Arc<CertifiedKey>>) {
        let mut map = self.alpn_challenges.write().unwrap_or_else(|e| e.into_inner());
        match key {
            Some(k) => map.insert(domain.to_ascii_lowercase(), k),
            None => map.remove(&domain.to_ascii_lowercase()),
        };
    }

    pub fn set_http_challenge(&self, token: &str, key_authorization: Option<String>) {
        let mut map = self.http_challenges.write().unwrap_or_else(|e| e.into_inner());
        match key_authorization {
            Some(v) => map.insert(token.to_string(), v),
            None => map.remove(token),
        };
    }

    pub fn http_challenge(&self, token: &str) -> Option<String> {
        self.http_challenges
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_string);
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let map = self.alpn_challenges.read().unwrap_or_else(|e| e.into_inner());
            return name.and_then(|n| map.get(&n.to_ascii_lowercase()).cloned());
        }
        self.for_name(name.as_deref())
    }
}

/// TLS 1.2 sessions remembered by ID (a few hundred bytes each).
const SESSION_CACHE: usize = 4096;

/// The rustls configuration of every TLS listener: TLS 1.2 and 1.3 only,
/// ALPN h2 then http/1.1 (and acme-tls/1 for ACME validation).
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    // Returning clients skip the full handshake: stateless tickets (keys
    // random, rotated every 6 hours, never written anywhere; TLS 1.3
    // resumption still makes a fresh key exchange, so it stays forward
    // secret), and a cache of session IDs for TLS 1.2 clients without
    // tickets. One ticket per connection, full or resumed: each
    // resumption brings the client a fresh one, an h2 client keeps one
    // connection, and every ticket made costs the server a key derivation
    // and an encryption (rustls' default of two made resumption about 4 %
    // slower here; OpenSSL also sends one after a resumption).
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| TlsError::Invalid(format!("TLS session tickets: {e}")))?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// Builds a serving key from PEM text, checking that key and certificate match.
pub fn certified_key(chain_pem: &str, key_pem: &str, origin: &std::path::Path) -> Result<CertifiedKey, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: bad PEM certificate: {e}", origin.display())))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: origin.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::NoKey {
        path: origin.to_path_buf(),
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Invalid(format!(
            "the private key does not belong to the certificate in {}; use the key the certificate was issued for",
            origin.display()
        )),
        other => TlsError::Invalid(format!("{}: unusable key or certificate: {other}", origin.display())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec!["*.example.com".to_string(), "flow.test".to_string()];
        assert!(covers(&names, "a.example.com"));
        assert!(covers(&names, "A.Example.COM."));
        assert!(!covers(&names, "example.com"));
        assert!(!covers(&names, "a.b.example.com"));
        assert!(covers(&names, "flow.test"));
        assert!(!covers(&names, "other.test"));
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_646_209), "2026-11-25T22:36:49Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
