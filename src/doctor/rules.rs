//! The rules of the Flow load-balancing guide that `flowgate doctor` checks,
//! each with the fix for flowgate, Traefik and nginx. The fixes name the
//! values of the deployment being checked (domain, origin, port).

use serde::Serialize;

/// What the fixes are written for.
pub struct Context {
    pub domain: String,
    /// The public port of the Flow URL (443 unless the URL names another).
    pub port: u16,
    /// The Flow UI's origin, e.g. `https://flow.example.com`.
    pub origin: String,
    pub heartbeat_secs: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Fix {
    pub flowgate: String,
    pub traefik: String,
    pub nginx: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Certificate,
    HttpsRedirect,
    WebsocketUpgrade,
    ForwardedHeaders,
    Instances,
    HostRouting,
    IdleTimeout,
    HeartbeatSession,
    McCors,
}

impl Rule {
    pub const ALL: [Rule; 9] = [
        Rule::Certificate,
        Rule::HttpsRedirect,
        Rule::WebsocketUpgrade,
        Rule::ForwardedHeaders,
        Rule::Instances,
        Rule::HostRouting,
        Rule::IdleTimeout,
        Rule::HeartbeatSession,
        Rule::McCors,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Rule::Certificate => "certificate",
            Rule::HttpsRedirect => "https-redirect",
            Rule::WebsocketUpgrade => "websocket-upgrade",
            Rule::ForwardedHeaders => "forwarded-headers",
            Rule::Instances => "instances",
            Rule::HostRouting => "host-routing",
            Rule::IdleTimeout => "idle-timeout",
            Rule::HeartbeatSession => "heartbeat-session",
            Rule::McCors => "mc-cors",
        }
    }

