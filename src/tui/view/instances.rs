//! The instances table: one row per Flow instance; columns drop out in order of importance on narrow terminals.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use super::super::app::{App, Pane};
use super::{Theme, age, bytes, duration, num, rows_area};
use crate::config::deployment::KeyAction;
use crate::monitor::Instance;

/// A column of the instances table.
struct Column {
    title: &'static str,
    width: u16,
    /// Lower is more important: kept first on narrow screens.
    priority: u8,
}

const COLUMNS: &[Column] = &[
    Column {
        title: "INSTANCE",
        width: 16,
        priority: 0,
    },
    Column {
        title: "NODE",
        width: 14,
        priority: 3,
    },
    Column {
        title: "STATE",
        width: 10,
        priority: 12,
    },
    Column {
        title: "HEALTH",
        width: 9,
        priority: 1,
    },
    Column {
        title: "UPTIME",
        width: 7,
        priority: 11,
    },
    Column {
        title: "WS",
        width: 6,
        priority: 2,
    },
    Column {
        title: "HB/s",
        width: 6,
        priority: 4,
    },
    Column {
        title: "LAST HB",
        width: 7,
        priority: 3,
    },
    Column {
        title: "REQ/s",
        width: 7,
        priority: 5,
    },
    Column {
        title: "P50ms",
        width: 7,
        priority: 10,
    },
    Column {
        title: "P99ms",
        width: 7,
        priority: 6,
    },
    Column {
        title: "CPU%",
        width: 6,
        priority: 7,
    },
    Column {
        title: "MEM",
        width: 8,
        priority: 8,
    },
    Column {
        title: "RESTARTS",
        width: 8,
        priority: 9,
    },
];

/// The columns that fit in `width`, in display order; NODE only on Swarm.
pub(super) fn fitting_columns(width: u16, swarm: bool) -> Vec<usize> {
    let mut by_priority: Vec<usize> = (0..COLUMNS.len())
        .filter(|&i| swarm || COLUMNS[i].title != "NODE")
        .collect();
    by_priority.sort_by_key(|&i| COLUMNS[i].priority);
    let mut used = 0;
    let mut chosen = Vec::new();
    for i in by_priority {
        let w = COLUMNS[i].width + 1;
        if used + w <= width {
            used += w;
            chosen.push(i);
        }
    }
    chosen.sort();
    chosen
}

pub(super) fn cell_text(column: usize, i: &Instance, health: &str) -> String {
    match COLUMNS[column].title {
        "INSTANCE" => i.name.clone(),
        "NODE" => i.node.clone().unwrap_or_else(|| "-".into()),
        "STATE" => i.state.clone(),
        "HEALTH" => health.to_string(),
        "UPTIME" => i.uptime_s.map_or("-".into(), duration),
        "WS" => i.ws_active.map_or("-".into(), |v| v.to_string()),
        "HB/s" => num(i.heartbeats_per_s),
        "LAST HB" => age(i.last_heartbeat_ms_ago),
        "REQ/s" => num(i.rps),
        "P50ms" => num(i.p50_ms),
        "P99ms" => num(i.p99_ms),
        "CPU%" => num(i.cpu_percent),
        "MEM" => bytes(i.memory_bytes),
        "RESTARTS" => i.restarts.map_or("-".into(), |r| r.to_string()),
        _ => String::new(),
    }
}

