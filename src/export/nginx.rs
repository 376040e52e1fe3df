//! An nginx configuration that honours the guide: an upstream over every
//! Flow instance on 9021, WebSocket upgrades passed, read timeouts far above
//! the heartbeat, X-Forwarded-Proto/Port, TLS on the domain, HTTP redirected,
//! and Management Center on its own name.

use super::{ExportError, File, MARKER, Source, certificate_paths, compose, real_profile_files};
use crate::config::deployment::CertMode;
use crate::deploy::plan::Role;
use crate::deploy::settings::{Deployment, FLOW_PORT, MC_PORT};
use crate::template;

/// Where nginx sends Flow and MC traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    pub flow: Vec<String>,
    pub mc: String,
}

impl Upstreams {
    /// The compose file's containers, unless addresses are given.
    pub fn from_args(dep: &Deployment, flow: &[String], mc: Option<&str>) -> Result<Upstreams, ExportError> {
        for address in flow.iter().map(String::as_str).chain(mc) {
            let valid = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(ExportError::Address(address.into()));
            }
        }
        let names = dep.names();
        Ok(Upstreams {
            flow: if flow.is_empty() {
                (1..=dep.instances)
                    .map(|n| format!("{}:{FLOW_PORT}", names.container(Role::Flow, Some(n))))
                    .collect()
            } else {
                flow.to_vec()
            },
            mc: mc
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}:{MC_PORT}", names.container(Role::Mc, None))),
        })
    }
}

pub fn files(source: &Source, upstreams: &Upstreams) -> Vec<File> {
    let mut files = vec![
        File {
            name: "nginx.conf",
            text: config(source, upstreams),
        },
        File {
            name: "docker-compose.yml",
            text: compose::nginx(source, "nginx.conf"),
        },
    ];
    files.extend(real_profile_files(source));
    files
}

/// The whole nginx.conf: runs as the official image's main file or with
/// `nginx -c`.
pub fn config(source: &Source, upstreams: &Upstreams) -> String {
    let dep = &source.deployment;
    let (cert, key) = certificate_paths(source);
    let certificate_note = match dep.tls.mode {
        CertMode::Files => "# The certificate and key are the files flowgate.toml names.".to_string(),
        CertMode::AcmeProduction | CertMode::AcmeStaging => format!(
            "# Let's Encrypt, with certbot (webroot /var/www/certbot is served on port {}):\n\
             #   certbot certonly --webroot -w /var/www/certbot -d {} -d {}\n\
             #   renewals: certbot renew --deploy-hook 'nginx -s reload'",
            dep.http_port, dep.domain, dep.mc_domain
        ),
        CertMode::SelfSigned => format!(
            "# flowgate's local CA has no nginx equivalent: put a certificate covering {} and {}\n\
             # at these paths (or set [tls] mode in flowgate.toml and export again).",
            dep.domain, dep.mc_domain
        ),
    };
    let acme_location = if matches!(dep.tls.mode, CertMode::AcmeProduction | CertMode::AcmeStaging) {
        "        location /.well-known/acme-challenge/ {\n            root /var/www/certbot;\n        }\n"
    } else {
        ""
    };
    let port_suffix = if dep.https_port == 443 {
        String::new()
    } else {
        format!(":{}", dep.https_port)
    };
    let flow_servers: String = upstreams
        .flow
        .iter()
        .map(|a| format!("        server {a} max_fails=2 fail_timeout=10s;\n"))
        .collect();
    let tls_server = |name: &str, upstream: &str| {
        template::NGINX_SERVER.render(&[
            ("https_port", &dep.https_port.to_string()),
            ("name", name),
            ("cert", &cert.display().to_string()),
            ("key", &key.display().to_string()),
            ("upstream", upstream),
        ])
    };
    template::NGINX_CONF.render(&[
        ("marker", MARKER),
        ("project", &dep.project),
        ("flow_origin", &dep.flow_origin()),
        ("mc_origin", &dep.mc_origin()),
        ("certificate_note", &certificate_note),
        ("flow_port", &FLOW_PORT.to_string()),
        ("flow_servers", &flow_servers),
        ("mc", &upstreams.mc),
        ("http_port", &dep.http_port.to_string()),
        ("https_port", &dep.https_port.to_string()),
        ("domain", &dep.domain),
        ("mc_domain", &dep.mc_domain),
        ("acme_location", acme_location),
        ("port_suffix", &port_suffix),
        ("flow_server", &tls_server(&dep.domain, "flow")),
        ("mc_server", &tls_server(&dep.mc_domain, "mc")),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::tests::source;
    use super::*;
    use crate::config::deployment::Profile;

    #[test]
    fn the_config_honours_every_rule() {
        let source = source(Profile::Real);
        let upstreams = Upstreams::from_args(&source.deployment, &[], None).unwrap();
        let text = config(&source, &upstreams);
        for needle in [
            "server prod-flow-1:9021",
            "server prod-flow-3:9021",
            "server prod-mc:8080;",
            "proxy_set_header Upgrade $http_upgrade;",
            "proxy_set_header Connection $connection_upgrade;",
            "proxy_set_header X-Forwarded-Proto https;",
            "proxy_set_header X-Forwarded-Port 443;",
            "proxy_read_timeout 3600s;",
            "return 308 https://$host$request_uri;",
            "server_name flow.example.com;",
            "ssl_certificate /etc/letsencrypt/live/flow.example.com/fullchain.pem;",
            "location /.well-known/acme-challenge/",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        let balanced = text.matches('{').count() == text.matches('}').count();
        assert!(balanced, "{text}");
    }

    #[test]
    fn addresses_given_replace_the_containers_and_bad_ones_are_refused() {
        let dep = source(Profile::Demo).deployment;
        let given = Upstreams::from_args(&dep, &["127.0.0.1:19021".into()], Some("127.0.0.1:18080")).unwrap();
        assert_eq!(given.flow, ["127.0.0.1:19021"]);
        assert_eq!(given.mc, "127.0.0.1:18080");
        let error = Upstreams::from_args(&dep, &["flow-1".into()], None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("'flow-1' is not HOST:PORT"), "{error}");
    }
}
