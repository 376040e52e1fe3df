//! Drawing the dashboard: a pure function of the [`App`]. Columns drop out
//! in order of importance on narrow terminals; colours go when NO_COLOR is set.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};

use super::app::{App, Confirm, HEARTBEAT_MS, Mode, Pane};
use crate::config::deployment::KeyAction;
use crate::monitor::{EventSource, Instance, Snapshot};

/// Styles that vanish without colour.
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }

    fn bold(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    fn selected(&self) -> Style {
        if self.color {
            Style::default().bg(Color::DarkGray).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }

    fn health(&self, health: &str) -> Style {
        self.fg(match health {
            "healthy" => Color::Green,
            "starting" | "draining" | "drained" => Color::Yellow,
            _ => Color::Red,
        })
    }

    /// Age of the last heartbeat against the interval: 1x green, 2x yellow, beyond red.
    fn heartbeat_age(&self, ms: Option<u64>) -> Style {
        match ms {
            None => Style::default(),
            Some(ms) if ms <= HEARTBEAT_MS => self.fg(Color::Green),
            Some(ms) if ms <= 2 * HEARTBEAT_MS => self.fg(Color::Yellow),
            Some(_) => self.fg(Color::Red),
        }
    }

    fn border(&self, focused: bool) -> Style {
        if focused {
            self.fg(Color::Cyan)
        } else {
            Style::default()
        }
    }
}

/// The screen's regions.
pub struct Areas {
    pub header: Rect,
    pub instances: Rect,
    pub detail: Rect,
    pub events: Rect,
    pub footer: Rect,
}

pub fn layout(area: Rect, instances: usize) -> Areas {
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(6), Constraint::Length(1)]).areas(area);
    // The table gets its rows (plus border and header) up to half the body.
    let table = (instances as u16 + 3).clamp(4, (body.height / 2).max(4));
    let [instances, bottom] = Layout::vertical([Constraint::Length(table), Constraint::Min(3)]).areas(body);
    let split = if bottom.width >= 160 { 55 } else { 50 };
    let [detail, events] =
        Layout::horizontal([Constraint::Percentage(split), Constraint::Percentage(100 - split)]).areas(bottom);
    Areas {
        header,
        instances,
        detail,
        events,
        footer,
    }
}

/// Where the instance rows are drawn (inside the border, below the header row).
pub fn rows_area(area: Rect, instances: usize) -> Rect {
    let table = layout(area, instances).instances;
    Rect {
        x: table.x + 1,
        y: table.y + 2,
        width: table.width.saturating_sub(2),
        height: table.height.saturating_sub(3),
    }
}

pub fn render(frame: &mut Frame, app: &App) {
    let theme = Theme { color: app.color };
    let snap = app.snapshot();
    let visible = app.visible(&snap);
    let areas = layout(frame.area(), visible.len());
    render_header(frame, areas.header, app, &snap, &theme);
    render_instances(frame, areas.instances, app, &visible, &theme);
    let selected = visible.get(app.selected.min(visible.len().saturating_sub(1)));
    render_detail(frame, areas.detail, app, selected, &theme);
    render_events(frame, areas.events, app, &theme);
    render_footer(frame, areas.footer, app, &theme);
    match &app.mode {
        Mode::Help => render_help(frame, app, &theme),
        Mode::Logs => render_logs(frame, app, &theme),
        Mode::Certificate => render_certificate(frame, &snap, &theme),
        Mode::Mc => render_mc(frame, app, &snap, &theme),
        Mode::Doctor => render_doctor(frame, app, &theme),
        Mode::Confirm(what) => render_confirm(frame, what, app, &theme),
        _ => {}
    }
}

