//! An nginx configuration that honours the guide: an upstream over every
//! Flow instance on 9021, WebSocket upgrades passed, read timeouts far above
//! the heartbeat, X-Forwarded-Proto/Port, TLS on the domain, HTTP redirected,
//! and Management Center on its own name.

use super::{ExportError, File, MARKER, Source, certificate_paths, compose, real_profile_files};
use crate::config::deployment::CertMode;
use crate::deploy::plan::Role;
use crate::deploy::settings::{Deployment, FLOW_PORT, MC_PORT};

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
    let proxy_settings = format!(
        "            proxy_http_version 1.1;\n\
         \x20           # WebSocket: the Flow UI's session upgrades; the map keeps other requests on keep-alive.\n\
         \x20           proxy_set_header Upgrade $http_upgrade;\n\
         \x20           proxy_set_header Connection $connection_upgrade;\n\
         \x20           proxy_set_header Host $http_host;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_set_header X-Forwarded-Proto https;\n\
         \x20           proxy_set_header X-Forwarded-Port {port};\n\
         \x20           proxy_set_header X-Forwarded-Host $host;\n\
         \x20           # Far above the UI's 5 s heartbeat (nginx's default of 60 s ends quiet sessions).\n\
         \x20           proxy_read_timeout 3600s;\n\
         \x20           proxy_send_timeout 3600s;\n\
         \x20           proxy_buffering off;\n",
        port = dep.https_port
    );
    let tls_server = |name: &str, upstream: &str| {
        format!(
            "    server {{\n\
             \x20       listen {https} ssl http2;\n\
             \x20       server_name {name};\n\
             \x20       ssl_certificate {cert};\n\
             \x20       ssl_certificate_key {key};\n\
             \x20       ssl_protocols TLSv1.2 TLSv1.3;\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://{upstream};\n\
             {proxy_settings}\
             \x20       }}\n\
             \x20   }}\n",
            https = dep.https_port,
            cert = cert.display(),
            key = key.display(),
        )
    };
    format!(
        "# Written by `{MARKER} nginx` for project {project}: Flow on {flow_origin}, Management Center on {mc_origin}.\n\
         # Run: nginx -c $PWD/nginx.conf (or the nginx service of docker-compose.yml). Regenerate rather than edit.\n\
         {certificate_note}\n\
         worker_processes auto;\n\
         error_log stderr warn;\n\
         events {{\n\
         \x20   worker_connections 10240;\n\
         }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   server_tokens off;\n\
         \x20   map $http_upgrade $connection_upgrade {{\n\
         \x20       default upgrade;\n\
         \x20       '' '';\n\
         \x20   }}\n\
         \x20   # Every Flow instance, on port {FLOW_PORT}.\n\
         \x20   upstream flow {{\n\
         {flow_servers}\
         \x20       keepalive 32;\n\
         \x20   }}\n\
         \x20   upstream mc {{\n\
         \x20       server {mc};\n\
         \x20       keepalive 8;\n\
         \x20   }}\n\
         \x20   # Plain HTTP: redirected to HTTPS.\n\
         \x20   server {{\n\
         \x20       listen {http};\n\
         \x20       server_name {domain} {mc_domain};\n\
         {acme_location}\
         \x20       location / {{\n\
         \x20           return 308 https://$host{port_suffix}$request_uri;\n\
         \x20       }}\n\
         \x20   }}\n\
         \x20   # Other names get no certificate and no forwarding.\n\
         \x20   server {{\n\
         \x20       listen {https} ssl http2 default_server;\n\
         \x20       ssl_reject_handshake on;\n\
         \x20   }}\n\
         {flow_server}\
         {mc_server}\
         }}\n",
        project = dep.project,
        flow_origin = dep.flow_origin(),
        mc_origin = dep.mc_origin(),
        mc = upstreams.mc,
        http = dep.http_port,
        https = dep.https_port,
        domain = dep.domain,
        mc_domain = dep.mc_domain,
        flow_server = tls_server(&dep.domain, "flow"),
        mc_server = tls_server(&dep.mc_domain, "mc"),
    )
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
