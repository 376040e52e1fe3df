//! Render time of the dashboard per frame, from fixed states with 20 and
//! 100 instances, drawn into ratatui's TestBackend (so the terminal's own
//! speed is not measured). `cargo bench --bench tui` prints a markdown table.
//! The goal is under 2 ms per frame at 100 instances.

use std::time::{Duration, Instant};

use flowgate::deploy::plan::Role;
use flowgate::monitor::{ContainerInfo, Feed};
use flowgate::proxy::admin::{BackendView, SessionView};
use flowgate::tui::app::{App, KeyMap, Msg};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn backend(id: &str, n: u64) -> BackendView {
    BackendView {
        id: id.into(),
        address: format!("{id}:9021"),
        service: "flow".into(),
        state: flowgate::proxy::backend::BackendState::Healthy,
        ejected: false,
        dynamic: true,
        active_requests: 1,
        requests_total: 1_000 * n,
        responses_5xx: 0,
        connect_failures: 0,
        retries: 0,
        ws_active: 20,
        ws_total: 25,
        ws_frames_in: 10 * n,
        ws_frames_out: 10 * n,
        ws_bytes_in: 100 * n,
        ws_bytes_out: 100 * n,
        pings: 0,
        pongs: 0,
        heartbeats_total: 4 * n,
        last_heartbeat_ms_ago: Some(1_200),
        latency_p50_ms: Some(1.2),
        latency_p99_ms: Some(8.5),
    }
}

/// A dashboard with `instances` instances, 120 s of history, 50 sessions
/// on the selected one and a full events pane.
fn app(instances: u32) -> App {
    let mut app = App::new("bench", KeyMap::new(None).unwrap(), true);
    app.now_ms = 1_795_946_400_000;
    let containers = (1..=instances)
        .map(|i| ContainerInfo {
            name: format!("bench-flow-{i}"),
            role: Role::Flow,
            index: Some(i),
            state: "running".into(),
            started_at: Some(1_795_940_000),
            restarts: 0,
            node: None,
            address: None,
        })
        .collect();
    app.update(Msg::Feed(Feed::Containers(containers)));
    for second in 0..121u64 {
        let backends = (1..=instances)
            .map(|i| backend(&format!("bench-flow-{i}"), second + u64::from(i)))
            .collect();
        app.update(Msg::Feed(Feed::Backends {
            at_ms: app.now_ms - (120 - second) * 1000,
            backends,
        }));
        app.update(Msg::Feed(Feed::Note {
            at_ms: app.now_ms,
            text: format!("event {second}: bench-flow-1 is healthy"),
            error: false,
        }));
    }
    app.update(Msg::Feed(Feed::Sessions(
        (0..50)
            .map(|s| SessionView {
                id: s,
                backend: "bench-flow-1".into(),
                client: format!("192.0.2.{s}:40000"),
                age_ms: 60_000,
                frames_in: 12,
                frames_out: 12,
                bytes_in: 0,
                bytes_out: 0,
                heartbeats: 12,
                last_heartbeat_ms_ago: Some(2_000),
            })
            .collect(),
    )));
    app
}

fn measure(instances: u32, width: u16, height: u16) -> (f64, f64) {
    let app = app(instances);
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let mut times = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && times.len() < 20_000 {
        let started = Instant::now();
        terminal.draw(|frame| flowgate::tui::view::render(frame, &app)).unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    (mean, times[times.len() * 99 / 100])
}

fn main() {
    // `cargo test --all-targets` runs this too (without --bench): one frame each, as a smoke test.
    if !std::env::args().any(|a| a == "--bench") {
        for instances in [20, 100] {
            let app = app(instances);
            let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
            terminal.draw(|frame| flowgate::tui::view::render(frame, &app)).unwrap();
        }
        return;
    }
    println!("| instances | terminal | mean ms/frame | p99 ms/frame |");
    println!("|---:|---|---:|---:|");
    for (instances, width, height) in [(20, 120, 40), (100, 120, 40), (100, 240, 70)] {
        let (mean, p99) = measure(instances, width, height);
        println!("| {instances} | {width}x{height} | {mean:.3} | {p99:.3} |");
    }
}
