//! The doctor popup: one line per check, and under a failure the rule and flowgate's fix.

use ratatui::Frame;
use ratatui::style::Color;
use ratatui::text::{Line, Span};

use super::super::app::App;
use super::{Theme, render_popup};

/// `flowgate doctor` on the deployment: one line per check, and under a
/// failure the rule and flowgate's fix (the command prints Traefik's and
/// nginx's too).
pub(super) fn render_doctor(frame: &mut Frame, app: &App, theme: &Theme) {
    use crate::doctor::Status;
    let mut lines = Vec::new();
    match &app.doctor {
        None => lines.push(Line::from(Span::styled(
            format!(
                "checking the deployment against Flow's load-balancing guide (about {} s: a silent WebSocket \
                 session is watched for the idle timeout)...",
                crate::tui::DOCTOR_IDLE_WAIT.as_secs() + 5
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use crate::tui::app::Msg;
    use crate::tui::app::tests::key;

    #[test]
    fn doctor_panel() {
        use crate::doctor::{Check, Report, Status};
        let mut app = running(3);
        let actions = app.update(key('D'));
        assert_eq!(actions, vec![crate::tui::app::Action::RunDoctor]);
        let screen = text(&app, 120, 30);
        assert!(screen.contains("checking the deployment"), "{screen}");
        let check = |id: &'static str, status: Status, observed: &str| Check {
            id,
            rule: "the rule",
            status,
            observed: observed.into(),
            measured: None,
            fix: (status == Status::Fail).then(|| crate::doctor::rules::Fix {
                flowgate: "[service.flow.websocket] idle_timeout = \"1h\"".into(),
                traefik: "t".into(),
                nginx: "n".into(),
            }),
        };
        app.update(Msg::Doctor(Ok(Report {
            url: "https://flow.example.com".into(),
            passed: false,
            checks: vec![
                check("certificate", Status::Pass, "flow.example.com: valid, 89 days left"),
                check("instances", Status::Pass, "12 requests reached 3 instances"),
                check("idle-timeout", Status::Fail, "a silent session was closed after 3.0 s"),
                check("mc-cors", Status::Skip, "no --mc-url given"),
            ],
        })));
        insta::assert_snapshot!("doctor", text(&app, 120, 30));
        app.update(key('x'));
        assert!(!text(&app, 120, 30).contains("Doctor:"));
    }
}
