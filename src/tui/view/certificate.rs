//! The certificate popup: names, issuer, expiry, renewal and the last error.

use ratatui::Frame;
use ratatui::style::Color;
use ratatui::text::{Line, Span};

use super::{Theme, render_popup};
use crate::monitor::Snapshot;

pub(super) fn render_certificate(frame: &mut Frame, snap: &Snapshot, theme: &Theme) {
    let lines = match &snap.certificate {
        None => vec![Line::from("The proxy has not reported a certificate yet.")],
        Some(c) => {
            let mut lines = vec![
                Line::from(format!("names      {}", c.info.domains.join(", "))),
                Line::from(format!("issuer     {}", c.info.issuer)),
                Line::from(format!("expires    {} ({} days left)", c.info.not_after, c.days_left)),
                Line::from(format!(
                    "renewal    {}",
                    c.next_renewal.as_deref().unwrap_or("not scheduled")
                )),
            ];
            match &c.last_error {
                Some(e) => lines.push(Line::from(Span::styled(
                    format!("last error {e}"),
                    theme.fg(Color::Red),
                ))),
                None => lines.push(Line::from(Span::styled("last error none", theme.fg(Color::Green)))),
            }
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                "`flowgate cert renew` renews now. Any key closes this.",
                theme.fg(Color::DarkGray),
            )));
            lines
        }
    };
    render_popup(frame, "Certificate", lines, 76, theme);
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use crate::monitor::Feed;

    use crate::tui::app::Msg;
    use crate::tui::app::tests::key;

    #[test]
    fn certificate_failing() {
        let mut app = running(2);
        app.update(Msg::Feed(Feed::Certificates(vec![certificate(Some(
            "order refused: DNS problem: NXDOMAIN looking up A for flow.example.com; trying again in 4m",
        ))])));
        insta::assert_snapshot!("certificate_failing_header", text(&app, 120, 30));
        app.update(key('c'));
        insta::assert_snapshot!("certificate_failing_popup", text(&app, 120, 30));
    }
}
