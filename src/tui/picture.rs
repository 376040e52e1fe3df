//! The README's picture of the dashboard: a terminal buffer drawn by the
//! same code and test data as the snapshot tests, written as SVG (one
//! `<text>` run per stretch of equal style). `screens::readme_picture`
//! checks `assets/dashboard.svg` against it, so the picture never goes
//! stale; `FLOWGATE_UPDATE_ASSETS=1 cargo test --lib readme_picture`
//! writes it again.

use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};

const CELL_W: f32 = 8.4;
const CELL_H: f32 = 17.0;
const BACKGROUND: &str = "#1e1e2e";
const FOREGROUND: &str = "#cdd6f4";

/// The colours of a dark terminal theme.
fn hex(color: Color, default: &'static str) -> &'static str {
    match color {
        Color::Black => "#45475a",
        Color::Red | Color::LightRed => "#f38ba8",
        Color::Green | Color::LightGreen => "#a6e3a1",
        Color::Yellow | Color::LightYellow => "#f9e2af",
        Color::Blue | Color::LightBlue => "#89b4fa",
        Color::Magenta | Color::LightMagenta => "#f5c2e7",
        Color::Cyan | Color::LightCyan => "#94e2d5",
        Color::Gray => "#a6adc8",
        Color::DarkGray => "#585b70",
        Color::White => "#ffffff",
        _ => default,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The buffer as an SVG image.
pub fn svg(buffer: &Buffer) -> String {
    let area = buffer.area;
    let width = f32::from(area.width) * CELL_W;
    let height = f32::from(area.height) * CELL_H;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" \
         font-size=\"14\" xml:space=\"preserve\">\n<rect width=\"100%\" height=\"100%\" fill=\"{BACKGROUND}\"/>\n"
    );
    for y in 0..area.height {
        let mut x = 0;
        while x < area.width {
            let first = &buffer[(x, y)];
            let style = (first.fg, first.bg, first.modifier);
            let start = x;
            let mut text = String::new();
            while x < area.width {
                let cell = &buffer[(x, y)];
                if (cell.fg, cell.bg, cell.modifier) != style {
                    break;
                }
                text.push_str(cell.symbol());
                x += 1;
            }
            let (fg, bg, modifier) = style;
            let reversed = modifier.contains(Modifier::REVERSED);
            let (fg, bg) = if reversed {
                (hex(bg, BACKGROUND), hex(fg, FOREGROUND))
            } else {
                (hex(fg, FOREGROUND), hex(bg, BACKGROUND))
            };
            let left = f32::from(start) * CELL_W;
            let top = f32::from(y) * CELL_H;
            if bg != BACKGROUND {
                let w = f32::from(x - start) * CELL_W;
                out.push_str(&format!(
                    "<rect x=\"{left:.1}\" y=\"{top:.0}\" width=\"{w:.1}\" height=\"{CELL_H:.0}\" fill=\"{bg}\"/>\n"
                ));
            }
            if text.trim().is_empty() {
                continue;
            }
            let weight = if modifier.contains(Modifier::BOLD) {
                " font-weight=\"bold\""
            } else {
                ""
            };
            out.push_str(&format!(
                "<text x=\"{left:.1}\" y=\"{:.0}\" fill=\"{fg}\"{weight} textLength=\"{:.1}\">{}</text>\n",
                top + CELL_H * 0.78,
                f32::from(x - start) * CELL_W,
                escape(&text)
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}
