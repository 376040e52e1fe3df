//! The `acme` certificate source: certificates from Let's Encrypt or any
//! ACME CA (RFC 8555) through instant-acme.
//!
//! The account key and the certificate live in `<state-dir>/acme/` (keys
//! mode 0600) and are reused: a restart never orders again while the
//! certificate on disk covers the domains and is not due, so restarts cannot
//! run into the CA's rate limits. Challenges are answered by the proxy
//! itself: HTTP-01 on the plain listener, TLS-ALPN-01 on the TLS listener.
//! Renewal starts when a third of the lifetime is left; failures back off
//! exponentially with jitter (at least an hour after a rate-limit error)
//! while the current certificate keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;

use super::{CertEvent, CertInfo, CertStore, Installed, Source, SourceStatus, TlsError, certified_key, rfc3339};
use crate::clock::now_unix;
pub use crate::config::proxy::{AcmeSettings, ChallengeKind};
use crate::fsutil::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME server {directory}: {message}")]
    Server {
        directory: String,
        message: String,
        rate_limited: bool,
    },
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Order(String),
}

impl AcmeError {
    fn rate_limited(&self) -> bool {
        matches!(self, AcmeError::Server { rate_limited: true, .. })
    }
}

/// Issues, stores, serves and renews the ACME certificate for a set of domains.
pub struct AcmeIssuer {
    settings: AcmeSettings,
    domains: Vec<String>,
    dir: PathBuf,
    store: Arc<CertStore>,
    /// Wakes the renewal loop (`cert renew`).
    wake: Notify,
    force: std::sync::atomic::AtomicBool,
    /// When the CA's renewal information (ARI, RFC 9773) says to renew;
    /// None while the CA offers none (then a third of the lifetime rules).
    ari_renew_at: std::sync::Mutex<Option<i64>>,
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    write_atomic(path, text.as_bytes(), mode).map_err(|source| TlsError::Write {
        path: path.into(),
        source,
    })
}