pub(super) fn render_instances(frame: &mut Frame, area: Rect, app: &App, visible: &[Instance], theme: &Theme) {
    let inner_width = area.width.saturating_sub(2);
    let nodes = &app.state.nodes;
    let columns = fitting_columns(inner_width, !nodes.is_empty());
    let mut title = format!(" Instances ({}) ", visible.len());
    if !app.filter.is_empty() {
        title = format!(" Instances matching '{}' ({}) ", app.filter, visible.len());
    }
    let mut block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(theme.border(app.pane == Pane::Instances));
    if !nodes.is_empty() {
        // The swarm's nodes: name, state (and availability unless active), tasks.
        let summary: Vec<String> = nodes
            .iter()
            .map(|n| {
                let mut state = n.state.clone();
                if n.availability != "active" {
                    state = format!("{state}, {}", n.availability);
                }
                format!("{} {state} {} tasks", n.name, n.tasks)
            })
            .collect();
        let down = nodes.iter().any(|n| n.state != "ready");
        let style = if down { theme.fg(Color::Red) } else { Style::default() };
        block = block.title_bottom(ratatui::text::Line::styled(
            format!(" nodes: {} ", summary.join(" · ")),
            style,
        ));
    }
    if visible.is_empty() {
        let text = match (&app.busy, app.filter.is_empty()) {
            (Some(busy), _) => format!("{busy}... (progress in the events pane)"),
            (None, true) => format!(
                "No Flow instances. Press {} to add one.",
                app.keys.key(KeyAction::ScaleUp)
            ),
            (None, false) => "No instance matches the filter (Esc clears it).".to_string(),
        };
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let header = Row::new(columns.iter().map(|&c| Cell::from(COLUMNS[c].title))).style(theme.bold());
    let rows_height = area.height.saturating_sub(3) as usize;
    let selected = app.selected.min(visible.len() - 1);
    let offset = if rows_height == 0 {
        0
    } else {
        selected.saturating_sub(rows_height - 1)
    };
    let rows = visible.iter().enumerate().skip(offset).take(rows_height).map(|(n, i)| {
        let health = if app.drained.contains(&i.name) && i.health != crate::monitor::Health::Healthy {
            "drained"
        } else {
            i.health.as_str()
        };
        let cells = columns.iter().map(|&c| {
            let text = cell_text(c, i, health);
            let style = match COLUMNS[c].title {
                "HEALTH" => theme.health(health),
                "LAST HB" => theme.heartbeat_age(i.last_heartbeat_ms_ago),
                "RESTARTS" if i.restarts.unwrap_or(0) > 0 => theme.fg(Color::Yellow),
                _ => Style::default(),
            };
            Cell::from(text).style(style)
        });
        let row = Row::new(cells);
        if n == selected {
            row.style(theme.selected())
        } else {
            row
        }
    });
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|&c| {
            if COLUMNS[c].title == "INSTANCE" {
                Constraint::Min(COLUMNS[c].width)
            } else {
                Constraint::Length(COLUMNS[c].width)
            }
        })
        .collect();
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

/// Offset of the instances table's first shown row for the current selection.
pub fn rows_offset(area: Rect, app: &App, visible: usize) -> usize {
    let rows_height = rows_area(area, visible).height as usize;
    if rows_height == 0 || visible == 0 {
        return 0;
    }
    app.selected.min(visible - 1).saturating_sub(rows_height - 1)
}

#[cfg(test)]
mod tests {
    use ratatui::style::Color;

    use super::super::fixtures::*;
    use crate::monitor::Feed;
    use crate::monitor::tests::backend;
    use crate::proxy::backend::BackendState;
    use crate::proxy::events::ProxyEvent;
    use crate::tui::app::Msg;
    use crate::tui::app::tests::key;

    #[test]
    fn dashboard_at_80x24_drops_the_least_important_columns() {
        let screen = text(&running(3), 80, 24);
        assert!(screen.contains("HEALTH") && screen.contains("LAST HB"), "{screen}");
        assert!(!screen.contains("UPTIME") && !screen.contains("STATE"), "{screen}");
        insta::assert_snapshot!(screen);
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
    fn on_swarm_each_instance_shows_its_node_and_the_nodes_are_summed_up() {
        let mut app = running(3);
        let mut containers = app.state.containers.clone();
        let mut flows = 0;
        for c in containers
            .iter_mut()
            .filter(|c| c.role == crate::deploy::plan::Role::Flow)
        {
            flows += 1;
            c.node = Some(if flows % 2 == 1 { "edge-1" } else { "worker-2" }.into());
            c.address = Some(format!("10.0.1.{flows}:9021"));
        }
        app.update(Msg::Feed(Feed::Containers(containers)));
        let node = |name: &str, state: &str, tasks: u32| crate::deploy::swarm::NodeView {
            id: name.into(),
            name: name.into(),
            state: state.into(),
            availability: "active".into(),
            manager: name == "edge-1",
            tasks,
            cpus: 2.0,
            memory_bytes: 4 << 30,
        };
        app.update(Msg::Feed(Feed::Nodes(vec![
            node("edge-1", "ready", 4),
            node("worker-2", "down", 1),
        ])));
        // The proxy names found tasks by address: they show under the instance's name.
        app.update(Msg::Feed(Feed::Backends {
            at_ms: NOW_MS + 2_000,
            backends: vec![backend("10.0.1.2:9021", 10, 5, 7, BackendState::Healthy)],
        }));
        let screen = text(&app, 120, 30);
        assert!(screen.contains("NODE"), "{screen}");
        let row = screen.lines().find(|l| l.contains("prod-flow-2")).unwrap();
        assert!(row.contains("worker-2") && row.contains(" 7 "), "{row}");
        assert!(
            screen.contains("nodes: edge-1 ready 4 tasks · worker-2 down 1 tasks"),
            "{screen}"
        );
        // One engine: no NODE column.
        assert!(!text(&running(3), 120, 30).contains("NODE"));
    }
}
