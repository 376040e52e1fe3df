//! The states the panels' snapshot tests draw: a production-like
//! deployment of `n` instances with two backend samples, sessions on the
//! first instance and a few events, at a fixed time. `cargo insta review`
//! (or INSTA_UPDATE=always) accepts changed snapshots.

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::super::app::{App, KeyMap, Msg};
use crate::deploy::plan::Role;
use crate::deploy::settings::Deployment;
use crate::monitor::tests::backend;
use crate::monitor::{ContainerInfo, Feed};
use crate::proxy::admin::CertificateView;
use crate::proxy::admin::SessionView;
use crate::proxy::backend::BackendState;

/// 2026-11-26 10:00:00 UTC.
pub const NOW_MS: u64 = 1_795_946_400_000;

pub fn container(project: &str, role: Role, index: Option<u32>, state: &str, restarts: i64) -> ContainerInfo {
    let name = match index {
        Some(n) => format!("{project}-flow-{n}"),
        None => format!("{project}-{}", role.as_str()),
    };
    ContainerInfo {
        name,
        role,
        index,
        state: state.into(),
        started_at: Some((NOW_MS / 1000) as i64 - 3_725),
        restarts,
        node: None,
        address: None,
    }
}

pub fn deployment(project: &str) -> Deployment {
    Deployment {
        project: project.into(),
        mc_domain: "mc.flow.example.com".into(),
        ..crate::deploy::settings::example()
    }
}

pub fn certificate(error: Option<&str>) -> CertificateView {
    CertificateView {
        info: crate::tls::CertInfo {
            source: crate::tls::Source::Acme,
            domains: vec!["flow.example.com".into(), "mc.flow.example.com".into()],
            subject: "CN=flow.example.com".into(),
            issuer: "(STAGING) Let's Encrypt".into(),
            serial: "01".into(),
            not_before: "2026-11-22T09:00:00Z".into(),
            not_after: "2027-02-20T09:00:00Z".into(),
            not_before_unix: 1_795_338_000,
            not_after_unix: 1_803_114_000,
        },
        days_left: 86,
        next_renewal: Some("2027-01-21T09:00:00Z".into()),
        last_error: error.map(str::to_string),
    }
}

/// A deployment with `n` instances, two backend samples a second apart
/// (for rates), sessions on the first and a few events.
pub fn running(n: u32) -> App {
    let mut app = App::new("prod", KeyMap::new(None).unwrap(), true);
    app.now_ms = NOW_MS;
    app.deployment = Some(deployment("prod"));
    let mut containers = vec![
        container("prod", Role::Proxy, None, "running", 0),
        container("prod", Role::Mc, None, "running", 0),
    ];
    containers.extend((1..=n).map(|i| container("prod", Role::Flow, Some(i), "running", 0)));
    app.update(Msg::Feed(Feed::Containers(containers)));
    for (at, factor) in [(NOW_MS - 1_000, 0), (NOW_MS, 1)] {
        let backends = (1..=n)
            .map(|i| {
                let mut b = backend(
                    &format!("prod-flow-{i}"),
                    1_000 + factor * (40 + u64::from(i)),
                    500 + factor * (8 + u64::from(i % 3)),
                    40 + u64::from(i),
                    BackendState::Healthy,
                );
                b.last_heartbeat_ms_ago = Some(300 + 40 * u64::from(i));
                b
            })
            .collect();
        app.update(Msg::Feed(Feed::Backends { at_ms: at, backends }));
    }
    for i in 1..=n {
        app.update(Msg::Feed(Feed::Stats {
            container: format!("prod-flow-{i}"),
            cpu_percent: Some(3.0 + f64::from(i)),
            memory_bytes: Some((180 + u64::from(i)) << 20),
            net_rx_bytes: 1 << 20,
            net_tx_bytes: 2 << 20,
        }));
    }
    app.update(Msg::Feed(Feed::Certificates(vec![certificate(None)])));
    app.update(Msg::Feed(Feed::Sessions(
        (0..4)
            .map(|s| SessionView {
                id: s,
                backend: "prod-flow-1".into(),
                client: format!("203.0.113.{}:5{s}000", 10 + s),
                age_ms: 60_000 * (s + 1),
                frames_in: 24 * (s + 1),
                frames_out: 24 * (s + 1),
                bytes_in: 0,
                bytes_out: 0,
                heartbeats: 12,
                last_heartbeat_ms_ago: Some([800, 4_200, 7_500, 12_000][s as usize]),
            })
            .collect(),
    )));
    for (offset, text) in [
        (9_000, "prod-flow-3: start"),
        (8_000, "prod-flow-3 added (prod-flow-3:9021)"),
        (7_000, "prod-flow-3 is healthy: health check passed"),
    ] {
        let feed = if text.contains(':') && !text.contains("added") && !text.contains("healthy") {
            Feed::Docker {
                at_ms: NOW_MS - offset,
                container: "prod-flow-3".into(),
                action: "start".into(),
            }
        } else {
            Feed::Note {
                at_ms: NOW_MS - offset,
                text: text.into(),
                error: false,
            }
        };
        app.update(Msg::Feed(feed));
    }
    app
}

pub fn draw(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| super::render(frame, app)).unwrap();
    terminal
}

pub fn text(app: &App, width: u16, height: u16) -> String {
    draw(app, width, height).backend().to_string()
}