impl AcmeIssuer {
    pub fn new(settings: AcmeSettings, domains: Vec<String>, state_dir: &Path, store: Arc<CertStore>) -> Arc<Self> {
        Arc::new(AcmeIssuer {
            settings,
            domains,
            dir: state_dir.join("acme"),
            store,
            wake: Notify::new(),
            force: std::sync::atomic::AtomicBool::new(false),
            ari_renew_at: std::sync::Mutex::new(None),
        })
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn server_error(&self, error: instant_acme::Error) -> AcmeError {
        let rate_limited = matches!(&error, instant_acme::Error::Api(p)
            if p.r#type.as_deref().is_some_and(|t| t.ends_with(":rateLimited")));
        let message = match &error {
            instant_acme::Error::Api(problem) => {
                let mut text = problem.detail.clone().unwrap_or_else(|| format!("{problem:?}"));
                for sub in &problem.subproblems {
                    if let Some(detail) = &sub.detail {
                        text.push_str("; ");
                        text.push_str(detail);
                    }
                }
                text
            }
            other => other.to_string(),
        };
        AcmeError::Server {
            directory: self.settings.directory_url(),
            message,
            rate_limited,
        }
    }

    /// The certificate on disk, when it covers every domain.
    fn on_disk(&self) -> Option<(CertifiedKey, CertInfo)> {
        let chain = std::fs::read_to_string(self.cert_path()).ok()?;
        let key = std::fs::read_to_string(self.key_path()).ok()?;
        let ck = certified_key(&chain, &key, &self.cert_path()).ok()?;
        let info = CertInfo::inspect(ck.cert.first()?.as_ref(), Source::Acme).ok()?;
        self.domains.iter().all(|d| info.covers(d)).then_some((ck, info))
    }

    /// When the certificate described by `info` is due for renewal: the
    /// CA's suggestion when it gives one, else the configured window, else
    /// when a third of the lifetime is left.
    fn renew_at(&self, info: &CertInfo) -> i64 {
        if let Some(at) = *self.ari_renew_at.lock().unwrap_or_else(|e| e.into_inner()) {
            return at;
        }
        match self.settings.renew_before {
            Some(before) => info.not_after_unix - before.as_secs() as i64,
            None => info.renew_at_unix(),
        }
    }

    /// Asks the CA for the certificate's renewal window (ARI). Returns when
    /// to ask again, or None when the CA offers no renewal information.
    async fn check_renewal_info(&self) -> Option<Duration> {
        let (key, _) = self.on_disk()?;
        let der = key.cert.first()?.clone();
        let id = instant_acme::CertificateIdentifier::try_from(&der).ok()?;
        let account = self.account().await.ok()?;
        match account.renewal_info(&id).await {
            Ok((info, ask_again)) => {
                let window = &info.suggested_window;
                let at = pick_in_window(window.start.unix_timestamp(), window.end.unix_timestamp());
                tracing::info!(
                    "the CA suggests renewing between {} and {}",
                    rfc3339(window.start.unix_timestamp()),
                    rfc3339(window.end.unix_timestamp())
                );
                *self.ari_renew_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
                Some(ask_again.max(Duration::from_secs(60)))
            }
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(e) => {
                tracing::debug!("no renewal information from the CA: {e}");
                None
            }
        }
    }

    /// Serves a certificate, recording when it is due first, so nobody sees
    /// it without its renewal time.
    fn serve(&self, key: CertifiedKey, info: &CertInfo) {
        let status = SourceStatus {
            next_renewal: Some(rfc3339(self.renew_at(info))),
            last_error: None,
        };
        self.store.set_status(Source::Acme, status);
        self.store.install(Installed {
            key: Arc::new(key),
            info: info.clone(),
        });
    }

    /// Serves the certificate on disk, if any (even one due for renewal:
    /// better than nothing while the renewal runs). Returns whether one was.
    pub fn install_from_disk(&self) -> bool {
        match self.on_disk() {
            Some((key, info)) => {
                self.serve(key, &info);
                true
            }
            None => false,
        }
    }

    /// Whether a certificate is missing or due for renewal, and when the
    /// current one is due.
    pub fn due(&self) -> (bool, Option<i64>) {
        match self.on_disk() {
            Some((_, info)) => {
                let at = self.renew_at(&info);
                (now_unix() >= at, Some(at))
            }
            None => (true, None),
        }
    }

    /// Asks the renewal loop to renew now (`force`: even when not due).
    pub fn renew_now(&self, force: bool) {
        if force {
            self.force.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let path = self.dir.join("account.json");
        let builder = || match &self.settings.ca {
            Some(ca) => Account::builder_with_root(ca)
                .map_err(|e| AcmeError::Order(format!("cannot use {} as the ACME server's CA: {e}", ca.display()))),
            None => Account::builder().map_err(|e| AcmeError::Order(format!("cannot set up the ACME client: {e}"))),
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            let credentials: AccountCredentials = serde_json::from_str(&text).map_err(|e| {
                AcmeError::Order(format!(
                    "{} is damaged ({e}); remove it to register again",
                    path.display()
                ))
            })?;
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(|e| self.server_error(e));
        }
        let contact = self.settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder()?
            .create(&new, self.settings.directory_url(), None)
            .await
            .map_err(|e| self.server_error(e))?;
        let json = serde_json::to_string_pretty(&credentials).map_err(|e| AcmeError::Order(e.to_string()))?;
        write(&path, &json, 0o600)?;
        tracing::info!("registered an ACME account at {}", self.settings.directory_url());
        Ok(account)
    }

    /// Orders a certificate for the domains: answers the challenges, sends a
    /// CSR made with rcgen, and returns the chain and key (PEM).
    async fn order(&self) -> Result<(String, String), AcmeError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        // With ARI, a renewal names the certificate it replaces (RFC 9773, 5).
        let ari = self.ari_renew_at.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        let previous = if ari {
            self.on_disk().and_then(|(k, _)| k.cert.first().cloned())
        } else {
            None
        };
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(id) = previous
            .as_ref()
            .and_then(|der| instant_acme::CertificateIdentifier::try_from(der).ok())
        {
            new_order = new_order.replaces(id);
        }
        let mut order = account.new_order(&new_order).await.map_err(|e| self.server_error(e))?;
        let challenge_type = match self.settings.challenge {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut answered: Vec<(String, String)> = Vec::new();
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization.map_err(|e| self.server_error(e))?;
                match authorization.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => return Err(AcmeError::Order(format!("an authorization is {other:?}"))),
                }
                let mut challenge = authorization.challenge(challenge_type.clone()).ok_or_else(|| {
                    AcmeError::Order(format!(
                        "the CA offers no {challenge_type:?} challenge; try the other --acme-challenge"
                    ))
                })?;
                let domain = challenge.identifier().to_string();
                let key_authorization = challenge.key_authorization();
                match self.settings.challenge {
                    ChallengeKind::Http01 => self
                        .store
                        .set_http_challenge(&challenge.token, Some(key_authorization.as_str().to_string())),
                    ChallengeKind::TlsAlpn01 => {
                        let key = alpn_challenge_key(&domain, key_authorization.digest().as_ref())?;
                        self.store.set_alpn_challenge(&domain, Some(Arc::new(key)));
                    }
                }
                answered.push((domain, challenge.token.clone()));
                challenge.set_ready().await.map_err(|e| self.server_error(e))?;
            }
            let retries = RetryPolicy::new().timeout(Duration::from_secs(60));
            let status = order.poll_ready(&retries).await.map_err(|e| self.server_error(e))?;
            if status != OrderStatus::Ready {
                let why = order
                    .refresh()
                    .await
                    .ok()
                    .and_then(|s| s.error.as_ref().and_then(|p| p.detail.clone()))
                    .unwrap_or_else(|| format!("{status:?}"));
                return Err(AcmeError::Order(format!("the CA did not validate the domains: {why}")));
            }
            let key = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
            let mut params =
                CertificateParams::new(self.domains.clone()).map_err(|e| TlsError::Generate(e.to_string()))?;
            params.distinguished_name = DistinguishedName::new();
            let csr = params
                .serialize_request(&key)
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            order.finalize_csr(csr.der()).await.map_err(|e| self.server_error(e))?;
            let chain = order
                .poll_certificate(&retries)
                .await
                .map_err(|e| self.server_error(e))?;
            Ok((chain, key.serialize_pem()))
        }
        .await;
        for (domain, token) in answered {
            self.store.set_http_challenge(&token, None);
            self.store.set_alpn_challenge(&domain, None);
        }
        result
    }

