//! The dashboard's state and its update function: messages (feeds, keys,
//! mouse, results of actions) come in, actions for the deployer go out.
//! Nothing here waits on Docker or the network.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};

use crate::config::deployment::{DeploymentFile, KeyAction};
use crate::deploy::plan::Role;
use crate::deploy::settings::Deployment;
use crate::monitor::probe::Preflight;
use crate::monitor::{Feed, Instance, Snapshot, State};

/// The Flow UI's heartbeat interval: ages are coloured against it.
pub const HEARTBEAT_MS: u64 = 5_000;
/// Lines of logs kept for the logs view.
const LOG_LINES: usize = 2_000;

/// What the deployer task is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Scale(u32),
    Restart(String),
    Drain(String),
    /// Take the deployment down (volumes kept), then quit.
    Down,
    /// Spread the sessions evenly again.
    Rebalance,
    /// Follow this container's logs (None: stop).
    Logs(Option<String>),
    /// Run MC's CORS preflight through the proxy.
    CheckMc,
    /// Run `flowgate doctor` on the deployment.
    RunDoctor,
    /// Which instance's sessions the feeds should fetch.
    WatchSessions(Option<String>),
}

/// Messages the dashboard receives.
#[derive(Debug)]
pub enum Msg {
    Feed(Feed),
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize,
    /// The deployment's settings, from the proxy's label.
    Deployment(Option<Deployment>),
    /// The deployer started (Some) or finished (None) an action.
    Busy(Option<String>),
    LogLine(String),
    Mc(Result<Preflight, String>),
    Doctor(Result<crate::doctor::Report, String>),
    /// The deployment was taken down: quit.
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Instances,
    Sessions,
    Events,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    ScaleToZero,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    Logs,
    Certificate,
    Mc,
    Doctor,
    /// Typing a filter for instance names.
    Filter(String),
    /// Typing an instance count (digits, then Enter).
    Count(String),
    Confirm(Confirm),
}

/// How the dashboard ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quit {
    /// The deployment keeps running.
    Leave,
    /// The deployment was taken down.
    Down,
}

/// Keys bound to actions: the defaults with flowgate.toml's `[keys]` over them.
#[derive(Debug, Clone)]
pub struct KeyMap {
    by_key: BTreeMap<char, KeyAction>,
    by_action: BTreeMap<KeyAction, char>,
}

impl KeyMap {
    pub fn new(file: Option<&DeploymentFile>) -> Result<KeyMap, KeyError> {
        let mut by_action = BTreeMap::new();
        for action in KeyAction::ALL {
            let key = file
                .and_then(|f| f.keys.get(&action).copied())
                .unwrap_or(action.default_key());
            by_action.insert(action, key);
        }
        let mut by_key = BTreeMap::new();
        for (action, key) in &by_action {
            if let Some(other) = by_key.insert(*key, *action) {
                return Err(KeyError::Twice {
                    key: *key,
                    first: other.name(),
                    second: action.name(),
                });
            }
            if key.is_ascii_digit() || ['j', 'k'].contains(key) {
                return Err(KeyError::Reserved {
                    key: *key,
                    action: action.name(),
                });
            }
        }
        Ok(KeyMap { by_key, by_action })
    }

    pub fn action(&self, key: char) -> Option<KeyAction> {
        self.by_key.get(&key).copied()
    }

    pub fn key(&self, action: KeyAction) -> char {
        self.by_action.get(&action).copied().unwrap_or(action.default_key())
    }
}

/// A `[keys]` table the dashboard cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key '{key}' is bound to both {first} and {second} in [keys]; give each action its own key")]
    Twice {
        key: char,
        first: &'static str,
        second: &'static str,
    },
    #[error("the key '{key}' of {action} is taken by the dashboard (digits set the count, j/k move)")]
    Reserved { key: char, action: &'static str },
}

#[derive(Debug, Clone, Default)]
pub struct Logs {
    pub instance: String,
    pub lines: VecDeque<String>,
    /// Lines scrolled up from the end.
    pub scroll: usize,
}

