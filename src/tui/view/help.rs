//! The help popup: every key and what it does.

use ratatui::Frame;
use ratatui::style::Color;
use ratatui::text::{Line, Span};

use super::super::app::App;
use super::{Theme, render_popup};
use crate::config::deployment::KeyAction;

pub(super) fn render_help(frame: &mut Frame, app: &App, theme: &Theme) {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use crate::tui::app::tests::key;

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
}
