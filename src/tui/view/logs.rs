//! The logs popup: the selected container's log, followed live.

use ratatui::Frame;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::super::app::App;
use super::Theme;

pub(super) fn render_logs(frame: &mut Frame, app: &App, theme: &Theme) {
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
