//! The confirmation popups (scale to zero, take the deployment down).

use ratatui::Frame;
use ratatui::text::{Line, Span};

use super::super::app::{App, Confirm};
use super::{Theme, render_popup};

pub(super) fn render_confirm(frame: &mut Frame, what: &Confirm, app: &App, theme: &Theme) {
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

#[cfg(test)]
mod tests {
    use crossterm::event::KeyCode;

    use super::super::fixtures::*;
    use crate::tui::app::tests::{code, key};

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
}
