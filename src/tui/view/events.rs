//! The events pane: Docker, the proxy, certificates and flowgate's own work, newest last.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::super::app::{App, Pane};
use super::Theme;
use crate::monitor::EventSource;

pub(super) fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{:02}:{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

pub(super) fn render_events(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
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
