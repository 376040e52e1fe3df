//! Human durations ("250ms", "5s", "1m30s", "1h"): the one parser used by the
//! TOML files and the command line alike.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a duration such as `500ms`, `5s`, `2m`, `1h` or `1m30s`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write it like 5s, 250ms, 2m or 1h".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("'{text}' is not a duration; write it like 5s, 250ms, 2m or 1h"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("'{text}' has a number too large for a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86_400)),
            "" => {
                return Err(format!(
                    "'{text}' needs a unit (ms, s, m, h or d), for example {value}s"
                ));
            }
            other => {
                return Err(format!("'{text}' has an unknown unit '{other}'; use ms, s, m, h or d"));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// Formats a duration the way [`parse`] reads it back.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A duration read from TOML as a string such as `"5s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map(Dur).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn explains_what_is_wrong() {
        assert!(parse("5").unwrap_err().contains("needs a unit"));
        assert!(parse("5 sec").unwrap_err().contains("unknown unit"));
        assert!(parse("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn formats_round_trip() {
        for text in ["250ms", "5s", "2m", "1h"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
