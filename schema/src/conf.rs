//! The one configuration syntax shared by grove-helper's policy file and
//! groved's config file: TOML with top-level keys only.
//!
//! Each value is handed to its key's validator as text: a string as it is,
//! an integer in decimal, a boolean as `on`/`off`, and an array of strings
//! joined with ", " (the list validators split on commas). Tables, floats,
//! dates and arrays of anything but strings are refused, naming the key.
//! Each side checks its own keys; an unknown key is an error there.

use toml::de::{DeTable, DeValue};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub key: String,
    pub value: String,
}

impl Entry {
    /// A boolean's value (`on`/`off`, as `parse` writes TOML's true and
    /// false); `None` for anything else, which the caller names.
    pub fn flag(&self) -> Option<bool> {
        match self.value.as_str() {
            "on" => Some(true),
            "off" => Some(false),
            _ => None,
        }
    }

    /// The value as an absolute path, or why it is not one.
    pub fn absolute_path(&self) -> Result<std::path::PathBuf, String> {
        if self.value.starts_with('/') {
            Ok(self.value.clone().into())
        } else {
            Err(format!(
                "{} must be an absolute path, not {:?}",
                self.key, self.value
            ))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ConfError {
    pub line: usize,
    pub message: String,
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A scalar as the validators' text, or why it cannot be one.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|e| format!("integer {:?}: {e}", i.as_str())),
        DeValue::Boolean(b) => Ok(if *b { "on" } else { "off" }.to_string()),
        other => Err(format!(
            "a {} is not allowed here (use a string, an integer, a boolean or an array of strings)",
            other.type_str()
        )),
    }
}

/// Parse TOML text into entries (in file order), refusing malformed TOML,
/// repeated keys, bad key names and values of an unsupported type.
pub fn parse(text: &str) -> Result<Vec<Entry>, ConfError> {
    let table = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        // Name the key the bad line sets (or the table it opens), if any.
        let raw = text.lines().nth(line - 1).unwrap_or("").trim();
        let key = match raw.split_once('=') {
            Some((key, _)) => key.trim(),
            None => raw.trim_start_matches('[').trim_end_matches(']').trim(),
        };
        let named = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        ConfError {
            line,
            message: format!(
                "{}invalid TOML: {}",
                if named {
                    format!("{key}: ")
                } else {
                    String::new()
                },
                e.message().trim()
            ),
        }
    })?;
    let mut entries: Vec<(usize, Entry)> = Vec::new();
    for (key, value) in table.get_ref().iter() {
        let start = key.span().start;
        let line = line_of(text, start);
        let key = key.get_ref().to_string();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(ConfError {
                line,
                message: format!("bad key {key:?} (use a-z and _)"),
            });
        }
        let bad = |why: String| ConfError {
            line,
            message: format!("{key}: {why}"),
        };
        let value = match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(s) => Ok(s.to_string()),
                    other => Err(bad(format!(
                        "an array may hold only strings, not a {}",
                        other.type_str()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(", "),
            DeValue::Table(_) => {
                return Err(bad(
                    "a table is not allowed here (top-level `key = value` only)".to_string(),
                ))
            }
            other => scalar(other).map_err(bad)?,
        };
        entries.push((start, Entry { line, key, value }));
    }
    entries.sort_by_key(|(start, _)| *start);
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_values_and_comments() {
        let e = parse("# policy\n\nsocket = \"/run/x.sock\"\nmax_containers=7\n").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].line, e[0].key.as_str(), e[0].value.as_str()),
            (3, "socket", "/run/x.sock")
        );
        assert_eq!(e[1].value, "7");
    }

    #[test]
    fn converts_native_values_in_file_order() {
        let e = parse(
            "z = true\na = false\nlist = [\"/a\", \"/b\"]\nempty = []\nhex = 0x10\nq = 'x\\y'\n",
        )
        .unwrap();
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("z", "on"),
                ("a", "off"),
                ("list", "/a, /b"),
                ("empty", ""),
                ("hex", "16"),
                ("q", "x\\y")
            ]
        );
        assert_eq!(e[2].line, 3);
    }

    #[test]
    fn refuses_malformed_repeated_and_unsupported() {
        assert_eq!(parse("socket /x").unwrap_err().line, 1);
        assert!(parse("socket = /x").unwrap_err().message.contains("TOML"));
        assert!(parse("Socket = \"/x\"")
            .unwrap_err()
            .message
            .contains("bad key"));
        let again = parse("a = 1\na = 2").unwrap_err();
        assert_eq!(again.line, 2, "{again}");
        assert!(again.message.starts_with("a: "), "{again}");
        assert!(parse("socket = /x")
            .unwrap_err()
            .message
            .starts_with("socket: "));
        for (text, key) in [
            ("[net]\nmtu = 1500", "net"),
            ("mtu = 1500.0", "mtu"),
            ("when = 1979-05-27", "when"),
            ("list = [1, 2]", "list"),
            ("t = { a = 1 }", "t"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.message.starts_with(&format!("{key}: ")), "{err}");
        }
    }
}