fn render_header(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot, theme: &Theme) {
    let mut first = vec![
        Span::styled("flowgate", theme.bold().patch(theme.fg(Color::Cyan))),
        Span::raw(format!(" · {}", snap.project)),
    ];
    match (&snap.flow_url, &snap.mc_url) {
        (Some(flow), Some(mc)) => {
            first.push(Span::raw("  Flow "));
            first.push(Span::styled(format!("{flow}/"), theme.bold()));
            first.push(Span::raw("  MC "));
            first.push(Span::raw(format!("{mc}/")));
        }
        _ => first.push(Span::styled("  (no deployment found yet)", theme.fg(Color::Yellow))),
    }
    let certificate = match &snap.certificate {
        Some(c) => {
            let mut spans = vec![
                Span::raw("certificate "),
                Span::raw(c.info.issuer.clone()),
                Span::raw(" · "),
                Span::styled(
                    format!("{} days left", c.days_left),
                    theme.fg(if c.days_left < 7 {
                        Color::Red
                    } else if c.days_left < 21 {
                        Color::Yellow
                    } else {
                        Color::Green
                    }),
                ),
            ];
            if let Some(next) = &c.next_renewal {
                spans.push(Span::raw(format!(
                    " · renews {}",
                    next.replace('T', " ").trim_end_matches('Z')
                )));
            }
            if let Some(error) = &c.last_error {
                spans.push(Span::styled(format!(" · failing: {error}"), theme.fg(Color::Red)));
            }
            spans
        }
        None => vec![Span::styled("certificate: not known yet", theme.fg(Color::DarkGray))],
    };
    let mut second = certificate;
    if let Some(busy) = &app.busy {
        second.push(Span::styled(format!("  ⟳ {busy}"), theme.fg(Color::Yellow)));
    }
    if let Some(p) = &snap.proxy {
        if let Some(error) = &p.admin_error {
            second.push(Span::styled(format!("  proxy admin: {error}"), theme.fg(Color::Red)));
        }
    }
    let t = &snap.totals;
    let healthy_style = if t.instances > 0 && t.healthy == t.instances {
        theme.fg(Color::Green)
    } else {
        theme.fg(Color::Yellow)
    };
    let third = vec![
        Span::raw("instances "),
        Span::styled(format!("{}/{} healthy", t.healthy, t.instances), healthy_style),
        Span::raw(format!(
            " · sessions {} · heartbeats/s {:.1} · requests/s {:.1} · ",
            t.ws_active, t.heartbeats_per_s, t.rps
        )),
        Span::styled(
            format!("errors/s {:.1}", t.errors_per_s),
            if t.errors_per_s > 0.0 {
                theme.fg(Color::Red)
            } else {
                Style::default()
            },
        ),
    ];
    let text = vec![Line::from(first), Line::from(second), Line::from(third)];
    frame.render_widget(Paragraph::new(text), area);
}

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

/// The columns that fit in `width`, in display order.
fn fitting_columns(width: u16) -> Vec<usize> {
    let mut by_priority: Vec<usize> = (0..COLUMNS.len()).collect();
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

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    })
}

