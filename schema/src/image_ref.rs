//! The one grammar of registry image references, shared by groved (which
//! pulls), the CLI (which looks up credentials and names cached images)
//! and grove-garden (which translates Garden's URIs):
//!
//! `docker://[HOST[:PORT]/]REPO[:TAG][@sha256:DIGEST]`, with Docker's
//! rules for short names: a first component without `.` or `:` (and not
//! `localhost`) is part of a Docker Hub repository, an empty host
//! (`docker:///busybox`, Garden's form) is Docker Hub, `docker.io` and
//! `index.docker.io` are Docker Hub's API host `registry-1.docker.io`, and
//! a Docker Hub repository of one component is in `library/`. So
//! `docker:///busybox`, `docker://busybox` and
//! `docker://docker.io/library/busybox:latest` all name
//! `registry-1.docker.io/library/busybox:latest`. A tag with a digest
//! (`busybox:1.36@sha256:…`) is pulled by the digest; the tag only names it.

/// Docker Hub's registry API host.
pub const DOCKER_HUB: &str = "registry-1.docker.io";
/// The names Docker Hub goes by in references.
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", DOCKER_HUB];

/// A parsed registry image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `host[:port]` (Docker Hub: `registry-1.docker.io`).
    pub host: String,
    /// The repository, e.g. `library/busybox`.
    pub repo: String,
    /// The tag; empty when only a digest was given.
    pub tag: String,
    /// `sha256:<64 hex>`, when given.
    pub digest: Option<String>,
}

impl Reference {
    /// What to ask the registry's manifest endpoint for: the digest when
    /// one was given, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().unwrap_or(&self.tag)
    }

    /// `host/repo:tag`, `host/repo@digest` or `host/repo:tag@digest`.
    pub fn name(&self) -> String {
        let mut s = format!("{}/{}", self.host, self.repo);
        if !self.tag.is_empty() {
            s.push(':');
            s.push_str(&self.tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// `host/repo:tag` when a tag was given (the name a tag's cache entry
    /// goes by), else `None`.
    pub fn tag_name(&self) -> Option<String> {
        (!self.tag.is_empty()).then(|| format!("{}/{}:{}", self.host, self.repo, self.tag))
    }

    /// Whether the host is Docker Hub's.
    pub fn is_docker_hub(&self) -> bool {
        self.host == DOCKER_HUB
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The canonical form of a registry host as configuration names it:
/// Docker Hub's aliases are `registry-1.docker.io`, others unchanged.
pub fn canonical_host(host: &str) -> String {
    if DOCKER_HUB_ALIASES.contains(&host) {
        DOCKER_HUB.to_string()
    } else {
        host.to_string()
    }
}

/// `sha256:<64 lowercase hex>`?
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_hex64)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !t.starts_with(['.', '-'])
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && c.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Parse what follows `docker:` in an image URI: `//HOST/REPO…`,
/// `///REPO…` (Docker Hub) or `//REPO…` (a short Docker Hub name).
pub fn parse(rest: &str) -> Result<Reference, String> {
    let body = rest.strip_prefix("//").ok_or_else(|| {
        "a registry image is docker://[HOST[:PORT]/]REPO[:TAG][@sha256:DIGEST]".to_string()
    })?;
    parse_name(body)
}

/// Parse a reference without its scheme, as `grove image` commands take
/// it: `busybox`, `127.0.0.1:5000/test/app:v1`, `/busybox` (an empty
/// host), `docker.io/library/busybox@sha256:…`. A `docker:` prefix is
/// accepted too.
pub fn parse_name(name: &str) -> Result<Reference, String> {
    if let Some(rest) = name.strip_prefix("docker:") {
        return parse(rest);
    }
    if name.is_empty() {
        return Err("an empty image reference".into());
    }
    let (named, digest) = match name.split_once('@') {
        Some((n, d)) => {
            if !is_digest(d) {
                return Err(format!("digest {d:?} is not sha256:<64 hex digits>"));
            }
            (n, Some(d.to_string()))
        }
        None => (name, None),
    };
    // A tag follows the last ':' unless a '/' comes after it (then the ':'
    // was a port's).
    let (path, tag) = match named.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => {
            if !valid_tag(t) {
                return Err(format!(
                    "{t:?} is not a valid tag (1 to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"
                ));
            }
            (p, t.to_string())
        }
        _ => (named, String::new()),
    };
    let tag = if tag.is_empty() && digest.is_none() {
        "latest".to_string()
    } else {
        tag
    };
    let (host, repo) = match path.split_once('/') {
        // `/busybox`: Garden's docker:///busybox, an empty host.
        Some(("", repo)) => (DOCKER_HUB.to_string(), repo.to_string()),
        Some((first, repo))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (canonical_host(first), repo.to_string())
        }
        _ => (DOCKER_HUB.to_string(), path.to_string()),
    };
    if !valid_host(&host) {
        return Err(format!("{host:?} is not a valid registry host"));
    }
    let repo = if host == DOCKER_HUB && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    if repo.len() > 255 || !repo.split('/').all(valid_component) {
        return Err(format!(
            "{repo:?} is not a valid repository (lowercase letters, digits, . _ - and /)"
        ));
    }
    Ok(Reference {
        host,
        repo,
        tag,
        digest,
    })
}

/// The host platform as OCI names it: `linux/<GOARCH>` with an optional
/// variant, from the architecture this binary was built for.
pub fn host_platform() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "x86" => ("386", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", ""),
        "powerpc64" => ("ppc64", ""),
        "s390x" => ("s390x", ""),
        "riscv64" => ("riscv64", ""),
        "loongarch64" => ("loong64", ""),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", ""),
        other => (other, ""),
    };
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: variant.into(),
    }
}

