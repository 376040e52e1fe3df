//! The selected instance: its charts and its WebSocket sessions.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table};

use super::super::app::{App, Pane};
use super::{Theme, age, duration, num};
use crate::monitor::Instance;

pub(super) fn render_detail(frame: &mut Frame, area: Rect, app: &App, selected: Option<&Instance>, theme: &Theme) {
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