fn age(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => duration(ms / 1000),
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn bytes(b: Option<u64>) -> String {
    match b {
        None => "-".into(),
        Some(b) if b < 1 << 20 => format!("{} KiB", b >> 10),
        Some(b) if b < 1 << 30 => format!("{:.0} MiB", b as f64 / 1048576.0),
        Some(b) => format!("{:.1} GiB", b as f64 / 1073741824.0),
    }
}

fn cell_text(column: usize, i: &Instance, health: &str) -> String {
    match COLUMNS[column].title {
        "INSTANCE" => i.name.clone(),
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

fn render_instances(frame: &mut Frame, area: Rect, app: &App, visible: &[Instance], theme: &Theme) {
    let inner_width = area.width.saturating_sub(2);
    let columns = fitting_columns(inner_width);
    let mut title = format!(" Instances ({}) ", visible.len());
    if !app.filter.is_empty() {
        title = format!(" Instances matching '{}' ({}) ", app.filter, visible.len());
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(theme.border(app.pane == Pane::Instances));
    if visible.is_empty() {
        let text = match (&app.busy, app.filter.is_empty()) {
            (Some(busy), _) => format!("{busy}... (progress in the events pane)"),
            (None, true) => format!("No Flow instances. Press {} to add one.", app.keys.key(KeyAction::ScaleUp)),
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

fn render_detail(frame: &mut Frame, area: Rect, app: &App, selected: Option<&Instance>, theme: &Theme) {
    let title = match selected {
        Some(i) => format!(" {} ", i.name),
        None => " Instance ".into(),
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(theme.border(app.pane == Pane::Sessions));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(instance) = selected else {
        return;
    };
    let history = app.state.history.get(&instance.name);
    let points: Vec<_> = history.map(|h| h.iter().copied().collect()).unwrap_or_default();
    let charts: [(&str, String, Vec<u64>, Color); 4] = [
        (
            "req/s",
            num(instance.rps),
            points.iter().map(|p| p.rps.round() as u64).collect(),
            Color::Cyan,
        ),
        (
            "sessions",
            instance.ws_active.map_or("-".into(), |v| v.to_string()),
            points.iter().map(|p| p.sessions).collect(),
            Color::Green,
        ),
        (
            "heartbeat/s",
            num(instance.heartbeats_per_s),
            points
                .iter()
                .map(|p| (p.heartbeats_per_s * 10.0).round() as u64)
                .collect(),
            Color::Magenta,
        ),
        (
            "p99 ms",
            num(instance.p99_ms),
            points.iter().map(|p| (p.p99_ms * 10.0).round() as u64).collect(),
            Color::Yellow,
        ),
    ];
    let chart_rows = (inner.height as usize).saturating_sub(3).min(4);
    let mut constraints: Vec<Constraint> = (0..chart_rows).map(|_| Constraint::Length(1)).collect();
    constraints.push(Constraint::Min(0));
    let rows = Layout::vertical(constraints).split(inner);
    for (n, (label, value, data, color)) in charts.iter().enumerate().take(chart_rows) {
        let [text, spark] = Layout::horizontal([Constraint::Length(22), Constraint::Min(1)]).areas(rows[n]);
        frame.render_widget(Paragraph::new(format!("{label:<12}{value:>9}")), text);
        let width = spark.width as usize;
        let tail = &data[data.len().saturating_sub(width)..];
        frame.render_widget(Sparkline::default().data(tail).style(theme.fg(*color)), spark);
    }
    let sessions_area = rows[chart_rows];
    let sessions: Vec<_> = app.state.sessions_of(&instance.name).collect();
    if sessions_area.height < 2 {
        return;
    }
    if sessions.is_empty() {
        let text = match instance.ws_active {
            Some(0) | None => "no WebSocket sessions".to_string(),
            Some(n) => format!("{n} WebSocket sessions (loading...)"),
        };
        frame.render_widget(Paragraph::new(text).style(theme.fg(Color::DarkGray)), sessions_area);
        return;
    }
    let header = Row::new(["CLIENT", "AGE", "LAST HB", "FRAMES in/out"]).style(theme.bold());
    let skip = app.sessions_scroll.min(sessions.len().saturating_sub(1));
    let rows = sessions.iter().skip(skip).map(|s| {
        Row::new([
            Cell::from(s.client.clone()),
            Cell::from(duration(s.age_ms / 1000)),
            Cell::from(age(s.last_heartbeat_ms_ago)).style(theme.heartbeat_age(s.last_heartbeat_ms_ago)),
            Cell::from(format!("{}/{}", s.frames_in, s.frames_out)),
        ])
    });
    let widths = [
        Constraint::Min(15),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(13),
    ];
    frame.render_widget(Table::new(rows, widths).header(header), sessions_area);
}

fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{:02}:{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

fn render_events(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" Events (UTC) ")
        .border_style(theme.border(app.pane == Pane::Events));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = inner.height as usize;
    let events = &app.state.events;
    let end = events.len().saturating_sub(app.events_scroll.min(events.len()));
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = events
        .range(start..end)
        .map(|e| {
            let source = match e.source {
                EventSource::Docker => "docker",
                EventSource::Proxy => "proxy ",
                EventSource::Certificate => "cert  ",
                EventSource::Flowgate => "fg    ",
            };
            let style = if e.error {
                theme.fg(Color::Red)
            } else {
                Style::default()
            };
            Line::from(vec![
                Span::styled(format!("{} ", clock(e.at_ms)), theme.fg(Color::DarkGray)),
                Span::styled(format!("{source} "), theme.fg(Color::Blue)),
                Span::styled(e.text.clone(), style),
            ])
        })
        .collect();
    if lines.is_empty() {
        frame.render_widget(Paragraph::new("no events yet").style(theme.fg(Color::DarkGray)), inner);
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

fn render_footer(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let k = |action: KeyAction| app.keys.key(action);
    let line = match &app.mode {
        Mode::Filter(text) => Line::from(vec![
            Span::styled("filter: ", theme.bold()),
            Span::raw(format!("{text}_")),
            Span::styled("   Enter keep · Esc clear", theme.fg(Color::DarkGray)),
        ]),
        Mode::Count(digits) => Line::from(vec![
            Span::styled("scale to: ", theme.bold()),
            Span::raw(format!("{digits}_")),
            Span::styled("   Enter apply · Esc cancel", theme.fg(Color::DarkGray)),
        ]),
        _ => {
            // Help and quit always show, at the right; the rest as room allows.
            let right = format!("{} help · {} quit", k(KeyAction::Help), k(KeyAction::Quit));
            let [left_area, right_area] =
                Layout::horizontal([Constraint::Min(0), Constraint::Length(right.chars().count() as u16 + 1)])
                    .areas(area);
            let hints = format!(
                "{} {} scale · 0-9 count · {} restart · {} drain · {} logs · {} cert · {} MC · {} filter · Tab pane · {} down · {} doctor",
                k(KeyAction::ScaleUp),
                k(KeyAction::ScaleDown),
                k(KeyAction::Restart),
                k(KeyAction::Drain),
                k(KeyAction::Logs),
                k(KeyAction::Certificate),
                k(KeyAction::Mc),
                k(KeyAction::Filter),
                k(KeyAction::QuitDown),
                k(KeyAction::Doctor),
            );
            let hints = fit_hints(&hints, left_area.width as usize);
            frame.render_widget(
                Paragraph::new(Span::styled(hints, theme.fg(Color::DarkGray))),
                left_area,
            );
            frame.render_widget(
                Paragraph::new(Span::styled(format!(" {right}"), theme.bold())),
                right_area,
            );
            return;
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The hints (separated by " · ") that fit in `width`, whole ones only.
fn fit_hints(hints: &str, width: usize) -> String {
    let mut out = String::new();
    for hint in hints.split(" · ") {
        let extra = if out.is_empty() {
            hint.chars().count()
        } else {
            hint.chars().count() + 3
        };
        if out.chars().count() + extra > width {
            break;
        }
        if !out.is_empty() {
            out.push_str(" · ");
        }
        out.push_str(hint);
    }
    out
}

fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn render_popup(frame: &mut Frame, title: &str, lines: Vec<Line>, width: u16, theme: &Theme) {
    // Height for the lines once wrapped to the popup's inner width.
    let inner = width.min(frame.area().width).saturating_sub(2).max(1) as usize;
    let height: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let area = popup(frame.area(), width, height as u16 + 2);
    frame.render_widget(Clear, area);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {title} "))
        .border_style(theme.fg(Color::Cyan));
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}

fn render_help(frame: &mut Frame, app: &App, theme: &Theme) {
    let mut lines: Vec<Line> = KeyAction::ALL
        .iter()
        .map(|action| {
            Line::from(vec![
                Span::styled(format!("  {:<10}", app.keys.key(*action)), theme.bold()),
                Span::raw(action.what()),
            ])
        })
        .collect();
    for (keys, what) in [
        ("0-9 Enter", "set the number of instances"),
        ("j k ↑ ↓", "move (or scroll the focused pane)"),
        ("Tab", "next pane: instances, sessions, events"),
        ("mouse", "click an instance to select it"),
        ("Esc", "clear the filter, close a view"),
    ] {
        lines.push(Line::from(vec![
            Span::styled(format!("  {keys:<10}"), theme.bold()),
            Span::raw(what),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "  Keys can be changed in [keys] of flowgate.toml. Any key closes this.",
        theme.fg(Color::DarkGray),
    )));
    render_popup(frame, "Keys", lines, 74, theme);
}

fn render_logs(frame: &mut Frame, app: &App, theme: &Theme) {
    let area = frame.area();
    frame.render_widget(Clear, area);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(
            " Logs of {} (↑/↓ PgUp/PgDn scroll, any other key closes) ",
            app.logs.instance
        ))
        .border_style(theme.fg(Color::Cyan));
    let inner = block.inner(area);
    let height = inner.height as usize;
    let lines = &app.logs.lines;
    let end = lines.len().saturating_sub(app.logs.scroll);
    let start = end.saturating_sub(height);
    let text: Vec<Line> = lines.range(start..end).map(|l| Line::from(l.clone())).collect();
    let text = if text.is_empty() {
        vec![Line::from(Span::styled(
            "waiting for log lines...",
            theme.fg(Color::DarkGray),
        ))]
    } else {
        text
    };
    frame.render_widget(Paragraph::new(text).block(block), area);
}

fn render_certificate(frame: &mut Frame, snap: &Snapshot, theme: &Theme) {
    let lines = match &snap.certificate {
        None => vec![Line::from("The proxy has not reported a certificate yet.")],
        Some(c) => {
            let mut lines = vec![
                Line::from(format!("names      {}", c.info.domains.join(", "))),
                Line::from(format!("issuer     {}", c.info.issuer)),
                Line::from(format!("expires    {} ({} days left)", c.info.not_after, c.days_left)),
                Line::from(format!(
                    "renewal    {}",
                    c.next_renewal.as_deref().unwrap_or("not scheduled")
                )),
            ];
            match &c.last_error {
                Some(e) => lines.push(Line::from(Span::styled(
                    format!("last error {e}"),
                    theme.fg(Color::Red),
                ))),
                None => lines.push(Line::from(Span::styled("last error none", theme.fg(Color::Green)))),
            }
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                "`flowgate cert renew` renews now. Any key closes this.",
                theme.fg(Color::DarkGray),
            )));
            lines
        }
    };
    render_popup(frame, "Certificate", lines, 76, theme);
}

fn render_mc(frame: &mut Frame, app: &App, snap: &Snapshot, theme: &Theme) {
    let mut lines = Vec::new();
    let flow = snap.flow_url.clone().unwrap_or_else(|| "?".into());
    let configured = app
        .deployment
        .as_ref()
        .map(crate::deploy::settings::mc_env)
        .and_then(|env| {
            env.iter()
                .find_map(|e| e.strip_prefix("JAVA_OPTS=").map(str::to_string))
                .and_then(|opts| crate::config::deployment::system_property(&opts, crate::config::deployment::FLOW_ADDRESSES_PROPERTY))
        })
        .unwrap_or_else(|| "?".into());
    let matches = configured.split(',').any(|a| a.trim() == flow);
    lines.push(Line::from(format!("Flow origin                    {flow}")));
    lines.push(Line::from(vec![
        Span::raw("hazelcast.mc.flow.addresses    "),
        Span::styled(
            configured.clone(),
            theme.fg(if matches { Color::Green } else { Color::Red }),
        ),
    ]));
    if let Some(mc) = &snap.mc {
        lines.push(Line::from(format!(
            "container                      {} ({}{})",
            mc.name,
            mc.state,
            mc.health.map(|h| format!(", {}", h.as_str())).unwrap_or_default()
        )));
    }
    lines.push(Line::from(""));
    let check = match &app.mc_check {
        None => Line::from(Span::styled("preflight: checking...", theme.fg(Color::Yellow))),
        Some(Ok(p)) if p.allows(&flow) => Line::from(Span::styled(
            format!(
                "preflight OPTIONS from {flow}: {} and Access-Control-Allow-Origin matches",
                p.status
            ),
            theme.fg(Color::Green),
        )),
        Some(Ok(p)) => Line::from(Span::styled(
            format!(
                "preflight OPTIONS from {flow}: {}, Access-Control-Allow-Origin {}: the Flow UI cannot reach MC",
                p.status,
                p.allow_origin.as_deref().unwrap_or("missing")
            ),
            theme.fg(Color::Red),
        )),
        Some(Err(e)) => Line::from(Span::styled(format!("preflight failed: {e}"), theme.fg(Color::Red))),
    };
    lines.push(check);
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Any key closes this.",
        theme.fg(Color::DarkGray),
    )));
    render_popup(frame, "Management Center CORS", lines, 90, theme);
}

/// `flowgate doctor` on the deployment: one line per check, and under a
/// failure the rule and flowgate's fix (the command prints Traefik's and
/// nginx's too).
fn render_doctor(frame: &mut Frame, app: &App, theme: &Theme) {
    use crate::doctor::Status;
    let mut lines = Vec::new();
    match &app.doctor {
        None => lines.push(Line::from(Span::styled(
            format!(
                "checking the deployment against Flow's load-balancing guide (about {} s: a silent WebSocket \
                 session is watched for the idle timeout)...",
                super::DOCTOR_IDLE_WAIT.as_secs() + 5
            ),
            theme.fg(Color::Yellow),
        ))),
        Some(Err(e)) => lines.push(Line::from(Span::styled(
            format!("the doctor could not run: {e}"),
            theme.fg(Color::Red),
        ))),
        Some(Ok(report)) => {
            let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
            for check in &report.checks {
                let (mark, color) = match check.status {
                    Status::Pass => ("PASS", Color::Green),
                    Status::Fail => ("FAIL", Color::Red),
                    Status::Skip => ("SKIP", Color::DarkGray),
                };
                lines.push(Line::from(vec![
                    Span::styled(format!("{mark}  "), theme.fg(color).patch(theme.bold())),
                    Span::styled(format!("{:width$}  ", check.id), theme.bold()),
                    Span::raw(check.observed.clone()),
                ]));
                if let Some(fix) = &check.fix {
                    lines.push(Line::from(Span::styled(
                        format!("      fix: {}", fix.flowgate),
                        theme.fg(Color::Yellow),
                    )));
                }
            }
            let failed = report.checks.iter().filter(|c| c.status == Status::Fail).count();
            lines.push(Line::from(""));
            lines.push(Line::from(if failed == 0 {
                Span::styled("every rule holds", theme.fg(Color::Green))
            } else {
                Span::styled(
                    format!("{failed} rule(s) broken; `flowgate doctor` prints the Traefik and nginx fixes too"),
                    theme.fg(Color::Red),
                )
            }));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Any key closes this.",
        theme.fg(Color::DarkGray),
    )));
    render_popup(frame, "Doctor: Flow's load-balancing rules", lines, 120, theme);
}

fn render_confirm(frame: &mut Frame, what: &Confirm, app: &App, theme: &Theme) {
    let question = match what {
        Confirm::ScaleToZero => "Scale to 0 instances? Flow is unreachable until you scale up again.".to_string(),
        Confirm::Down => format!(
            "Take project {} down? Its containers and network are removed (volumes kept).",
            app.state.project
        ),
    };
    let lines = vec![
        Line::from(question),
        Line::from(""),
        Line::from(Span::styled("y: yes    any other key: no", theme.bold())),
    ];
    render_popup(frame, "Confirm", lines, 60, theme);
}