pub struct App {
    pub state: State,
    pub deployment: Option<Deployment>,
    pub keys: KeyMap,
    pub mode: Mode,
    pub pane: Pane,
    /// Index into the visible (filtered) instances.
    pub selected: usize,
    pub filter: String,
    pub sessions_scroll: usize,
    pub events_scroll: usize,
    pub logs: Logs,
    pub mc_check: Option<Result<Preflight, String>>,
    /// The last doctor run (None: running or never run).
    pub doctor: Option<Result<crate::doctor::Report, String>>,
    /// What the deployer is doing now.
    pub busy: Option<String>,
    /// The instance count asked for and not reached yet.
    pub pending: Option<u32>,
    /// Instances drained by hand: running, out of the proxy's rotation.
    pub drained: BTreeSet<String>,
    pub quit: Option<Quit>,
    /// Wall-clock time of the picture (ms since the epoch).
    pub now_ms: u64,
    pub color: bool,
    /// Where the instance rows were last drawn (for mouse clicks).
    pub rows_area: Option<ratatui::layout::Rect>,
    /// First visible row of the instances table.
    pub rows_offset: usize,
}

impl App {
    pub fn new(project: &str, keys: KeyMap, color: bool) -> App {
        App {
            state: State::new(project),
            deployment: None,
            keys,
            mode: Mode::Normal,
            pane: Pane::Instances,
            selected: 0,
            filter: String::new(),
            sessions_scroll: 0,
            events_scroll: 0,
            logs: Logs::default(),
            mc_check: None,
            doctor: None,
            busy: None,
            pending: None,
            drained: BTreeSet::new(),
            quit: None,
            now_ms: 0,
            color,
            rows_area: None,
            rows_offset: 0,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut snap = self.state.snapshot((self.now_ms / 1000) as i64);
        if let Some(dep) = &self.deployment {
            snap.flow_url = Some(dep.flow_origin());
            snap.mc_url = Some(dep.mc_origin());
        }
        snap
    }

    fn shows(&self, name: &str) -> bool {
        self.filter.is_empty() || name.contains(&self.filter)
    }

    /// The instances the filter lets through, in order.
    pub fn visible(&self, snap: &Snapshot) -> Vec<Instance> {
        snap.instances.iter().filter(|i| self.shows(&i.name)).cloned().collect()
    }

    /// The names of the visible instances, in the same order, straight from
    /// the container list: selection and keys need no whole snapshot.
    pub fn visible_names(&self) -> Vec<&str> {
        self.state
            .containers
            .iter()
            .filter(|c| c.role == Role::Flow && self.shows(&c.name))
            .map(|c| c.name.as_str())
            .collect()
    }

    pub fn selected_name(&self) -> Option<String> {
        let visible = self.visible_names();
        visible
            .get(self.selected.min(visible.len().saturating_sub(1)))
            .map(|name| name.to_string())
    }

    fn flow_count(&self) -> u32 {
        self.state.containers.iter().filter(|c| c.role == Role::Flow).count() as u32
    }

    /// The count `+`/`-` start from: what was asked for last, or what runs.
    fn base_count(&self) -> u32 {
        self.pending.unwrap_or_else(|| self.flow_count())
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Action> {
        match msg {
            Msg::Feed(feed) => {
                // A new container list can change which instance is selected
                // (the first one appears, the selected one goes): its
                // sessions are the ones to fetch.
                let selected_before = matches!(feed, Feed::Containers(_)).then(|| self.selected_name());
                if let Feed::Containers(list) = &feed {
                    self.drained.retain(|name| list.iter().any(|c| &c.name == name));
                }
                if let Feed::Backends { backends, .. } = &feed {
                    // A drained instance the proxy serves again (restarted) is no longer drained.
                    self.drained.retain(|name| !backends.iter().any(|b| &b.id == name));
                }
                self.state.apply(feed);
                if self.pending.is_some_and(|n| n == self.flow_count()) && self.busy.is_none() {
                    self.pending = None;
                }
                match selected_before {
                    Some(before) if before != self.selected_name() => {
                        vec![Action::WatchSessions(self.selected_name())]
                    }
                    _ => Vec::new(),
                }
            }
            Msg::Deployment(dep) => {
                self.deployment = dep;
                Vec::new()
            }
            Msg::Busy(what) => {
                if what.is_none() {
                    self.pending = None;
                }
                self.busy = what;
                Vec::new()
            }
            Msg::LogLine(line) => {
                self.logs.lines.push_back(line);
                while self.logs.lines.len() > LOG_LINES {
                    self.logs.lines.pop_front();
                }
                Vec::new()
            }
            Msg::Mc(result) => {
                self.mc_check = Some(result);
                Vec::new()
            }
            Msg::Doctor(result) => {
                self.doctor = Some(result);
                Vec::new()
            }
            Msg::Down => {
                self.quit = Some(Quit::Down);
                Vec::new()
            }
            Msg::Resize => Vec::new(),
            Msg::Mouse(mouse) => self.on_mouse(mouse),
            Msg::Key(key) if key.kind == KeyEventKind::Press => self.on_key(key),
            Msg::Key(_) => Vec::new(),
        }
    }

    fn on_mouse(&mut self, mouse: MouseEvent) -> Vec<Action> {
        match mouse.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                let Some(area) = self.rows_area else { return Vec::new() };
                if mouse.column >= area.x
                    && mouse.column < area.x + area.width
                    && mouse.row >= area.y
                    && mouse.row < area.y + area.height
                {
                    let row = self.rows_offset + (mouse.row - area.y) as usize;
                    let count = self.visible_names().len();
                    if row < count {
                        self.pane = Pane::Instances;
                        return self.select(row);
                    }
                }
                Vec::new()
            }
            MouseEventKind::ScrollDown => self.move_selection(1),
            MouseEventKind::ScrollUp => self.move_selection(-1),
            _ => Vec::new(),
        }
    }

