//! Settings from the environment, so one pipeline file serves a fleet:
//!
//! * `${VAR}` and `${VAR:-default}` anywhere in the file (comments aside) are
//!   replaced before it is parsed; an unset variable without a default is an
//!   error naming it and its line. `$${` writes a literal `${`.
//! * The collector's identity: `--type`/`--id` on the command line, else
//!   `TRAPTOR_TYPE`/`TRAPTOR_ID`, else `[traptor]`; with
//!   `TRAPTOR_ID_FROM_HOSTNAME=true` the id is the host name's trailing `-N`
//!   (a Kubernetes StatefulSet ordinal: `collector-7` → 7).

use crate::rules::RuleType;

/// Why the environment cannot fill the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("line {line}: ${{{name}}} is not set (give it a value, or a default: ${{{name}:-value}})")]
    Unset { line: usize, name: String },
    #[error("line {line}: ${{{name}}} holds a line break; a value must be one line")]
    Multiline { line: usize, name: String },
    #[error("line {line}: `${{` without a closing `}}`")]
    Unclosed { line: usize },
    #[error("line {line}: {name:?} is not a variable name (letters, digits and `_`)")]
    BadName { line: usize, name: String },
    #[error("{0}")]
    Identity(String),
}

/// Replace `${VAR}` and `${VAR:-default}` in `text`, looking names up with `get`.
pub fn substitute(text: &str, get: impl Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = split_comment(line);
        out.push_str(&substitute_line(code, i + 1, &get)?);
        out.push_str(comment);
    }
    Ok(out)
}

fn substitute_line(line: &str, number: usize, get: &impl Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            // `$${` is a literal `${`.
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let body_and_rest = &rest[i + 2..];
        let end = body_and_rest.find('}').ok_or(EnvError::Unclosed { line: number })?;
        let body = &body_and_rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(EnvError::BadName { line: number, name: name.to_owned() });
        }
        let value = match (get(name), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_owned(),
            (None, None) => return Err(EnvError::Unset { line: number, name: name.to_owned() }),
        };
        if value.contains(['\n', '\r']) {
            return Err(EnvError::Multiline { line: number, name: name.to_owned() });
        }
        out.push_str(&value);
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A line cut before its comment: `#` outside a string starts one.
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return line.split_at(i),
            _ => {}
        }
        escaped = false;
    }
    (line, "")
}

/// The collector's identity after the command line and the environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentityOverride {
    pub traptor_type: Option<RuleType>,
    pub id: Option<super::IdSetting>,
}

impl IdentityOverride {
    /// `TRAPTOR_TYPE`, `TRAPTOR_ID`, `TRAPTOR_ID_FROM_HOSTNAME` (looked up
    /// with `get`), each used only where `self` (the command line) says nothing.
    pub fn or_from_env(self, get: impl Fn(&str) -> Option<String>) -> Result<IdentityOverride, EnvError> {
        let traptor_type = match (self.traptor_type, get("TRAPTOR_TYPE").filter(|t| !t.is_empty())) {
            (Some(t), _) => Some(t),
            (None, Some(t)) => {
                Some(t.parse::<RuleType>().map_err(|e| EnvError::Identity(format!("TRAPTOR_TYPE={e}")))?)
            }
            (None, None) => None,
        };
        let from_hostname = get("TRAPTOR_ID_FROM_HOSTNAME").is_some_and(|v| v == "true" || v == "1");
        let id = match (self.id, get("TRAPTOR_ID").filter(|t| !t.is_empty())) {
            (Some(id), _) => Some(id),
            (None, Some(id)) => Some(id.parse().map_err(|e| EnvError::Identity(format!("TRAPTOR_ID={e}")))?),
            (None, None) if from_hostname => {
                let host = get("HOSTNAME")
                    .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                    .unwrap_or_default();
                Some(ordinal(host.trim()).map(super::IdSetting::Fixed).ok_or_else(|| {
                    EnvError::Identity(format!(
                        "TRAPTOR_ID_FROM_HOSTNAME: the host name {:?} does not end in -N",
                        host.trim()
                    ))
                })?)
            }
            (None, None) => None,
        };
        Ok(IdentityOverride { traptor_type, id })
    }
}

/// The trailing `-N` of a host name (`collector-7` → 7).
fn ordinal(host: &str) -> Option<u32> {
    let (_, n) = host.rsplit_once('-')?;
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdSetting;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn variables_defaults_escapes_and_comments() {
        let text = "id = ${ID}\npath = \"${DIR:-/tmp}/x\" # ${NOT_READ}\nlit = \"$${HOME}\"\nurl = \"a#${ID}\"\n";
        let got = substitute(text, env(&[("ID", "7")])).expect("substitutes");
        assert_eq!(got, "id = 7\npath = \"/tmp/x\" # ${NOT_READ}\nlit = \"${HOME}\"\nurl = \"a#7\"\n");
    }

    #[test]
    fn errors_name_the_variable_and_the_line() {
        assert_eq!(
            substitute("a = 1\nb = ${MISSING}\n", env(&[])),
            Err(EnvError::Unset { line: 2, name: "MISSING".into() })
        );
        assert_eq!(substitute("b = ${X\n", env(&[])), Err(EnvError::Unclosed { line: 1 }));
        assert_eq!(substitute("b = ${1X}\n", env(&[])), Err(EnvError::BadName { line: 1, name: "1X".into() }));
        assert_eq!(
            substitute("b = ${X}\n", env(&[("X", "a\nb")])),
            Err(EnvError::Multiline { line: 1, name: "X".into() })
        );
        let e = substitute("\n\nb = ${MISSING}\n", env(&[])).expect_err("unset").to_string();
        assert!(e.contains("line 3") && e.contains("MISSING"), "{e}");
    }

    #[test]
    fn identity_from_command_line_then_environment_then_host_name() {
        let cli = IdentityOverride { traptor_type: Some(RuleType::Follow), id: None };
        let got = cli.or_from_env(env(&[("TRAPTOR_TYPE", "locations"), ("TRAPTOR_ID", "3")])).expect("ok");
        assert_eq!(got, IdentityOverride { traptor_type: Some(RuleType::Follow), id: Some(IdSetting::Fixed(3)) });
        let auto = IdentityOverride::default().or_from_env(env(&[("TRAPTOR_ID", "auto")])).expect("ok");
        assert_eq!(auto.id, Some(IdSetting::Auto));
        let got = IdentityOverride::default()
            .or_from_env(env(&[("TRAPTOR_ID_FROM_HOSTNAME", "true"), ("HOSTNAME", "collector-12")]))
            .expect("ok");
        assert_eq!(got.id, Some(IdSetting::Fixed(12)));
        assert!(IdentityOverride::default().or_from_env(env(&[("TRAPTOR_ID", "x")])).is_err());
        assert!(IdentityOverride::default().or_from_env(env(&[("TRAPTOR_TYPE", "tracks")])).is_err());
        assert!(
            IdentityOverride::default()
                .or_from_env(env(&[("TRAPTOR_ID_FROM_HOSTNAME", "true"), ("HOSTNAME", "db")]))
                .is_err()
        );
        assert_eq!(IdentityOverride::default().or_from_env(env(&[])).expect("ok"), IdentityOverride::default());
    }
}
