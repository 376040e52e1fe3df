//! The Management Center popup: its health and the CORS check from the Flow origin.

use ratatui::Frame;
use ratatui::style::Color;
use ratatui::text::{Line, Span};

use super::super::app::App;
use super::{Theme, render_popup};
use crate::monitor::Snapshot;

pub(super) fn render_mc(frame: &mut Frame, app: &App, snap: &Snapshot, theme: &Theme) {
    let mut lines = Vec::new();
    let flow = snap.flow_url.clone().unwrap_or_else(|| "?".into());
    let configured = app
        .deployment
        .as_ref()
        .map(crate::deploy::settings::mc_env)
        .and_then(|env| {
            env.iter()
                .find_map(|e| e.strip_prefix("JAVA_OPTS=").map(str::to_string))
                .and_then(|opts| {
                    crate::config::deployment::system_property(
                        &opts,
                        crate::config::deployment::FLOW_ADDRESSES_PROPERTY,
                    )
                })
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use crate::tui::app::Msg;
    use crate::tui::app::tests::key;

    #[test]
    fn mc_panel_and_logs() {
        let mut app = running(2);
        app.update(key('m'));
        app.update(Msg::Mc(Ok(crate::monitor::probe::Preflight {
            status: 204,
            allow_origin: Some("https://flow.example.com".into()),
        })));
        insta::assert_snapshot!("mc_ok", text(&app, 110, 30));
        app.update(Msg::Mc(Ok(crate::monitor::probe::Preflight {
            status: 204,
            allow_origin: None,
        })));
        let screen = text(&app, 110, 30);
        assert!(screen.contains("the Flow UI cannot reach MC"), "{screen}");
        app.update(key('x'));
        app.update(key('l'));
        for n in 0..50 {
            app.update(Msg::LogLine(format!("2026-11-26 10:00:{n:02} INFO request {n}")));
        }
        insta::assert_snapshot!("logs", text(&app, 100, 20));
    }
}
