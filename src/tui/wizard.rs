//! First run: a form for the deployment's settings. It checks each value as
//! an operator would want (host names, ports, the licence for the real
//! profile, an e-mail for ACME, readable certificate files) and gives back
//! the flowgate.toml to write.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::config::deployment::{CertMode, DeploymentFile, Profile, Setting, TlsFile};
use crate::deploy::settings::Deployment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Domain,
    McDomain,
    Instances,
    Profile,
    Engine,
    Tag,
    Certificate,
    Email,
    CertFile,
    KeyFile,
    HttpPort,
    HttpsPort,
    Create,
}

impl Field {
    /// The form's field for a setting the deployment's rules name.
    fn of(setting: Setting) -> Field {
        match setting {
            Setting::Project | Setting::Domain => Field::Domain,
            Setting::McDomain => Field::McDomain,
            Setting::Instances => Field::Instances,
            Setting::HttpPort => Field::HttpPort,
            Setting::HttpsPort => Field::HttpsPort,
            Setting::Email => Field::Email,
            Setting::Cert => Field::CertFile,
            Setting::Key => Field::KeyFile,
        }
    }
}

const FIELDS: [Field; 13] = [
    Field::Domain,
    Field::McDomain,
    Field::Instances,
    Field::Profile,
    Field::Engine,
    Field::Tag,
    Field::Certificate,
    Field::Email,
    Field::CertFile,
    Field::KeyFile,
    Field::HttpPort,
    Field::HttpsPort,
    Field::Create,
];

const PROFILES: [&str; 2] = ["demo", "real"];
const ENGINES: [&str; 2] = ["single", "swarm"];

pub enum Outcome {
    Continue,
    Cancel,
    Done(Box<DeploymentFile>),
}

#[derive(Debug, Clone)]
pub struct Wizard {
    pub project: String,
    pub domain: String,
    pub mc_domain: String,
    pub instances: String,
    pub profile: usize,
    /// Tag of the Hazelcast images (real profile).
    pub tag: String,
    pub certificate: usize,
    pub email: String,
    pub cert: String,
    pub key: String,
    pub http_port: String,
    pub https_port: String,
    pub focus: usize,
    pub error: Option<(Field, String)>,
    /// Whether MC_LICENSE was found (environment or ./.env).
    pub license_found: bool,
    /// Whether the engine is a Swarm manager: only then is the engine asked.
    pub swarm_manager: bool,
    /// 0: one engine, 1: Swarm services.
    pub engine: usize,
    pub color: bool,
}

impl Wizard {
    pub fn new(project: &str, license_found: bool, swarm_manager: bool, color: bool) -> Wizard {
        Wizard {
            project: project.into(),
            domain: "flow.localhost".into(),
            mc_domain: String::new(),
            instances: "3".into(),
            profile: 0,
            tag: "latest".into(),
            certificate: 0,
            email: String::new(),
            cert: String::new(),
            key: String::new(),
            http_port: "8080".into(),
            https_port: "8443".into(),
            focus: 0,
            error: None,
            license_found,
            swarm_manager,
            engine: 0,
            color,
        }
    }

    fn mode(&self) -> CertMode {
        CertMode::ALL[self.certificate]
    }

    /// Whether a field applies to the choices made so far.
    fn applies(&self, field: Field) -> bool {
        match field {
            Field::Email => matches!(self.mode(), CertMode::AcmeStaging | CertMode::AcmeProduction),
            Field::CertFile | Field::KeyFile => self.mode() == CertMode::Files,
            Field::Tag => self.profile == 1,
            Field::Engine => self.swarm_manager,
            _ => true,
        }
    }

    fn field(&self) -> Field {
        FIELDS[self.focus]
    }

