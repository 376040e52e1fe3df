//! Drawing the dashboard: a pure function of the [`App`], one file per
//! panel (each with its snapshot tests beside it). This file lays the
//! screen out and holds what the panels share: the theme (colours go when
//! NO_COLOR is set), number formats and popups.

mod certificate;
mod confirm;
mod detail;
mod doctor;
mod events;
mod footer;
mod header;
mod help;
mod instances;
mod logs;
mod mc;

#[cfg(test)]
pub(super) mod fixtures;

pub use instances::rows_offset;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::app::{App, HEARTBEAT_MS, Mode};

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
    header::render_header(frame, areas.header, app, &snap, &theme);
    instances::render_instances(frame, areas.instances, app, &visible, &theme);
    let selected = visible.get(app.selected.min(visible.len().saturating_sub(1)));
    detail::render_detail(frame, areas.detail, app, selected, &theme);
    events::render_events(frame, areas.events, app, &theme);
    footer::render_footer(frame, areas.footer, app, &theme);
    match &app.mode {
        Mode::Help => help::render_help(frame, app, &theme),
        Mode::Logs => logs::render_logs(frame, app, &theme),
        Mode::Certificate => certificate::render_certificate(frame, &snap, &theme),
        Mode::Mc => mc::render_mc(frame, app, &snap, &theme),
        Mode::Doctor => doctor::render_doctor(frame, app, &theme),
        Mode::Confirm(what) => confirm::render_confirm(frame, what, app, &theme),
        _ => {}
    }
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

#[cfg(test)]
mod tests {
    use ratatui::style::Color;

    use super::fixtures::*;
    use crate::tui::app::{App, KeyMap};

    #[test]
    fn dashboard_with_three_instances() {
        insta::assert_snapshot!(text(&running(3), 120, 36));
    }

    /// The README's picture is this test's screen; it must match what the
    /// dashboard draws today (FLOWGATE_UPDATE_ASSETS=1 writes it again).
    #[test]
    fn readme_picture() {
        let terminal = draw(&running(3), 120, 36);
        let svg = crate::tui::picture::svg(terminal.backend().buffer());
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
    fn empty_project() {
        let mut app = App::new("empty", KeyMap::new(None).unwrap(), true);
        app.now_ms = NOW_MS;
        insta::assert_snapshot!(text(&app, 100, 24));
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
}