    /// Issues a certificate when there is none on disk, it misses a domain,
    /// or it is due (or `force`); writes it atomically and serves it.
    pub async fn ensure(&self, force: bool) -> Result<CertInfo, AcmeError> {
        if !force {
            if let Some((key, info)) = self.on_disk() {
                if now_unix() < self.renew_at(&info) {
                    self.serve(key, &info);
                    return Ok(info);
                }
            }
        }
        let started = std::time::Instant::now();
        let (chain, key_pem) = self.order().await?;
        let key = certified_key(&chain, &key_pem, &self.cert_path())?;
        let der = key
            .cert
            .first()
            .ok_or_else(|| AcmeError::Order("the CA sent an empty chain".into()))?;
        let info = CertInfo::inspect(der.as_ref(), Source::Acme)?;
        // The key first, so a crash between the two never pairs a new
        // certificate with an old key.
        write(&self.key_path(), &key_pem, 0o600)?;
        write(&self.cert_path(), &chain, 0o644)?;
        tracing::info!(
            "certificate for {} issued by {} in {:.1}s, valid until {}",
            self.domains.join(", "),
            info.issuer,
            started.elapsed().as_secs_f64(),
            info.not_after
        );
        // A new certificate: the CA's window for the old one no longer applies.
        *self.ari_renew_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.serve(key, &info);
        self.store.notify(CertEvent::installed(&info, "issued by ACME"));
        Ok(info)
    }