    fn select(&mut self, row: usize) -> Vec<Action> {
        let before = self.selected_name();
        self.selected = row;
        let after = self.selected_name();
        if before != after {
            self.sessions_scroll = 0;
            self.state.sessions.clear();
            return vec![Action::WatchSessions(after)];
        }
        Vec::new()
    }

    fn move_selection(&mut self, delta: isize) -> Vec<Action> {
        match self.pane {
            Pane::Instances => {
                let count = self.visible_names().len();
                if count == 0 {
                    return Vec::new();
                }
                let row = (self.selected.min(count - 1) as isize + delta).clamp(0, count as isize - 1);
                self.select(row as usize)
            }
            Pane::Sessions => {
                self.sessions_scroll = (self.sessions_scroll as isize + delta).max(0) as usize;
                Vec::new()
            }
            Pane::Events => {
                self.events_scroll = (self.events_scroll as isize - delta).max(0) as usize;
                Vec::new()
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = Some(Quit::Leave);
            return Vec::new();
        }
        match self.mode.clone() {
            Mode::Normal => self.on_normal_key(key),
            Mode::Filter(mut text) => {
                match key.code {
                    KeyCode::Enter => self.mode = Mode::Normal,
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Normal;
                    }
                    KeyCode::Backspace => {
                        text.pop();
                        self.filter = text.clone();
                        self.mode = Mode::Filter(text);
                    }
                    KeyCode::Char(c) => {
                        text.push(c);
                        self.filter = text.clone();
                        self.mode = Mode::Filter(text);
                    }
                    _ => {}
                }
                self.selected = 0;
                Vec::new()
            }
            Mode::Count(mut digits) => match key.code {
                KeyCode::Char(c) if c.is_ascii_digit() && digits.len() < 3 => {
                    digits.push(c);
                    self.mode = Mode::Count(digits);
                    Vec::new()
                }
                KeyCode::Backspace => {
                    digits.pop();
                    self.mode = if digits.is_empty() {
                        Mode::Normal
                    } else {
                        Mode::Count(digits)
                    };
                    Vec::new()
                }
                KeyCode::Enter => {
                    self.mode = Mode::Normal;
                    match digits.parse::<u32>() {
                        Ok(n) => self.scale_to(n),
                        Err(_) => Vec::new(),
                    }
                }
                _ => {
                    self.mode = Mode::Normal;
                    Vec::new()
                }
            },
            Mode::Confirm(what) => {
                self.mode = Mode::Normal;
                if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                    match what {
                        Confirm::ScaleToZero => {
                            self.pending = Some(0);
                            return vec![Action::Scale(0)];
                        }
                        Confirm::Down => return vec![Action::Down],
                    }
                }
                Vec::new()
            }
            Mode::Logs => match key.code {
                KeyCode::Up | KeyCode::Char('k') => {
                    self.logs.scroll = (self.logs.scroll + 1).min(self.logs.lines.len());
                    Vec::new()
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    self.logs.scroll = self.logs.scroll.saturating_sub(1);
                    Vec::new()
                }
                KeyCode::PageUp => {
                    self.logs.scroll = (self.logs.scroll + 20).min(self.logs.lines.len());
                    Vec::new()
                }
                KeyCode::PageDown => {
                    self.logs.scroll = self.logs.scroll.saturating_sub(20);
                    Vec::new()
                }
                _ => {
                    self.mode = Mode::Normal;
                    vec![Action::Logs(None)]
                }
            },
            Mode::Help | Mode::Certificate | Mode::Mc | Mode::Doctor => {
                self.mode = Mode::Normal;
                Vec::new()
            }
        }
    }

    fn scale_to(&mut self, n: u32) -> Vec<Action> {
        if n == 0 {
            self.mode = Mode::Confirm(Confirm::ScaleToZero);
            return Vec::new();
        }
        if n == self.base_count() {
            return Vec::new();
        }
        // The deployment's own rules decide, as for `flowgate scale`.
        let limit = crate::config::deployment::DeploymentError::Instances(n);
        let refused = match &self.deployment {
            Some(dep) => Deployment {
                instances: n,
                ..dep.clone()
            }
            .validate()
            .err(),
            None => (n > crate::config::deployment::MAX_INSTANCES).then_some(limit),
        };
        if let Some(error) = refused {
            self.state.apply(Feed::Note {
                at_ms: self.now_ms,
                text: format!("not scaled to {n}: {error}"),
                error: true,
            });
            return Vec::new();
        }
        self.pending = Some(n);
        vec![Action::Scale(n)]
    }

    fn on_normal_key(&mut self, key: KeyEvent) -> Vec<Action> {
        match key.code {
            KeyCode::Tab => {
                self.pane = match self.pane {
                    Pane::Instances => Pane::Sessions,
                    Pane::Sessions => Pane::Events,
                    Pane::Events => Pane::Instances,
                };
                return Vec::new();
            }
            KeyCode::BackTab => {
                self.pane = match self.pane {
                    Pane::Instances => Pane::Events,
                    Pane::Sessions => Pane::Instances,
                    Pane::Events => Pane::Sessions,
                };
                return Vec::new();
            }
            KeyCode::Down => return self.move_selection(1),
            KeyCode::Up => return self.move_selection(-1),
            KeyCode::PageDown => return self.move_selection(10),
            KeyCode::PageUp => return self.move_selection(-10),
            KeyCode::Home => return self.move_selection(-10_000),
            KeyCode::End => return self.move_selection(10_000),
            KeyCode::Esc => {
                self.filter.clear();
                return Vec::new();
            }
            KeyCode::Char(c) if c.is_ascii_digit() => {
                self.mode = Mode::Count(c.to_string());
                return Vec::new();
            }
            KeyCode::Char('j') => return self.move_selection(1),
            KeyCode::Char('k') => return self.move_selection(-1),
            KeyCode::Char(c) => return self.on_action_key(c),
            _ => {}
        }
        Vec::new()
    }

    fn on_action_key(&mut self, c: char) -> Vec<Action> {
        let Some(action) = self.keys.action(c) else {
            return Vec::new();
        };
        let selected = self.selected_name();
        match action {
            KeyAction::ScaleUp => self.scale_to(self.base_count() + 1),
            KeyAction::ScaleDown => match self.base_count() {
                0 => Vec::new(),
                1 => {
                    self.mode = Mode::Confirm(Confirm::ScaleToZero);
                    Vec::new()
                }
                n => self.scale_to(n - 1),
            },
            KeyAction::Restart => selected.map(Action::Restart).into_iter().collect(),
            KeyAction::Drain => match selected {
                Some(name) => {
                    self.drained.insert(name.clone());
                    vec![Action::Drain(name)]
                }
                None => Vec::new(),
            },
            KeyAction::Logs => match selected {
                Some(name) => {
                    self.logs = Logs {
                        instance: name.clone(),
                        ..Logs::default()
                    };
                    self.mode = Mode::Logs;
                    vec![Action::Logs(Some(name))]
                }
                None => Vec::new(),
            },
            KeyAction::Certificate => {
                self.mode = Mode::Certificate;
                Vec::new()
            }
            KeyAction::Mc => {
                self.mode = Mode::Mc;
                self.mc_check = None;
                vec![Action::CheckMc]
            }
            KeyAction::Doctor => {
                self.mode = Mode::Doctor;
                self.doctor = None;
                vec![Action::RunDoctor]
            }
            KeyAction::Rebalance => vec![Action::Rebalance],
            KeyAction::Filter => {
                self.mode = Mode::Filter(self.filter.clone());
                Vec::new()
            }
            KeyAction::Help => {
                self.mode = Mode::Help;
                Vec::new()
            }
            KeyAction::Quit => {
                self.quit = Some(Quit::Leave);
                Vec::new()
            }
            KeyAction::QuitDown => {
                self.mode = Mode::Confirm(Confirm::Down);
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::monitor::ContainerInfo;

    pub fn key(c: char) -> Msg {
        Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    pub fn code(code: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    pub fn flows(n: u32) -> Feed {
        Feed::Containers(
            (1..=n)
                .map(|i| ContainerInfo {
                    name: format!("demo-flow-{i}"),
                    role: Role::Flow,
                    index: Some(i),
                    state: "running".into(),
                    started_at: Some(0),
                    restarts: 0,
                    node: None,
                    address: None,
                })
                .collect(),
        )
    }

    fn app() -> App {
        let mut app = App::new("demo", KeyMap::new(None).unwrap(), false);
        app.update(Msg::Feed(flows(3)));
        app
    }

    #[test]
    fn the_first_instance_s_sessions_are_fetched_once_it_appears() {
        let mut app = App::new("demo", KeyMap::new(None).unwrap(), false);
        assert_eq!(
            app.update(Msg::Feed(flows(2))),
            [Action::WatchSessions(Some("demo-flow-1".into()))]
        );
        assert!(
            app.update(Msg::Feed(flows(3))).is_empty(),
            "the selection did not change"
        );
        app.update(key('j'));
        app.update(key('j'));
        // The selected third instance goes: the selection falls back to the second.
        assert_eq!(
            app.update(Msg::Feed(flows(2))),
            [Action::WatchSessions(Some("demo-flow-2".into()))]
        );
    }

    #[test]
    fn plus_and_minus_scale_by_one_from_what_was_asked() {
        let mut app = app();
        assert_eq!(app.update(key('+')), [Action::Scale(4)]);
        assert_eq!(
            app.update(key('+')),
            [Action::Scale(5)],
            "a second + before the first is done"
        );
        app.update(Msg::Busy(None));
        assert_eq!(app.update(key('-')), [Action::Scale(2)]);
    }

    #[test]
    fn a_count_the_deployment_rules_refuse_is_said_not_sent() {
        let mut app = app();
        for c in "250".chars() {
            app.update(key(c));
        }
        assert!(app.update(code(KeyCode::Enter)).is_empty());
        let last = app.state.events.back().expect("an event line");
        assert!(
            last.error && last.text.contains("more than flowgate runs"),
            "{}",
            last.text
        );
    }

    #[test]
    fn zero_needs_a_confirmation() {
        let mut app = App::new("demo", KeyMap::new(None).unwrap(), false);
        app.update(Msg::Feed(flows(1)));
        assert!(app.update(key('-')).is_empty());
        assert_eq!(app.mode, Mode::Confirm(Confirm::ScaleToZero));
        assert!(app.update(key('n')).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        app.update(key('-'));
        assert_eq!(app.update(key('y')), [Action::Scale(0)]);
    }

    #[test]
    fn digits_then_enter_set_the_count() {
        let mut app = app();
        app.update(key('1'));
        app.update(key('2'));
        assert_eq!(app.mode, Mode::Count("12".into()));
        assert_eq!(app.update(code(KeyCode::Enter)), [Action::Scale(12)]);
        app.update(key('0'));
        assert!(app.update(code(KeyCode::Enter)).is_empty());
        assert_eq!(app.mode, Mode::Confirm(Confirm::ScaleToZero));
    }

    #[test]
    fn selection_moves_and_asks_for_the_sessions_of_the_new_instance() {
        let mut app = app();
        assert_eq!(
            app.update(key('j')),
            [Action::WatchSessions(Some("demo-flow-2".into()))]
        );
        app.update(code(KeyCode::Down));
        app.update(code(KeyCode::Down));
        assert_eq!(app.selected_name().as_deref(), Some("demo-flow-3"));
        assert_eq!(app.update(key('r')), [Action::Restart("demo-flow-3".into())]);
        assert_eq!(app.update(key('d')), [Action::Drain("demo-flow-3".into())]);
        assert!(app.drained.contains("demo-flow-3"));
    }

    #[test]
    fn filter_narrows_the_instances() {
        let mut app = app();
        app.update(key('/'));
        app.update(key('2'));
        assert_eq!(app.mode, Mode::Filter("2".into()));
        app.update(code(KeyCode::Enter));
        assert_eq!(app.visible(&app.snapshot()).len(), 1);
        assert_eq!(app.visible_names(), ["demo-flow-2"]);
        app.update(code(KeyCode::Esc));
        let from_snapshot: Vec<String> = app.visible(&app.snapshot()).into_iter().map(|i| i.name).collect();
        assert_eq!(
            app.visible_names(),
            from_snapshot,
            "the same instances in the same order"
        );
    }

    #[test]
    fn quit_leaves_and_shift_q_confirms_down() {
        let mut app = app();
        app.update(key('Q'));
        assert_eq!(app.mode, Mode::Confirm(Confirm::Down));
        assert_eq!(app.update(key('y')), [Action::Down]);
        assert_eq!(app.quit, None, "quits once the deployment is down");
        app.update(Msg::Down);
        assert_eq!(app.quit, Some(Quit::Down));
        let mut other = self::app();
        other.update(key('q'));
        assert_eq!(other.quit, Some(Quit::Leave));
    }

    #[test]
    fn keys_are_remappable_and_clashes_refused() {
        let file = crate::config::deployment::parse("[keys]\nscale_up = \"a\"\n", None).unwrap();
        let keys = KeyMap::new(Some(&file)).unwrap();
        let mut app = App::new("demo", keys, false);
        app.update(Msg::Feed(flows(2)));
        assert_eq!(app.update(key('a')), [Action::Scale(3)]);
        assert!(app.update(key('+')).is_empty());
        let clash = crate::config::deployment::parse("[keys]\nscale_up = \"q\"\n", None).unwrap();
        assert!(KeyMap::new(Some(&clash)).unwrap_err().to_string().contains("both"));
    }

    #[test]
    fn logs_view_follows_and_stops() {
        let mut app = app();
        assert_eq!(app.update(key('l')), [Action::Logs(Some("demo-flow-1".into()))]);
        assert_eq!(app.mode, Mode::Logs);
        app.update(Msg::LogLine("hello".into()));
        assert_eq!(app.logs.lines.len(), 1);
        assert_eq!(app.update(code(KeyCode::Esc)), [Action::Logs(None)]);
        assert_eq!(app.mode, Mode::Normal);
    }
}
