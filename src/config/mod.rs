//! Configuration files: their types, loading and validation.
//!
//! Every file is validated when it is loaded, and an error names the file,
//! line and column, what was expected, and a hint, so a bad file starts
//! nothing.

pub mod deployment;
pub mod duration;
pub mod proxy;
pub mod quick;

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem, located in its file when it came from one.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.position) {
            (Some(file), Some((line, col))) => write!(f, "{}:{line}:{col}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some((line, col))) => write!(f, "line {line}, column {col}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// An error without a place in a file (command-line flags, for example).
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            position: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Points errors at places in one source text.
pub struct Source<'a> {
    pub file: Option<&'a Path>,
    pub text: &'a str,
}

impl Source<'_> {
    /// The 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, column)
    }

    pub fn error_at(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.map(Path::to_path_buf),
            position: Some(self.position(span.start)),
            message: message.into(),
            hint: None,
        }
    }

    /// Converts a TOML parse or type error, keeping its position.
    pub fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let message = error.message().trim().to_string();
        let mut out = match error.span() {
            Some(span) => self.error_at(span, message),
            None => ConfigError {
                file: self.file.map(Path::to_path_buf),
                position: None,
                message,
                hint: None,
            },
        };
        if out.message.contains("unknown field") {
            out.hint = Some("check the spelling against the example in README.md".into());
        }
        out
    }
}

/// Reads a file, turning I/O failures into a sentence that says which file.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        position: None,
        message: format!("cannot read the file: {e}"),
        hint: Some("check the path given with --config".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let source = Source {
            file: None,
            text: "a = 1\nbb = 2\n",
        };
        assert_eq!(source.position(0), (1, 1));
        assert_eq!(source.position(6), (2, 1));
        assert_eq!(source.position(9), (2, 4));
    }
}
