//! The header: the project, where Flow and MC answer, the certificate and the totals.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::App;
use super::Theme;
use crate::monitor::Snapshot;

pub(super) fn render_header(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot, theme: &Theme) {
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