/// An OCI platform: os, architecture and (for arm) variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl Platform {
    /// Whether an index entry for (`os`, `architecture`, `variant`) runs
    /// here: the same os and architecture, and the same variant where
    /// both name one (arm64's "v8" is arm64's only variant).
    pub fn accepts(&self, os: &str, architecture: &str, variant: &str) -> bool {
        os == self.os
            && architecture == self.architecture
            && (variant.is_empty()
                || self.variant.is_empty()
                || variant == self.variant
                || (architecture == "arm64" && variant == "v8"))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> (String, String, String, Option<String>) {
        let r = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (r.host, r.repo, r.tag, r.digest)
    }

    #[test]
    fn docker_hub_names_are_docker_hub_library_repositories() {
        let busybox = (
            DOCKER_HUB.to_string(),
            "library/busybox".to_string(),
            "latest".to_string(),
            None,
        );
        for s in [
            "///busybox",
            "//busybox",
            "//busybox:latest",
            "//docker.io/busybox",
            "//docker.io/library/busybox:latest",
            "//index.docker.io/library/busybox",
            "//registry-1.docker.io/busybox",
            "//library/busybox",
        ] {
            assert_eq!(r(s), busybox, "{s}");
        }
        assert_eq!(
            parse("///busybox").unwrap().name(),
            "registry-1.docker.io/library/busybox:latest"
        );
        let user = r("//someone/app:2");
        assert_eq!(
            (user.0.as_str(), user.1.as_str()),
            (DOCKER_HUB, "someone/app")
        );
    }

    #[test]
    fn hosts_tags_and_digests() {
        assert_eq!(
            r("//127.0.0.1:5000/test/busybox:v1"),
            (
                "127.0.0.1:5000".into(),
                "test/busybox".into(),
                "v1".into(),
                None
            )
        );
        assert_eq!(r("//reg.example/a/b").2, "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let by_digest = parse(&format!("//localhost:1/x@{d}")).unwrap();
        assert_eq!(
            (by_digest.tag.as_str(), by_digest.manifest_ref()),
            ("", d.as_str())
        );
        assert_eq!(by_digest.tag_name(), None);
        let both = parse(&format!("//busybox:1.36@{d}")).unwrap();
        assert_eq!(
            (both.tag.as_str(), both.manifest_ref()),
            ("1.36", d.as_str())
        );
        assert_eq!(
            both.name(),
            format!("registry-1.docker.io/library/busybox:1.36@{d}")
        );
        assert_eq!(
            parse_name("127.0.0.1:5000/x:v1").unwrap(),
            parse("//127.0.0.1:5000/x:v1").unwrap()
        );
        assert_eq!(
            parse_name("docker:///busybox").unwrap(),
            parse_name("busybox").unwrap()
        );
    }

    #[test]
    fn bad_references_are_refused_with_the_reason() {
        for (s, says) in [
            ("127.0.0.1:5000/x", "docker://"),
            ("//127.0.0.1:5000/X:v1", "repository"),
            ("//127.0.0.1:5000/x/../y:v1", "repository"),
            ("//127.0.0.1:5000/x@sha256:abc", "digest"),
            ("//127.0.0.1:5000/x:a?b", "tag"),
            ("//127.0.0.1:5000/x:.v", "tag"),
            ("//", "empty"),
            ("//a b.c/x", "host"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains(says), "{s}: {e}");
        }
    }

    #[test]
    fn platforms_match_os_architecture_and_variant() {
        let p = host_platform();
        assert_eq!(p.os, "linux");
        assert!(p.accepts("linux", &p.architecture, ""));
        assert!(!p.accepts("windows", &p.architecture, ""));
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: "v7".into(),
        };
        assert!(arm.accepts("linux", "arm", "v7") && !arm.accepts("linux", "arm", "v6"));
        let arm64 = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: String::new(),
        };
        assert!(arm64.accepts("linux", "arm64", "v8"));
        assert_eq!(arm.to_string(), "linux/arm/v7");
    }
}