    /// The rule, as the guide states it.
    pub fn text(self) -> &'static str {
        match self {
            Rule::Certificate => {
                "TLS terminates at the load balancer with a certificate that names the domain and is not about to expire"
            }
            Rule::HttpsRedirect => "plain HTTP on the domain redirects to HTTPS",
            Rule::WebsocketUpgrade => {
                "the load balancer passes the Upgrade and Connection headers, so the WebSocket handshake reaches Flow"
            }
            Rule::ForwardedHeaders => {
                "requests reach Flow with X-Forwarded-Proto: https and X-Forwarded-Port: the public HTTPS port"
            }
            Rule::Instances => "the load balancer spreads requests over every Flow instance on port 9021",
            Rule::HostRouting => {
                "the load balancer routes to Flow by host name (a rule such as Host(`flow.example.com`)): requests for \
                 other names do not reach Flow"
            }
            Rule::IdleTimeout => {
                "the load balancer's idle timeout is greater than the Flow UI's heartbeat interval (5 s by default)"
            }
            Rule::HeartbeatSession => "a WebSocket session that heartbeats stays open past the idle timeout",
            Rule::McCors => {
                "Management Center's hazelcast.mc.flow.addresses lists the Flow origin, so MC answers its CORS requests"
            }
        }
    }

    pub fn fix(self, c: &Context) -> Fix {
        let (domain, port, origin, hb) = (&c.domain, c.port, &c.origin, c.heartbeat_secs);
        let (flowgate, traefik, nginx) = match self {
            Rule::Certificate => (
                format!(
                    "in flowgate.toml set [tls] mode = \"acme-production\" and email (or mode = \"files\" with cert and \
                     key covering {domain}), then `flowgate up`; `flowgate cert renew --force` renews now"
                ),
                format!(
                    "give the Flow router tls.certresolver=letsencrypt and a certificatesresolvers.letsencrypt.acme \
                     resolver (email, storage, httpchallenge.entrypoint=web); the router rule must be Host(`{domain}`)"
                ),
                format!(
                    "ssl_certificate /etc/letsencrypt/live/{domain}/fullchain.pem (the full chain) and ssl_certificate_key \
                     .../privkey.pem in the server for {domain}; renew with certbot, then `nginx -s reload`"
                ),
            ),
            Rule::HttpsRedirect => (
                "flowgate's proxy redirects plain HTTP itself: publish its HTTP port (`flowgate up --http-port 80`)".into(),
                "on the web entrypoint: entrypoints.web.http.redirections.entrypoint.to=websecure and .scheme=https".into(),
                format!("server {{ listen 80; server_name {domain}; return 308 https://$host$request_uri; }}"),
            ),
            Rule::WebsocketUpgrade => (
                format!(
                    "flowgate passes WebSocket upgrades on every route: check that a route's host is {domain} and that the \
                     instances answer on port 9021 (`flowgate status`)"
                ),
                format!(
                    "Traefik passes upgrades by itself: check that the router rule Host(`{domain}`) matches and that no \
                     middleware removes the Connection or Upgrade header"
                ),
                "in the Flow location: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header \
                 Connection $connection_upgrade; with map $http_upgrade $connection_upgrade { default upgrade; '' close; }"
                    .into(),
            ),
            Rule::ForwardedHeaders => (
                format!(
                    "in the proxy's TOML: [service.flow] forwarded_proto = \"https\" and forwarded_port = {port} \
                     (`flowgate up` writes both)"
                ),
                format!(
                    "a headers middleware on the Flow router: middlewares.flow-headers.headers.customrequestheaders.\
                     X-Forwarded-Proto=https and .X-Forwarded-Port={port}"
                ),
                format!("proxy_set_header X-Forwarded-Proto https; proxy_set_header X-Forwarded-Port {port};"),
            ),
            Rule::Instances => (
                "`flowgate scale 3`; `flowgate status` shows which instances are unhealthy or draining".into(),
                "give every Flow container the same service (traefik.http.services.flow.loadbalancer.server.port=9021) \
                 on Traefik's network; a container with failing health is left out"
                    .into(),
                "list every instance in the upstream: upstream flow { server flow-1:9021; server flow-2:9021; ... }"
                    .into(),
            ),
            Rule::HostRouting => (
                format!(
                    "route by host: [[route]] host = \"{domain}\" in the proxy's TOML (`flowgate up` writes it), or \
                     `--domain {domain}` with the quick flags; other names then get 404"
                ),
                format!("make the Flow router's rule Host(`{domain}`), not PathPrefix(`/`) alone"),
                format!(
                    "server_name {domain}; in the Flow server, and a default_server for other names that does not \
                     proxy (return 444; or ssl_reject_handshake on;)"
                ),
            ),
            Rule::IdleTimeout | Rule::HeartbeatSession => (
                format!(
                    "in the proxy's TOML: [service.flow.websocket] idle_timeout = \"1h\" (flowgate refuses one at or below \
                     heartbeat_interval = \"{hb}s\"); a cloud load balancer in front needs its idle timeout above {hb} s too"
                ),
                format!(
                    "on the websecure entrypoint: transport.respondingtimeouts.readtimeout=0 (or well above {hb}s) and \
                     idletimeout=1h; a cloud load balancer in front needs its idle timeout above {hb} s too"
                ),
                format!(
                    "in the Flow location: proxy_read_timeout 3600s; proxy_send_timeout 3600s; (both must exceed the \
                     {hb} s heartbeat; nginx's default is 60 s)"
                ),
            ),
            Rule::McCors => (
                format!(
                    "`flowgate up` sets -Dhazelcast.mc.flow.addresses={origin} in MC's JAVA_OPTS from domain and \
                     https_port in flowgate.toml: make them the URL users open"
                ),
                format!(
                    "in MC's environment: JAVA_OPTS=-Dhazelcast.mc.flow.addresses={origin} (comma-separated for several \
                     origins); do not set Access-Control-* headers in a Traefik middleware"
                ),
                format!(
                    "in MC's environment: JAVA_OPTS=-Dhazelcast.mc.flow.addresses={origin}; do not add or hide \
                     Access-Control-* headers in nginx"
                ),
            ),
        };
        Fix {
            flowgate,
            traefik,
            nginx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_an_id_a_text_and_fixes_naming_the_deployment() {
        let context = Context {
            domain: "flow.example.com".into(),
            port: 443,
            origin: "https://flow.example.com".into(),
            heartbeat_secs: 5,
        };
        let mut ids: Vec<_> = Rule::ALL.iter().map(|r| r.id()).collect();
        ids.dedup();
        assert_eq!(ids.len(), Rule::ALL.len());
        for rule in Rule::ALL {
            let fix = rule.fix(&context);
            assert!(!rule.text().is_empty());
            for text in [&fix.flowgate, &fix.traefik, &fix.nginx] {
                assert!(text.len() > 20, "{}: {text}", rule.id());
            }
        }
        assert!(Rule::McCors.fix(&context).nginx.contains("https://flow.example.com"));
        assert!(
            Rule::WebsocketUpgrade
                .fix(&context)
                .nginx
                .contains("proxy_set_header Upgrade")
        );
    }
}
