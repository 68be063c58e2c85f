//! The one configuration syntax shared by grove-helper's policy file and
//! groved's config file: `key = value` lines, `#` comments, blank lines.
//! Values are taken verbatim after trimming; there is no quoting or escaping.
//! Each side checks its own keys; an unknown key is an error there.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ConfError {
    pub line: usize,
    pub message: String,
}

/// Parse the text into entries, refusing malformed lines and repeated keys.
pub fn parse(text: &str) -> Result<Vec<Entry>, ConfError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(ConfError {
                line,
                message: format!("expected `key = value`, found {trimmed:?}"),
            });
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(ConfError {
                line,
                message: format!("bad key {key:?} (use a-z and _)"),
            });
        }
        if let Some(first) = entries.iter().find(|e| e.key == key) {
            return Err(ConfError {
                line,
                message: format!("{key} is set again (first on line {})", first.line),
            });
        }
        entries.push(Entry {
            line,
            key: key.to_string(),
            value: value.trim().to_string(),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_values_and_comments() {
        let e = parse("# policy\n\nsocket = /run/x.sock\nmax_containers=7\n").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].line, e[0].key.as_str(), e[0].value.as_str()),
            (3, "socket", "/run/x.sock")
        );
        assert_eq!(e[1].value, "7");
    }

    #[test]
    fn refuses_malformed_and_repeated_lines() {
        assert_eq!(parse("socket /x").unwrap_err().line, 1);
        assert!(parse("Socket = /x")
            .unwrap_err()
            .message
            .contains("bad key"));
        assert!(parse("a = 1\na = 2")
            .unwrap_err()
            .message
            .contains("set again"));
    }
}
