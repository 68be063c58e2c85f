//! Registry credentials from the container ecosystem's `auth.json`
//! (containers-auth.json(5): podman, skopeo, buildah) and Docker's
//! `config.json`, which share its `auths` map:
//!
//! ```json
//! {"auths": {"registry.example:5000": {"auth": "<base64 of user:password>"},
//!            "quay.io/team": {"auth": "…"},
//!            "https://index.docker.io/v1/": {"auth": "…"}}}
//! ```
//!
//! A key is a host (`host[:port]`), a host with a repository namespace
//! (the most specific match wins), or Docker's legacy URL form. Docker
//! Hub's names (`docker.io`, `index.docker.io`, `registry-1.docker.io`)
//! are one. Credential helpers (`credHelpers`, `credsStore`) are not run.
//! Parsing only: the caller reads the file.

use crate::image_ref::{canonical_host, Reference};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// The login `auth_json` holds for `reference`, if any; an error names
/// what is malformed in the file.
pub fn lookup(auth_json: &[u8], reference: &Reference) -> Result<Option<Login>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(auth_json).map_err(|e| format!("not JSON: {e}"))?;
    let Some(auths) = doc.get("auths") else {
        return Ok(None);
    };
    let auths = auths.as_object().ok_or("\"auths\" is not an object")?;
    // The best key: the longest namespace of the repository that matches.
    let mut best: Option<(usize, &serde_json::Value, &str)> = None;
    for (key, entry) in auths {
        let Some((host, namespace)) = split_key(key) else {
            continue;
        };
        if host != reference.host {
            continue;
        }
        let matches = namespace.is_empty()
            || reference.repo == namespace
            || reference.repo.starts_with(&format!("{namespace}/"));
        if matches && best.is_none_or(|(len, _, _)| namespace.len() > len) {
            best = Some((namespace.len(), entry, key));
        }
    }
    let Some((_, entry, key)) = best else {
        return Ok(None);
    };
    login_of(entry).map_err(|e| format!("auths[{key:?}]: {e}"))
}

/// A key's host (canonical) and repository namespace ("" for none).
fn split_key(key: &str) -> Option<(String, String)> {
    let (url_form, rest) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(rest) => (true, rest),
        None => (false, key),
    };
    let rest = rest.trim_end_matches('/');
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return None;
    }
    // A URL's path is an API path (`/v1/`), not a namespace.
    let namespace = if url_form { "" } else { path };
    Some((canonical_host(host), namespace.to_string()))
}

fn login_of(entry: &serde_json::Value) -> Result<Option<Login>, String> {
    let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let auth = field("auth");
    if !auth.is_empty() {
        let decoded = base64_decode(auth).ok_or("\"auth\" is not base64")?;
        let text = String::from_utf8(decoded).map_err(|_| "\"auth\" is not UTF-8")?;
        let (username, password) = text
            .split_once(':')
            .ok_or("\"auth\" is not base64 of user:password")?;
        return Ok(Some(Login {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    if !field("username").is_empty() {
        return Ok(Some(Login {
            username: field("username").to_string(),
            password: field("password").to_string(),
        }));
    }
    Ok(None)
}

/// Standard base64 (padding optional); `None` for anything else.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.trim().trim_end_matches('=').as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_ref::parse_name;

    fn auth(user_pass: &str) -> String {
        format!("{{\"auth\":\"{}\"}}", base64_encode(user_pass.as_bytes()))
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "user:pass", "alice:s3cret"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert!(base64_decode("a").is_none() && base64_decode("a*bc").is_none());
    }

    #[test]
    fn the_most_specific_key_of_the_registry_wins() {
        let file = format!(
            "{{\"auths\":{{\"127.0.0.1:5000\":{},\"127.0.0.1:5000/team\":{},\
             \"https://index.docker.io/v1/\":{},\"other:1\":{}}}}}",
            auth("host:1"),
            auth("team:2"),
            auth("hub:3"),
            auth("other:4")
        );
        let user = |name: &str| {
            lookup(file.as_bytes(), &parse_name(name).unwrap())
                .unwrap()
                .map(|l| format!("{}:{}", l.username, l.password))
        };
        assert_eq!(user("127.0.0.1:5000/app").as_deref(), Some("host:1"));
        assert_eq!(
            user("127.0.0.1:5000/team/app:v1").as_deref(),
            Some("team:2")
        );
        assert_eq!(user("127.0.0.1:5000/teamx/app").as_deref(), Some("host:1"));
        assert_eq!(user("busybox").as_deref(), Some("hub:3"));
        assert_eq!(user("docker.io/someone/x").as_deref(), Some("hub:3"));
        assert_eq!(user("127.0.0.1:6000/app"), None);
        assert_eq!(
            lookup(
                br#"{"credsStore":"desktop"}"#,
                &parse_name("busybox").unwrap()
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn malformed_files_name_the_fault() {
        let r = parse_name("127.0.0.1:5000/app").unwrap();
        assert!(lookup(b"{", &r).unwrap_err().contains("JSON"));
        assert!(lookup(br#"{"auths":[]}"#, &r)
            .unwrap_err()
            .contains("auths"));
        let e = lookup(br#"{"auths":{"127.0.0.1:5000":{"auth":"!!"}}}"#, &r).unwrap_err();
        assert!(e.contains("127.0.0.1:5000") && e.contains("base64"), "{e}");
    }
}