    /// Keeps the certificate issued and fresh, forever.
    pub fn spawn(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let force = self.force.swap(false, std::sync::atomic::Ordering::Relaxed);
                let wait = match self.ensure(force).await {
                    Ok(info) => {
                        failures = 0;
                        // The CA's renewal window, where it offers one (ARI).
                        let ask_again = self.check_renewal_info().await;
                        let renew_at = self.renew_at(&info);
                        tracing::info!(
                            "the certificate for {} is current; it renews at {}",
                            self.domains.join(", "),
                            rfc3339(renew_at)
                        );
                        self.store.set_status(
                            Source::Acme,
                            SourceStatus {
                                next_renewal: Some(rfc3339(renew_at)),
                                last_error: None,
                            },
                        );
                        let until = Duration::from_secs((renew_at - now_unix()).clamp(1, 86_400) as u64);
                        ask_again.map_or(until, |again| until.min(again))
                    }
                    Err(e) => {
                        failures += 1;
                        let wait = backoff(failures, e.rate_limited());
                        tracing::error!(
                            "certificate not issued ({e}); trying again in {}s, the current certificate (if any) keeps serving",
                            wait.as_secs()
                        );
                        self.store.set_status(
                            Source::Acme,
                            SourceStatus {
                                next_renewal: Some(rfc3339(now_unix() + wait.as_secs() as i64)),
                                last_error: Some(e.to_string()),
                            },
                        );
                        self.store.notify(CertEvent::failed(Source::Acme, &e.to_string()));
                        wait
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.notified() => {}
                }
            }
        });
    }
}

/// A random moment inside the CA's suggested window, so that many clients
/// do not all renew at its start (RFC 9773, 4.2).
pub fn pick_in_window(start: i64, end: i64) -> i64 {
    if end <= start {
        return start;
    }
    let r = u64::from_le_bytes(crate::websocket::random_bytes::<8>());
    start + (r % (end - start) as u64) as i64
}

/// Exponential backoff with ±25 % jitter: 2 s, 4 s, ... up to 6 h; at least
/// an hour after the CA said we hit a rate limit.
pub fn backoff(failures: u32, rate_limited: bool) -> Duration {
    let base = 2u64.saturating_pow(failures.min(20)).min(6 * 3600);
    let base = if rate_limited { base.max(3600) } else { base };
    let jitter = u16::from_le_bytes(crate::websocket::random_bytes::<2>()) as f64 / u16::MAX as f64;
    Duration::from_secs_f64(base as f64 * (0.75 + 0.5 * jitter))
}

/// The TLS-ALPN-01 answer (RFC 8737): a self-signed certificate for the
/// domain carrying the key authorization's digest in a critical extension.
fn alpn_challenge_key(domain: &str, digest: &[u8]) -> Result<CertifiedKey, TlsError> {
    let key = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(|e| TlsError::Generate(e.to_string()))?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(
        &rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::Generate(e.to_string()))?,
    )
    .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_respects_rate_limits() {
        for failures in 1..6 {
            let wait = backoff(failures, false).as_secs_f64();
            let base = 2f64.powi(failures as i32);
            assert!(wait >= base * 0.75 && wait <= base * 1.25, "{failures}: {wait}");
        }
        assert!(backoff(1, true) >= Duration::from_secs(2700));
        assert!(backoff(40, false) <= Duration::from_secs(6 * 3600 * 5 / 4));
    }

    #[test]
    fn renewal_times_fall_inside_the_suggested_window() {
        for _ in 0..100 {
            let at = pick_in_window(1000, 2000);
            assert!((1000..2000).contains(&at));
        }
        assert_eq!(pick_in_window(5, 5), 5);
        assert_eq!(pick_in_window(9, 3), 9);
    }

    #[test]
    fn directory_shortcuts() {
        let mut s = AcmeSettings {
            directory: "staging".into(),
            email: None,
            ca: None,
            challenge: ChallengeKind::Http01,
            renew_before: None,
        };
        assert!(s.directory_url().contains("staging"));
        s.directory = "https://127.0.0.1:14000/dir".into();
        assert_eq!(s.directory_url(), "https://127.0.0.1:14000/dir");
    }

    #[test]
    fn alpn_challenge_certificates_carry_the_acme_extension() {
        let key = alpn_challenge_key("flow.example.com", &[7u8; 32]).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).unwrap();
        let oid = "1.3.6.1.5.5.7.1.31";
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .expect("acmeIdentifier");
        assert!(ext.critical);
    }
}
