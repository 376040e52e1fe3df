//! The footer: the key hints that fit, or the prompt being typed.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, Mode};
use super::Theme;
use crate::config::deployment::KeyAction;

pub(super) fn render_footer(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
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
pub(super) fn fit_hints(hints: &str, width: usize) -> String {
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
