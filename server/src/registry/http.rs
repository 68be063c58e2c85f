//! One registry (or mirror) spoken to over the Registry HTTP API v2: GETs
//! that answer an authentication challenge once (Bearer: a token from the
//! challenge's realm, with basic auth when there is a login; Basic: the
//! login), and errors that name the registry and say what failed.

use super::net::Net;
use super::PullError;
use grove_schema::auth_file::{base64_encode, Login};
use std::io::Read;

/// Manifests and token answers are small; anything bigger is refused.
pub const MAX_DOCUMENT: u64 = 4 << 20;

pub struct Session<'a> {
    net: &'a Net,
    /// `host[:port]` of the registry or mirror.
    pub host: String,
    /// The repository there (a mirror's prefix included).
    pub repo: String,
    /// `scheme://host/v2/repo`.
    pub base: String,
    agent: ureq::Agent,
    login: Option<Login>,
    /// The `Authorization` header value, once a challenge was answered.
    auth: Option<String>,
    /// "image URI: " or similar, before every message.
    context: String,
}

impl<'a> Session<'a> {
    pub fn new(
        net: &'a Net,
        host: &str,
        repo: &str,
        login: Option<Login>,
        context: String,
    ) -> Result<Session<'a>, PullError> {
        let agent = net
            .agent(host)
            .map_err(|e| PullError::Unavailable(format!("{context}{e}")))?;
        Ok(Session {
            base: format!("{}://{host}/v2/{repo}", net.scheme(host)),
            net,
            host: host.to_string(),
            repo: repo.to_string(),
            agent,
            login,
            auth: None,
            context,
        })
    }

    pub fn invalid(&self, why: impl std::fmt::Display) -> PullError {
        PullError::Invalid(format!("{}{why}", self.context))
    }

    pub fn unavailable(&self, why: impl std::fmt::Display) -> PullError {
        PullError::Unavailable(format!("{}{why}", self.context))
    }

    fn transport(&self, e: ureq::Transport) -> PullError {
        let insecure = self.net.is_insecure(&self.host);
        let via = match self.net.proxy_of(&self.host) {
            Some(proxy) => format!(" through proxy {proxy}"),
            None => String::new(),
        };
        let hint = if insecure {
            String::new()
        } else {
            format!(
                " (groved talks HTTPS to registries, trusting {} and registry_ca; plain \
                 HTTP only to those its insecure_registries names, which {} is not)",
                self.net.roots_from, self.host
            )
        };
        self.unavailable(format!(
            "registry {} unreachable{}{via}: {e}{hint}",
            self.host,
            if insecure { "" } else { " over HTTPS" }
        ))
    }

    /// GET `url`, answering one authentication challenge. `what` names the
    /// thing fetched in errors.
    pub fn get(
        &mut self,
        url: &str,
        accept: &str,
        what: &str,
    ) -> Result<ureq::Response, PullError> {
        let mut challenged = false;
        loop {
            let mut req = self.agent.get(url);
            if !accept.is_empty() {
                req = req.set("Accept", accept);
            }
            if let Some(auth) = &self.auth {
                req = req.set("Authorization", auth);
            }
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !challenged => {
                    challenged = true;
                    let challenge = resp.header("WWW-Authenticate").unwrap_or("").to_string();
                    self.authenticate(&challenge)?;
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(self.invalid(format!(
                        "{} refused access to {what} (401 Unauthorized{})",
                        self.host,
                        if self.login.is_none() {
                            "; no credentials were given"
                        } else {
                            " with the given credentials"
                        }
                    )))
                }
                Err(ureq::Error::Status(403, _)) => {
                    return Err(self.invalid(format!(
                        "access to {what} is forbidden by {} (403)",
                        self.host
                    )))
                }
                Err(ureq::Error::Status(404, _)) => {
                    return Err(self.invalid(format!(
                        "{what} not found in the registry {} (404)",
                        self.host
                    )))
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let body = resp.into_string().unwrap_or_default();
                    let body: String = body.chars().take(200).collect();
                    let err = format!("GET {what} from {}: HTTP {code} {}", self.host, body.trim());
                    return Err(if code >= 500 || code == 429 {
                        self.unavailable(err)
                    } else {
                        self.invalid(err)
                    });
                }
                Err(ureq::Error::Transport(t)) => return Err(self.transport(t)),
            }
        }
    }

    fn basic(&self) -> Option<String> {
        self.login.as_ref().map(|l| {
            format!(
                "Basic {}",
                base64_encode(format!("{}:{}", l.username, l.password).as_bytes())
            )
        })
    }

    /// Answer a `WWW-Authenticate` challenge: Bearer (fetch a token from
    /// its realm, with basic auth when there is a login) or Basic.
    fn authenticate(&mut self, challenge: &str) -> Result<(), PullError> {
        let (scheme, params) = challenge.trim().split_once(' ').unwrap_or((challenge, ""));
        let params = parse_challenge(params);
        if scheme.eq_ignore_ascii_case("basic") {
            return match self.basic() {
                Some(b) => {
                    self.auth = Some(b);
                    Ok(())
                }
                None => Err(self.invalid(format!(
                    "{} asks for basic authentication and no credentials were given",
                    self.host
                ))),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.invalid(format!(
                "{} asks for unsupported authentication {challenge:?}",
                self.host
            )));
        }
        let param = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let realm = param("realm")
            .ok_or_else(|| self.invalid("the registry's Bearer challenge names no realm"))?;
        let plain_ok = self.net.is_insecure(&self.host) && realm.starts_with("http://");
        if !realm.starts_with("https://") && !plain_ok {
            return Err(self.invalid(format!("the registry's token realm {realm:?} is not HTTPS")));
        }
        let agent = self
            .net
            .agent_for_url(&realm)
            .map_err(|e| self.unavailable(format!("token realm: {e}")))?;
        let mut req = agent.get(&realm);
        if let Some(service) = param("service") {
            req = req.query("service", &service);
        }
        let scope = param("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repo));
        req = req.query("scope", &scope);
        if let Some(b) = self.basic() {
            req = req.set("Authorization", &b);
        }
        let resp = match req.call() {
            Ok(resp) => resp,
            Err(ureq::Error::Status(code, _)) => {
                return Err(self.invalid(format!(
                    "the token service {realm} refused a token (HTTP {code}{})",
                    if self.login.is_none() {
                        "; no credentials were given"
                    } else {
                        ""
                    }
                )))
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(self.unavailable(format!("token service {realm} unreachable: {t}")))
            }
        };
        let body = read_document(resp).map_err(|e| self.unavailable(format!("token: {e}")))?;
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| self.invalid(format!("the token service's answer: {e}")))?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if token.is_empty() {
            return Err(self.invalid("the token service's answer holds no token"));
        }
        self.auth = Some(format!("Bearer {token}"));
        Ok(())
    }
}

/// A small document (manifest, token), at most `MAX_DOCUMENT` bytes.
pub fn read_document(resp: ureq::Response) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(format!("larger than {MAX_DOCUMENT} bytes"));
    }
    Ok(bytes)
}

/// `key="value",key=value` pairs of a `WWW-Authenticate` challenge.
pub fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_string()));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull".into()),
            ]
        );
    }
}