    fn text_mut(&mut self, field: Field) -> Option<&mut String> {
        Some(match field {
            Field::Domain => &mut self.domain,
            Field::McDomain => &mut self.mc_domain,
            Field::Instances => &mut self.instances,
            Field::Tag => &mut self.tag,
            Field::Email => &mut self.email,
            Field::CertFile => &mut self.cert,
            Field::KeyFile => &mut self.key,
            Field::HttpPort => &mut self.http_port,
            Field::HttpsPort => &mut self.https_port,
            _ => return None,
        })
    }

    fn step(&mut self, delta: isize) {
        let n = FIELDS.len() as isize;
        let mut i = self.focus as isize;
        loop {
            i = (i + delta).rem_euclid(n);
            if self.applies(FIELDS[i as usize]) {
                break;
            }
        }
        self.focus = i as usize;
    }

    fn cycle(&mut self, delta: isize) {
        match self.field() {
            Field::Profile => {
                self.profile = (self.profile as isize + delta).rem_euclid(PROFILES.len() as isize) as usize
            }
            Field::Certificate => {
                self.certificate = (self.certificate as isize + delta).rem_euclid(CertMode::ALL.len() as isize) as usize
            }
            Field::Engine => self.engine = (self.engine as isize + delta).rem_euclid(ENGINES.len() as isize) as usize,
            _ => {}
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Outcome {
        if key.kind != KeyEventKind::Press {
            return Outcome::Continue;
        }
        if key.code == KeyCode::Esc || (key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c'))
        {
            return Outcome::Cancel;
        }
        match key.code {
            KeyCode::Tab | KeyCode::Down => self.step(1),
            KeyCode::BackTab | KeyCode::Up => self.step(-1),
            KeyCode::Left => self.cycle(-1),
            KeyCode::Right | KeyCode::Char(' ')
                if matches!(self.field(), Field::Profile | Field::Certificate | Field::Engine) =>
            {
                self.cycle(1)
            }
            KeyCode::Enter if self.field() == Field::Create => match self.validate() {
                Ok(file) => return Outcome::Done(Box::new(file)),
                Err((field, message)) => {
                    self.focus = FIELDS.iter().position(|f| *f == field).unwrap_or(0);
                    self.error = Some((field, message));
                }
            },
            KeyCode::Enter => self.step(1),
            KeyCode::Backspace => {
                let field = self.field();
                if let Some(text) = self.text_mut(field) {
                    text.pop();
                }
            }
            KeyCode::Char(c) => {
                let field = self.field();
                if let Some(text) = self.text_mut(field) {
                    text.push(c);
                }
            }
            _ => {}
        }
        Outcome::Continue
    }

    /// The settings, or the first field that is wrong and why: what the
    /// form alone knows (numbers, the tag, the licence, readable files),
    /// then every rule of [`Deployment::validate`].
    pub fn validate(&self) -> Result<DeploymentFile, (Field, String)> {
        let domain = self.domain.trim().to_string();
        let mc_domain = match self.mc_domain.trim() {
            "" => format!("mc.{domain}"),
            other => other.to_string(),
        };
        let instances: u32 = self
            .instances
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=crate::config::deployment::MAX_INSTANCES).contains(n))
            .ok_or((Field::Instances, "a number from 1 to 100".to_string()))?;
        let profile = if self.profile == 1 {
            Profile::Real
        } else {
            Profile::Demo
        };
        let tag = self.tag.trim().to_string();
        if profile == Profile::Real
            && (tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err((Field::Tag, "an image tag such as latest or 6.0".into()));
        }
        if profile == Profile::Real && !self.license_found {
            return Err((
                Field::Profile,
                "the real profile needs MC_LICENSE (environment or ./.env); choose demo or set it and restart".into(),
            ));
        }
        let port = |text: &str, field: Field| {
            text.trim()
                .parse::<u16>()
                .ok()
                .ok_or((field, "a port from 1 to 65535".to_string()))
        };
        let http_port = port(&self.http_port, Field::HttpPort)?;
        let https_port = port(&self.https_port, Field::HttpsPort)?;
        let mode = self.mode();
        let email = self.email.trim().to_string();
        let (mut cert, mut key) = (None, None);
        if mode == CertMode::Files {
            for (text, field, slot) in [
                (&self.cert, Field::CertFile, &mut cert),
                (&self.key, Field::KeyFile, &mut key),
            ] {
                let path = PathBuf::from(text.trim());
                let path = std::path::absolute(&path).unwrap_or(path);
                if text.trim().is_empty() || std::fs::File::open(&path).is_err() {
                    return Err((field, format!("cannot read '{}'", path.display())));
                }
                *slot = Some(path);
            }
        }
        let tls = TlsFile {
            mode,
            email: (!email.is_empty()).then_some(email),
            cert,
            key,
        };
        let engine = if self.swarm_manager && self.engine == 1 {
            crate::config::deployment::Engine::Swarm
        } else {
            crate::config::deployment::Engine::Single
        };
        // Swarm publishes on every address of the proxy's node; choosing it here says so.
        let bind = (engine == crate::config::deployment::Engine::Swarm)
            .then_some(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let deployment = Deployment {
            project: self.project.clone(),
            domain: domain.clone(),
            mc_domain: mc_domain.clone(),
            instances,
            http_port,
            https_port,
            tls: tls.clone(),
            bind,
            resources: Default::default(),
            rebalance: Default::default(),
            engine,
        };
        deployment
            .validate()
            .map_err(|e| (Field::of(e.setting()), e.to_string()))?;
        Ok(DeploymentFile {
            path: None,
            project: Some(self.project.clone()),
            profile: Some(profile),
            domain: Some(domain),
            mc_domain: Some(mc_domain),
            instances: Some(instances),
            http_port: Some(http_port),
            https_port: Some(https_port),
            tag: (profile == Profile::Real).then_some(tag),
            mc_license: None,
            tls: Some(tls),
            bind,
            resources: Default::default(),
            rebalance: Default::default(),
            engine: (engine == crate::config::deployment::Engine::Swarm).then_some(engine),
            keys: Default::default(),
        })
    }

    pub fn render(&self, frame: &mut Frame) {
        let fg = |c: Color| {
            if self.color {
                Style::default().fg(c)
            } else {
                Style::default()
            }
        };
        let area = frame.area();
        let width = area.width.min(88);
        let area = Rect {
            x: area.x + (area.width - width) / 2,
            width,
            ..area
        };
        let block = Block::default()
            .borders(Borders::ALL)
            .title(format!(" flowgate setup · project {} ", self.project))
            .border_style(fg(Color::Cyan));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let [intro, form, help] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Length(FIELDS.len() as u16 + 2),
            Constraint::Min(0),
        ])
        .areas(inner);
        frame.render_widget(
            Paragraph::new(
                "No deployment yet. Choose its settings; they are saved to flowgate.toml (commented, \
                 edit it later) and the deployment starts.",
            )
            .wrap(Wrap { trim: true }),
            intro,
        );
        let mut lines = Vec::new();
        for (i, field) in FIELDS.iter().enumerate() {
            // Not a question on an engine that is no Swarm manager.
            if *field == Field::Engine && !self.swarm_manager {
                continue;
            }
            let focused = i == self.focus;
            let applies = self.applies(*field);
            let (label, value) = self.describe(*field);
            let marker = if focused { "› " } else { "  " };
            let label_style = if !applies {
                fg(Color::DarkGray)
            } else if focused {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            let value_style = if focused {
                if self.color {
                    Style::default().bg(Color::DarkGray).add_modifier(Modifier::BOLD)
                } else {
                    Style::default().add_modifier(Modifier::REVERSED)
                }
            } else if !applies {
                fg(Color::DarkGray)
            } else {
                Style::default()
            };
            if *field == Field::Create {
                lines.push(Line::from(""));
                lines.push(Line::from(vec![
                    Span::raw(marker),
                    Span::styled("[ Create and start ]", value_style),
                ]));
                continue;
            }
            let mut spans = vec![
                Span::raw(marker),
                Span::styled(format!("{label:<22}"), label_style),
                Span::styled(value, value_style),
            ];
            if let Some((bad, message)) = &self.error {
                if bad == field {
                    spans.push(Span::styled(format!("  ✗ {message}"), fg(Color::Red)));
                }
            }
            lines.push(Line::from(spans));
        }
        frame.render_widget(Paragraph::new(lines), form);
        let hint = match self.field() {
            Field::Domain => "The host name browsers use for Flow; the certificate is issued for it.",
            Field::McDomain => "Management Center's own host name [empty: mc.<Flow domain>].",
            Field::Instances => "How many Flow servers run behind the proxy (+/- in the dashboard later).",
            Field::Profile => "demo: flowgate's simulators, no registry or licence. real: the Hazelcast images.",
            Field::Tag => "Tag of hazelcast/hazelcast-flow and hazelcast/management-center-flow.",
            Field::Engine => {
                "single: containers on this engine. swarm: services over the swarm's nodes; the ports open on every address of the proxy's node."
            }
            Field::Certificate => {
                "self-signed: a local CA (trust its ca.pem). acme-*: Let's Encrypt for public names. files: your own."
            }
            Field::Email => "Let's Encrypt's contact for expiry notices.",
            Field::CertFile => "PEM chain, server certificate first.",
            Field::KeyFile => "PEM private key of that certificate.",
            Field::HttpPort | Field::HttpsPort => "Host ports the proxy publishes (80/443 in production).",
            Field::Create => "Writes flowgate.toml and starts the deployment.",
        };
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(Span::styled(hint, fg(Color::Yellow))),
                Line::from(""),
                Line::from(Span::styled(
                    "↑/↓ Tab move · ←/→ Space choose · type to edit · Enter next · Esc quit",
                    fg(Color::DarkGray),
                )),
            ])
            .wrap(Wrap { trim: true }),
            help,
        );
    }

    fn describe(&self, field: Field) -> (&'static str, String) {
        let choice = |options: &[&str], chosen: usize| {
            options
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    if i == chosen {
                        format!("[{o}]")
                    } else {
                        format!(" {o} ")
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        match field {
            Field::Domain => ("Flow domain", self.domain.clone()),
            Field::McDomain => (
                "MC domain",
                if self.mc_domain.is_empty() {
                    format!("mc.{}", self.domain.trim())
                } else {
                    self.mc_domain.clone()
                },
            ),
            Field::Instances => ("Flow instances", self.instances.clone()),
            Field::Profile => ("Profile", choice(&PROFILES, self.profile)),
            Field::Tag => ("Hazelcast image tag", self.tag.clone()),
            Field::Engine => ("Engine", choice(&ENGINES, self.engine)),
            Field::Certificate => (
                "Certificate",
                choice(&CertMode::ALL.map(CertMode::as_str), self.certificate),
            ),
            Field::Email => ("ACME e-mail", self.email.clone()),
            Field::CertFile => ("Certificate file", self.cert.clone()),
            Field::KeyFile => ("Key file", self.key.clone()),
            Field::HttpPort => ("HTTP port", self.http_port.clone()),
            Field::HttpsPort => ("HTTPS port", self.https_port.clone()),
            Field::Create => ("", String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(w: &mut Wizard, code: KeyCode) -> Outcome {
        w.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn type_text(w: &mut Wizard, text: &str) {
        for c in text.chars() {
            press(w, KeyCode::Char(c));
        }
    }

    #[test]
    fn defaults_make_a_local_demo() {
        let w = Wizard::new("demo", false, false, false);
        let file = w.validate().unwrap();
        assert_eq!(file.profile, Some(Profile::Demo));
        assert_eq!(file.mc_domain.as_deref(), Some("mc.flow.localhost"));
        assert_eq!((file.http_port, file.https_port), (Some(8080), Some(8443)));
        // What it writes reads back the same.
        let text = crate::config::deployment::render(&file);
        assert_eq!(crate::config::deployment::parse(&text, None).unwrap(), file);
    }

    #[test]
    fn fields_for_other_modes_are_skipped_and_bad_values_named() {
        let mut w = Wizard::new("demo", false, false, false);
        for _ in 0..4 {
            press(&mut w, KeyCode::Tab);
        }
        assert_eq!(w.field(), Field::Certificate);
        press(&mut w, KeyCode::Tab);
        assert_eq!(
            w.field(),
            Field::HttpPort,
            "e-mail and files do not apply to self-signed"
        );
        press(&mut w, KeyCode::Up);
        press(&mut w, KeyCode::Right); // acme-staging
        press(&mut w, KeyCode::Tab);
        assert_eq!(w.field(), Field::Email);
        // Straight to Create: the e-mail is not one, then the domain is local.
        type_text(&mut w, "ops");
        while w.field() != Field::Create {
            press(&mut w, KeyCode::Tab);
        }
        assert!(matches!(press(&mut w, KeyCode::Enter), Outcome::Continue));
        assert_eq!(w.error.as_ref().unwrap().0, Field::Email);
        assert_eq!(w.field(), Field::Email, "focus goes to the wrong field");
        type_text(&mut w, "@example.com");
        while w.field() != Field::Create {
            press(&mut w, KeyCode::Tab);
        }
        press(&mut w, KeyCode::Enter);
        assert_eq!(w.error.as_ref().unwrap().0, Field::Domain);
    }

    #[test]
    fn real_needs_a_licence() {
        let mut w = Wizard::new("demo", false, false, false);
        w.profile = 1;
        assert_eq!(w.validate().unwrap_err().0, Field::Profile);
        w.license_found = true;
        assert_eq!(w.validate().unwrap().tag.as_deref(), Some("latest"));
        w.tag = "6.0 beta".into();
        assert_eq!(w.validate().unwrap_err().0, Field::Tag);
    }

    #[test]
    fn the_engine_is_asked_only_of_a_swarm_manager_and_swarm_publishes_on_every_address() {
        let mut w = Wizard::new("demo", false, false, false);
        for _ in 0..3 {
            press(&mut w, KeyCode::Tab);
        }
        assert_eq!(w.field(), Field::Profile);
        press(&mut w, KeyCode::Tab);
        assert_eq!(w.field(), Field::Certificate, "no engine to choose on a plain engine");

        let mut w = Wizard::new("demo", false, true, false);
        for _ in 0..4 {
            press(&mut w, KeyCode::Tab);
        }
        assert_eq!(w.field(), Field::Engine);
        press(&mut w, KeyCode::Right);
        let file = w.validate().unwrap();
        assert_eq!(file.engine, Some(crate::config::deployment::Engine::Swarm));
        assert!(file.bind.is_some_and(|b| b.is_unspecified()), "{:?}", file.bind);
        let text = crate::config::deployment::render(&file);
        assert_eq!(crate::config::deployment::parse(&text, None).unwrap(), file);
        // The real profile runs on Swarm too.
        w.profile = 1;
        w.license_found = true;
        let real = w.validate().unwrap();
        assert_eq!(
            (real.engine, real.profile),
            (Some(crate::config::deployment::Engine::Swarm), Some(Profile::Real))
        );
    }

    #[test]
    fn escape_cancels() {
        let mut w = Wizard::new("demo", false, false, false);
        assert!(matches!(press(&mut w, KeyCode::Esc), Outcome::Cancel));
    }

    #[test]
    fn setup_wizard() {
        let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(100, 24)).unwrap();
        let wizard = Wizard::new("prod", false, false, true);
        terminal.draw(|frame| wizard.render(frame)).unwrap();
        insta::assert_snapshot!(terminal.backend().to_string());
    }
}
