//! The `self-signed` certificate source: a small local CA created in the
//! state dir (its key mode 0600, its certificate at `<state-dir>/ca.pem` for
//! clients to trust) that issues leaf certificates for the configured
//! domains plus localhost, again whenever a third of their lifetime is left.
//!
//! Users are asked to trust this CA, so it can sign for nothing else: it
//! carries X.509 name constraints (the domains and their subdomains,
//! localhost, the loopback addresses) and lives two years at most. When
//! the domains change, a new CA replaces it; half a CA on disk (one of the
//! two files) is refused rather than replaced.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use time::{Duration, OffsetDateTime};

use super::{CertInfo, CertStore, Installed, Source, SourceStatus, TlsError, certified_key};
use crate::fsutil::write_atomic;

/// Leaf certificates live this long (like Let's Encrypt's).
const LEAF_DAYS: i64 = 90;
/// The CA lives at most this long.
pub const CA_DAYS: i64 = 730;

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

/// One permitted subtree, as text: `dns:example.com`, `ip:127.0.0.0/8`.
type Permitted = BTreeSet<String>;

/// What the CA may sign for: each domain (a wildcard's base) with its
/// subdomains, localhost, and the loopback addresses.
fn permitted_for(domains: &[String]) -> Permitted {
    let mut out = Permitted::new();
    for domain in domains {
        let name = domain
            .trim_start_matches("*.")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        match name.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => out.insert(format!("ip:{ip}/32")),
            Ok(IpAddr::V6(ip)) => out.insert(format!("ip:{ip}/128")),
            Err(_) if !name.is_empty() => out.insert(format!("dns:{name}")),
            Err(_) => false,
        };
    }
    out.insert("dns:localhost".into());
    out.insert("ip:127.0.0.0/8".into());
    out.insert("ip:::1/128".into());
    out
}

fn subtree(entry: &str) -> Option<GeneralSubtree> {
    if let Some(name) = entry.strip_prefix("dns:") {
        return Some(GeneralSubtree::DnsName(name.into()));
    }
    let (ip, prefix) = entry.strip_prefix("ip:")?.rsplit_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    Some(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
        ip.parse().ok()?,
        prefix,
    )))
}

/// The permitted subtrees and lifetime (days) of a CA certificate.
fn constraints_of(ca_pem: &str) -> Option<(Permitted, i64)> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    let mut permitted = Permitted::new();
    for extension in cert.extensions() {
        if let ParsedExtension::NameConstraints(nc) = extension.parsed_extension() {
            for subtree in nc.permitted_subtrees.iter().flatten() {
                match &subtree.base {
                    GeneralName::DNSName(name) => {
                        permitted.insert(format!("dns:{}", name.to_ascii_lowercase()));
                    }
                    GeneralName::IPAddress(bytes) if bytes.len() == 8 => {
                        let ip = std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
                        let prefix = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]).count_ones();
                        permitted.insert(format!("ip:{ip}/{prefix}"));
                    }
                    GeneralName::IPAddress(bytes) if bytes.len() == 32 => {
                        let mut ip = [0u8; 16];
                        ip.copy_from_slice(&bytes[..16]);
                        let prefix: u32 = bytes[16..].iter().map(|b| b.count_ones()).sum();
                        permitted.insert(format!("ip:{}/{prefix}", std::net::Ipv6Addr::from(ip)));
                    }
                    _ => {}
                }
            }
        }
    }
    Some((permitted, days))
}

impl LocalCa {
    pub fn ca_path(state_dir: &Path) -> PathBuf {
        state_dir.join("ca.pem")
    }

