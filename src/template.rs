//! The files flowgate writes for others (hazelcast.yml, proxy.toml,
//! nginx.conf, Traefik's dynamic.yml) are templates in `assets/templates/`,
//! compiled in with `include_str!` and filled from typed values here: a
//! `{{name}}` is replaced by its value, and a template may not name a value
//! it is not given (tests render every template to make sure).

/// A template's text and name (for the panic that catches a missing value in tests).
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub name: &'static str,
    pub text: &'static str,
}

macro_rules! template {
    ($file:literal) => {
        Template {
            name: $file,
            text: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/templates/", $file)),
        }
    };
}

pub const HAZELCAST_YML: Template = template!("hazelcast.yml");
pub const PROXY_TOML: Template = template!("proxy.toml");
pub const NGINX_CONF: Template = template!("nginx.conf");
pub const NGINX_SERVER: Template = template!("nginx-server.conf");
pub const COMPOSE_HEADER: Template = template!("compose-header.txt");
pub const TRAEFIK_DYNAMIC: Template = template!("traefik-dynamic.yml");

impl Template {
    /// The text with every `{{name}}` replaced by its value. A placeholder
    /// without a value is a bug in flowgate, not in the input: it panics in
    /// debug builds and is left as it is otherwise.
    pub fn render(&self, values: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(self.text.len() + 256);
        let mut rest = self.text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                return out;
            };
            let key = &after[..end];
            match values.iter().find(|(name, _)| *name == key) {
                Some((_, value)) => out.push_str(value),
                None => {
                    debug_assert!(false, "template {} names {{{{{key}}}}}, which has no value", self.name);
                    out.push_str(&rest[start..start + 4 + end]);
                }
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_other_braces_kept() {
        let t = Template {
            name: "t",
            text: "a {{x}} b {{y}}{ c }",
        };
        assert_eq!(t.render(&[("x", "1"), ("y", "2")]), "a 1 b 2{ c }");
    }

    // A debug assertion: a release build leaves the placeholder as written.
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "names {{z}}")]
    fn a_missing_value_is_a_bug() {
        let t = Template {
            name: "t",
            text: "{{z}}",
        };
        t.render(&[]);
    }
}
