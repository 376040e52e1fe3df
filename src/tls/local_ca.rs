//! The `self-signed` certificate source: a small local CA created once in
//! the state dir (its key mode 0600, its certificate at `<state-dir>/ca.pem`
//! for clients to trust) that issues leaf certificates for the configured
//! domains plus localhost, again whenever a third of their lifetime is left.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::{CertInfo, CertStore, Installed, Source, SourceStatus, TlsError, certified_key};
use crate::fsutil::write_atomic;

/// Leaf certificates live this long (like Let's Encrypt's).
const LEAF_DAYS: i64 = 90;
const CA_YEARS: i64 = 10;

pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    dir: PathBuf,
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    write_atomic(path, text.as_bytes(), mode).map_err(|source| TlsError::Write {
        path: path.into(),
        source,
    })
}

fn generate(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

impl LocalCa {
    pub fn ca_path(state_dir: &Path) -> PathBuf {
        state_dir.join("ca.pem")
    }

    /// Loads the CA from the state dir, creating it on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<LocalCa, TlsError> {
        let cert_path = Self::ca_path(state_dir);
        let key_path = state_dir.join("ca-key.pem");
        if cert_path.exists() && key_path.exists() {
            let ca_pem = read(&cert_path)?;
            let key = KeyPair::from_pem(&read(&key_path)?)
                .map_err(|e| TlsError::Invalid(format!("{}: not a usable key: {e}", key_path.display())))?;
            let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
                .map_err(|e| TlsError::Invalid(format!("{}: not a usable CA certificate: {e}", cert_path.display())))?;
            return Ok(LocalCa {
                issuer,
                ca_pem,
                dir: state_dir.to_path_buf(),
            });
        }
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "flowgate local CA");
        name.push(DnType::OrganizationName, "flowgate");
        params.distinguished_name = name;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365 * CA_YEARS);
        let cert = params.self_signed(&key).map_err(generate)?;
        // The key first: a CA certificate without its key is useless.
        write(&key_path, &key.serialize_pem(), 0o600)?;
        write(&cert_path, &cert.pem(), 0o644)?;
        tracing::info!("created a local CA; clients trust it with {}", cert_path.display());
        Ok(LocalCa {
            issuer: Issuer::new(params, key),
            ca_pem: cert.pem(),
            dir: state_dir.to_path_buf(),
        })
    }

    /// Issues a leaf for `domains` plus localhost and the loopback addresses.
    /// Returns the chain (leaf, then CA) and the key, both PEM.
    pub fn issue(&self, domains: &[String]) -> Result<(String, String), TlsError> {
        let mut names: Vec<String> = Vec::new();
        for name in domains
            .iter()
            .map(String::as_str)
            .chain(["localhost", "127.0.0.1", "::1"])
        {
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let mut params = CertificateParams::new(names.clone()).map_err(generate)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0].clone());
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(LEAF_DAYS);
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok((format!("{}{}", cert.pem(), self.ca_pem), key.serialize_pem()))
    }

    /// Makes sure a valid leaf for `domains` serves from `store`: reuses the
    /// one on disk when it still covers every name and is not due for renewal,
    /// else issues a new one and writes it. Returns its info.
    pub fn ensure_leaf(&self, domains: &[String], store: &CertStore) -> Result<CertInfo, TlsError> {
        let dir = self.dir.join("certs").join("self-signed");
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let existing = match (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path)) {
            (Ok(chain), Ok(key)) => certified_key(&chain, &key, &cert_path).ok().and_then(|ck| {
                let info = CertInfo::inspect(ck.cert.first()?.as_ref(), Source::SelfSigned).ok()?;
                let fresh = crate::clock::now_unix() < info.renew_at_unix();
                let complete = domains.iter().all(|d| info.covers(d)) && info.covers("localhost");
                (fresh && complete).then_some((ck, info))
            }),
            _ => None,
        };
        let (key, info) = match existing {
            Some(found) => found,
            None => {
                let (chain, key) = self.issue(domains)?;
                write(&key_path, &key, 0o600)?;
                write(&cert_path, &chain, 0o644)?;
                let ck = certified_key(&chain, &key, &cert_path)?;
                let der = ck
                    .cert
                    .first()
                    .ok_or_else(|| TlsError::Generate("empty chain".into()))?;
                let info = CertInfo::inspect(der.as_ref(), Source::SelfSigned)?;
                tracing::info!(
                    "issued a local certificate for {} (valid until {})",
                    info.domains.join(", "),
                    info.not_after
                );
                (ck, info)
            }
        };
        store.set_status(
            Source::SelfSigned,
            SourceStatus {
                next_renewal: Some(super::rfc3339(info.renew_at_unix())),
                last_error: None,
            },
        );
        store.install(Installed {
            key: Arc::new(key),
            info: info.clone(),
        });
        Ok(info)
    }
}

/// Keeps the local leaf fresh: checks twice a day and re-issues when due.
pub fn spawn_renewal(ca: Arc<LocalCa>, domains: Vec<String>, store: Arc<CertStore>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(12 * 3600)).await;
            if let Err(e) = ca.ensure_leaf(&domains, &store) {
                tracing::error!("local certificate not renewed, the current one keeps serving: {e}");
                store.set_status(
                    Source::SelfSigned,
                    SourceStatus {
                        next_renewal: None,
                        last_error: Some(e.to_string()),
                    },
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flowgate-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn creates_the_ca_once_and_reuses_leaves() {
        let dir = temp_dir("reuse");
        let store = CertStore::new();
        let ca = LocalCa::load_or_create(&dir).unwrap();
        let first = ca.ensure_leaf(&["flow.example.com".into()], &store).unwrap();
        assert!(first.covers("flow.example.com") && first.covers("localhost") && first.covers("127.0.0.1"));
        assert_eq!(first.issuer, "flowgate local CA");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca-key.pem")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // Loading again keeps the CA and the leaf.
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        let again = LocalCa::load_or_create(&dir).unwrap();
        let second = again.ensure_leaf(&["flow.example.com".into()], &store).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("ca.pem")).unwrap(), ca_pem);
        assert_eq!(second.serial, first.serial);

        // A new domain means a new leaf.
        let third = again
            .ensure_leaf(&["flow.example.com".into(), "mc.example.com".into()], &store)
            .unwrap();
        assert_ne!(third.serial, first.serial);
        assert!(third.covers("mc.example.com"));
        assert!(store.for_name(Some("mc.example.com")).is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