    /// Loads the CA from the state dir when it was made for these
    /// `domains`; else makes one (the first time, or a new one when the
    /// domains changed or the CA is older than this rule). Half a CA (one of
    /// ca.pem and ca-key.pem) is an error: nothing is overwritten.
    pub fn load_or_create(state_dir: &Path, domains: &[String]) -> Result<LocalCa, TlsError> {
        let cert_path = Self::ca_path(state_dir);
        let key_path = state_dir.join("ca-key.pem");
        let wanted = permitted_for(domains);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let ca_pem = read(&cert_path)?;
                match constraints_of(&ca_pem) {
                    Some((permitted, days)) if permitted == wanted && days <= CA_DAYS => {
                        let key = KeyPair::from_pem(&read(&key_path)?)
                            .map_err(|e| TlsError::Invalid(format!("{}: not a usable key: {e}", key_path.display())))?;
                        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| {
                            TlsError::Invalid(format!("{}: not a usable CA certificate: {e}", cert_path.display()))
                        })?;
                        return Ok(LocalCa {
                            issuer,
                            ca_pem,
                            dir: state_dir.to_path_buf(),
                        });
                    }
                    _ => {
                        let ca = Self::create(state_dir, &wanted)?;
                        tracing::warn!(
                            "the local CA was made for other names or without limits; a new one signs only for {}: clients must trust {} again",
                            shown(&wanted),
                            cert_path.display()
                        );
                        return Ok(ca);
                    }
                }
            }
            (true, false) | (false, true) => {
                let (present, missing) = if cert_path.exists() {
                    (&cert_path, &key_path)
                } else {
                    (&key_path, &cert_path)
                };
                return Err(TlsError::HalfCa {
                    present: present.clone(),
                    missing: missing.clone(),
                });
            }
            (false, false) => {}
        }
        let ca = Self::create(state_dir, &wanted)?;
        tracing::info!(
            "created a local CA for {}; clients trust it with {}",
            shown(&wanted),
            cert_path.display()
        );
        Ok(ca)
    }

    fn create(state_dir: &Path, permitted: &Permitted) -> Result<LocalCa, TlsError> {
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted.iter().filter_map(|e| subtree(e)).collect(),
            excluded_subtrees: Vec::new(),
        });
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "flowgate local CA");
        name.push(DnType::OrganizationName, "flowgate");
        params.distinguished_name = name;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = params.not_before + Duration::days(CA_DAYS);
        let cert = params.self_signed(&key).map_err(generate)?;
        // The key first: a CA certificate without its key is useless.
        write(&state_dir.join("ca-key.pem"), &key.serialize_pem(), 0o600)?;
        write(&Self::ca_path(state_dir), &cert.pem(), 0o644)?;
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
            // A leaf of an earlier CA is issued again by this one.
            (Ok(chain), Ok(key)) if chain.ends_with(&self.ca_pem) => {
                certified_key(&chain, &key, &cert_path).ok().and_then(|ck| {
                    let info = CertInfo::inspect(ck.cert.first()?.as_ref(), Source::SelfSigned).ok()?;
                    let fresh = crate::clock::now_unix() < info.renew_at_unix();
                    let complete = domains.iter().all(|d| info.covers(d)) && info.covers("localhost");
                    (fresh && complete).then_some((ck, info))
                })
            }
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

/// The permitted names for a log line.
fn shown(permitted: &Permitted) -> String {
    permitted
        .iter()
        .map(|e| e.trim_start_matches("dns:").trim_start_matches("ip:"))
        .collect::<Vec<_>>()
        .join(", ")
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
        let ca = LocalCa::load_or_create(&dir, &["flow.example.com".into()]).unwrap();
        let first = ca.ensure_leaf(&["flow.example.com".into()], &store).unwrap();
        assert!(first.covers("flow.example.com") && first.covers("localhost") && first.covers("127.0.0.1"));
        assert_eq!(first.issuer, "flowgate local CA");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca-key.pem")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // Loading again keeps the CA and the leaf.
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        let again = LocalCa::load_or_create(&dir, &["flow.example.com".into()]).unwrap();
        let second = again.ensure_leaf(&["flow.example.com".into()], &store).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("ca.pem")).unwrap(), ca_pem);
        assert_eq!(second.serial, first.serial);

        // A new name within the CA's limits means a new leaf from the same CA.
        let third = again
            .ensure_leaf(&["flow.example.com".into(), "mc.flow.example.com".into()], &store)
            .unwrap();
        assert_ne!(third.serial, first.serial);
        assert!(third.covers("mc.flow.example.com"));
        assert!(store.for_name(Some("mc.flow.example.com")).is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_ca_is_limited_to_its_names_and_two_years() {
        let dir = temp_dir("limits");
        LocalCa::load_or_create(&dir, &["flow.example.com".into(), "*.mc.example.org".into()]).unwrap();
        let pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        let (permitted, days) = constraints_of(&pem).unwrap();
        assert_eq!(
            permitted.into_iter().collect::<Vec<_>>(),
            [
                "dns:flow.example.com",
                "dns:localhost",
                "dns:mc.example.org",
                "ip:127.0.0.0/8",
                "ip:::1/128"
            ]
        );
        assert!(days <= CA_DAYS, "{days} days");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn other_domains_make_a_new_ca_and_half_a_ca_is_refused() {
        let dir = temp_dir("change");
        let store = CertStore::new();
        let ca = LocalCa::load_or_create(&dir, &["flow.example.com".into()]).unwrap();
        ca.ensure_leaf(&["flow.example.com".into()], &store).unwrap();
        let first = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        let ca = LocalCa::load_or_create(&dir, &["flow.example.net".into()]).unwrap();
        let second = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        assert_ne!(first, second, "other domains, same CA");
        // The old CA's leaf is issued again by the new one.
        let leaf = ca.ensure_leaf(&["flow.example.net".into()], &store).unwrap();
        assert!(leaf.covers("flow.example.net"));
        let chain = std::fs::read_to_string(dir.join("certs/self-signed/cert.pem")).unwrap();
        assert!(chain.ends_with(&second));

        std::fs::remove_file(dir.join("ca-key.pem")).unwrap();
        let error = LocalCa::load_or_create(&dir, &["flow.example.net".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("ca-key.pem does not"), "{error}");
        assert_eq!(
            std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
            second,
            "ca.pem was overwritten"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
