//! Snapshots of every view, drawn with ratatui's TestBackend from fixed
//! states. `cargo insta review` (or INSTA_UPDATE=always) accepts changes.

use crossterm::event::KeyCode;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

use super::app::tests::{code, key};
use super::app::{App, KeyMap, Msg};
use super::view;
use super::wizard::Wizard;
use crate::config::deployment::TlsFile;
use crate::deploy::plan::Role;
use crate::deploy::settings::Deployment;
use crate::monitor::tests::backend;
use crate::monitor::{ContainerInfo, Feed};
use crate::proxy::admin::CertificateView;
use crate::proxy::admin::SessionView;
use crate::proxy::backend::BackendState;
use crate::proxy::events::ProxyEvent;

/// 2026-11-26 10:00:00 UTC.
const NOW_MS: u64 = 1_795_946_400_000;

fn container(project: &str, role: Role, index: Option<u32>, state: &str, restarts: i64) -> ContainerInfo {
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
    }
}

fn deployment(project: &str) -> Deployment {
    Deployment {
        project: project.into(),
        domain: "flow.example.com".into(),
        mc_domain: "mc.flow.example.com".into(),
        instances: 3,
        http_port: 80,
        https_port: 443,
        tls: TlsFile::default(),
    }
}

fn certificate(error: Option<&str>) -> CertificateView {
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
fn running(n: u32) -> App {
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

fn draw(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| view::render(frame, app)).unwrap();
    terminal
}

fn text(app: &App, width: u16, height: u16) -> String {
    draw(app, width, height).backend().to_string()
}

#[test]
fn dashboard_with_three_instances() {
    insta::assert_snapshot!(text(&running(3), 120, 36));
}

/// The README's picture is this test's screen; it must match what the
/// dashboard draws today (FLOWGATE_UPDATE_ASSETS=1 writes it again).
#[test]
fn readme_picture() {
    let terminal = draw(&running(3), 120, 36);
    let svg = super::picture::svg(terminal.backend().buffer());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/dashboard.svg");
    if std::env::var_os("FLOWGATE_UPDATE_ASSETS").is_some() {
        std::fs::write(&path, &svg).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == svg,
        "assets/dashboard.svg is not what the dashboard draws now; run FLOWGATE_UPDATE_ASSETS=1 cargo test --lib readme_picture"
    );
}

#[test]
fn dashboard_at_80x24_drops_the_least_important_columns() {
    let screen = text(&running(3), 80, 24);
    assert!(screen.contains("HEALTH") && screen.contains("LAST HB"), "{screen}");
    assert!(!screen.contains("UPTIME") && !screen.contains("STATE"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn empty_project() {
    let mut app = App::new("empty", KeyMap::new(None).unwrap(), true);
    app.now_ms = NOW_MS;
    insta::assert_snapshot!(text(&app, 100, 24));
}

#[test]
fn unhealthy_draining_and_restarted_instances() {
    let mut app = running(4);
    let mut containers = app.state.containers.clone();
    containers[3].state = "restarting".into();
    containers[3].restarts = 2;
    app.update(Msg::Feed(Feed::Containers(containers)));
    let mut backends: Vec<_> = (1..=4)
        .map(|i| backend(&format!("prod-flow-{i}"), 2_000, 900, 3, BackendState::Healthy))
        .collect();
    backends[1].state = BackendState::Unhealthy;
    backends[1].last_heartbeat_ms_ago = Some(14_000);
    backends[2].state = BackendState::Draining;
    backends[2].last_heartbeat_ms_ago = Some(7_000);
    app.update(Msg::Feed(Feed::Backends {
        at_ms: NOW_MS + 1_000,
        backends,
    }));
    app.update(Msg::Feed(Feed::Proxy {
        at_ms: NOW_MS,
        event: ProxyEvent::BackendState {
            backend: "prod-flow-2".into(),
            state: BackendState::Unhealthy,
            reason: "503 from /api/actuator/health".into(),
        },
    }));
    app.busy = Some("scaling to 5".into());
    let terminal = draw(&app, 120, 30);
    insta::assert_snapshot!(terminal.backend().to_string());
    // Heartbeat ages are coloured against the 5 s interval.
    let buffer = terminal.backend().buffer();
    let colour_of = |needle: &str| {
        let screen = terminal.backend().to_string();
        let row = screen.lines().position(|l| l.contains(needle)).unwrap() as u16;
        let line: String = (0..buffer.area.width)
            .map(|x| buffer[(x, row)].symbol().to_string())
            .collect();
        let col = line
            .find(" 14.0s")
            .or_else(|| line.find(" 7.0s"))
            .or_else(|| line.find(" 0.4s"))
            .unwrap() as u16
            + 1;
        buffer[(col, row)].fg
    };
    assert_eq!(colour_of("prod-flow-2 "), Color::Red, "14 s is beyond 2x");
    assert_eq!(colour_of("prod-flow-3 "), Color::Yellow, "7 s is within 2x");
}

#[test]
fn certificate_failing() {
    let mut app = running(2);
    app.update(Msg::Feed(Feed::Certificates(vec![certificate(Some(
        "order refused: DNS problem: NXDOMAIN looking up A for flow.example.com; trying again in 4m",
    ))])));
    insta::assert_snapshot!("certificate_failing_header", text(&app, 120, 30));
    app.update(key('c'));
    insta::assert_snapshot!("certificate_failing_popup", text(&app, 120, 30));
}

#[test]
fn help_overlay_lists_every_key() {
    let mut app = running(3);
    app.update(key('?'));
    let screen = text(&app, 100, 30);
    for action in crate::config::deployment::KeyAction::ALL {
        let default = action.default_key();
        assert!(
            screen.contains(&format!("  {default} ")),
            "{default} missing:\n{screen}"
        );
    }
    insta::assert_snapshot!(screen);
}

#[test]
fn confirm_filter_and_count_prompts() {
    let mut app = running(3);
    app.update(key('Q'));
    insta::assert_snapshot!("confirm_down", text(&app, 100, 24));
    app.update(key('n'));
    app.update(key('/'));
    app.update(key('2'));
    insta::assert_snapshot!("filter", text(&app, 100, 24));
    app.update(code(KeyCode::Enter));
    app.update(code(KeyCode::Esc));
    app.update(key('7'));
    let screen = text(&app, 100, 24);
    assert!(screen.contains("scale to: 7_"), "{screen}");
}

#[test]
fn mc_panel_and_logs() {
    let mut app = running(2);
    app.update(key('m'));
    app.update(Msg::Mc(Ok(crate::monitor::probe::Preflight {
        status: 204,
        allow_origin: Some("https://flow.example.com".into()),
    })));
    insta::assert_snapshot!("mc_ok", text(&app, 110, 30));
    app.update(Msg::Mc(Ok(crate::monitor::probe::Preflight {
        status: 204,
        allow_origin: None,
    })));
    let screen = text(&app, 110, 30);
    assert!(screen.contains("the Flow UI cannot reach MC"), "{screen}");
    app.update(key('x'));
    app.update(key('l'));
    for n in 0..50 {
        app.update(Msg::LogLine(format!("2026-11-26 10:00:{n:02} INFO request {n}")));
    }
    insta::assert_snapshot!("logs", text(&app, 100, 20));
}

#[test]
fn doctor_panel() {
    use crate::doctor::{Check, Report, Status};
    let mut app = running(3);
    let actions = app.update(key('D'));
    assert_eq!(actions, vec![super::app::Action::RunDoctor]);
    let screen = text(&app, 120, 30);
    assert!(screen.contains("checking the deployment"), "{screen}");
    let check = |id: &'static str, status: Status, observed: &str| Check {
        id,
        rule: "the rule",
        status,
        observed: observed.into(),
        measured: None,
        fix: (status == Status::Fail).then(|| crate::doctor::rules::Fix {
            flowgate: "[service.flow.websocket] idle_timeout = \"1h\"".into(),
            traefik: "t".into(),
            nginx: "n".into(),
        }),
    };
    app.update(Msg::Doctor(Ok(Report {
        url: "https://flow.example.com".into(),
        passed: false,
        checks: vec![
            check("certificate", Status::Pass, "flow.example.com: valid, 89 days left"),
            check("instances", Status::Pass, "12 requests reached 3 instances"),
            check("idle-timeout", Status::Fail, "a silent session was closed after 3.0 s"),
            check("mc-cors", Status::Skip, "no --mc-url given"),
        ],
    })));
    insta::assert_snapshot!("doctor", text(&app, 120, 30));
    app.update(key('x'));
    assert!(!text(&app, 120, 30).contains("Doctor:"));
}

#[test]
fn no_color_draws_without_colours() {
    let mut app = running(3);
    app.color = false;
    let terminal = draw(&app, 120, 30);
    let buffer = terminal.backend().buffer();
    assert!(
        buffer
            .content()
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset),
        "a cell has a colour under NO_COLOR"
    );
}

#[test]
fn a_hundred_instances_scroll_with_the_selection() {
    let mut app = running(100);
    for _ in 0..60 {
        app.update(key('j'));
    }
    let screen = text(&app, 120, 40);
    assert!(screen.contains("prod-flow-61"), "{screen}");
    assert!(!screen.contains("prod-flow-1 "), "{screen}");
}

#[test]
fn setup_wizard() {
    let mut terminal = Terminal::new(TestBackend::new(100, 24)).unwrap();
    let wizard = Wizard::new("prod", false, true);
    terminal.draw(|frame| wizard.render(frame)).unwrap();
    insta::assert_snapshot!(terminal.backend().to_string());
}
