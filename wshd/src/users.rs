//! The container's /etc/passwd and /etc/group, parsed by hand (a static glibc
//! binary cannot use NSS), and the resolution of a `SpawnSpec::user` string.

use grove_schema::wshd::{ErrorKind, WshdError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Who a process runs as, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The login name, when /etc/passwd knows the uid.
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary gid first, then every group that
    /// lists the user's name, without duplicates.
    pub groups: Vec<u32>,
    pub home: String,
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // u32::MAX is (uid_t)-1, "no change" to setuid/chown: never a real id.
    s.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

/// Parses passwd(5) text. Blank, comment and malformed lines are skipped
/// (a broken line must not make every other user unusable).
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            if line.trim().is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: parse_id(f[2])?,
                gid: parse_id(f[3])?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// Parses group(5) text, skipping blank, comment and malformed lines.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            if line.trim().is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: parse_id(f[2])?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

/// Resolves `user` (`None`: root; else `USER[:GROUP]`, each a name or a
/// number) against the given databases.
///
/// A numeric uid need not be in /etc/passwd: its home is then "/", it has no
/// name, and its gid is the one given, or 0 (as Docker and runc do).
pub fn resolve(
    user: Option<&str>,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<ResolvedUser, WshdError> {
    let spec = user.unwrap_or("0");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() {
        return Err(WshdError::new(
            ErrorKind::InvalidSpec,
            format!("user {spec:?}: expected a name or uid, optionally followed by :group or :gid"),
        ));
    }
    let (name, uid, mut gid, home) = if user_part.bytes().all(|b| b.is_ascii_digit()) {
        let uid = parse_id(user_part).ok_or_else(|| {
            WshdError::new(
                ErrorKind::InvalidSpec,
                format!("user {spec:?}: uid out of range"),
            )
        })?;
        match passwd.iter().find(|e| e.uid == uid) {
            Some(e) => (Some(e.name.clone()), uid, e.gid, e.home.clone()),
            None => (None, uid, 0, "/".to_string()),
        }
    } else {
        match passwd.iter().find(|e| e.name == user_part) {
            Some(e) => (Some(e.name.clone()), e.uid, e.gid, e.home.clone()),
            None => {
                return Err(WshdError::new(
                    ErrorKind::UnknownUser,
                    format!("user {user_part:?} is not in the container's /etc/passwd"),
                ))
            }
        }
    };
    if let Some(g) = group_part {
        gid = if g.bytes().all(|b| b.is_ascii_digit()) && !g.is_empty() {
            parse_id(g).ok_or_else(|| {
                WshdError::new(
                    ErrorKind::InvalidSpec,
                    format!("user {spec:?}: gid out of range"),
                )
            })?
        } else if g.is_empty() {
            return Err(WshdError::new(
                ErrorKind::InvalidSpec,
                format!("user {spec:?}: empty group after ':'"),
            ));
        } else {
            groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    WshdError::new(
                        ErrorKind::UnknownUser,
                        format!("group {g:?} is not in the container's /etc/group"),
                    )
                })?
        };
    }
    let mut supplementary = vec![gid];
    if let Some(n) = &name {
        for g in groups {
            if g.members.iter().any(|m| m == n) && !supplementary.contains(&g.gid) {
                supplementary.push(g.gid);
            }
        }
    }
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };
    Ok(ResolvedUser {
        name,
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

/// The largest user database wshd reads.
const MAX_DATABASE: u64 = 4 << 20;

/// Reads the container's databases; a missing file is an empty database.
pub fn load() -> (Vec<PasswdEntry>, Vec<GroupEntry>) {
    let passwd = read_database("/etc/passwd").unwrap_or_default();
    let group = read_database("/etc/group").unwrap_or_default();
    (parse_passwd(&passwd), parse_group(&group))
}

/// Read a file the container controls without letting it hang or starve
/// wshd: no symlinks, no FIFOs or devices (O_NONBLOCK, then a regular-file
/// check), and at most MAX_DATABASE bytes.
fn read_database(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{path} is not a regular file"
        )));
    }
    let mut text = String::new();
    file.take(MAX_DATABASE).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_that_could_hang_wshd_are_not_read() {
        let dir = std::env::temp_dir().join(format!("wshd-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_database(fifo.to_str().unwrap()).is_err());
        let link = dir.join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_database(link.to_str().unwrap()).is_err());
        let real = dir.join("passwd");
        std::fs::write(&real, "root:x:0:0::/root:/bin/sh\n").unwrap();
        assert_eq!(
            parse_passwd(&read_database(real.to_str().unwrap()).unwrap()).len(),
            1
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment

broken line
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
bad:x:notanumber:1::/:/bin/sh
nohome:x:1001:1001:::/bin/sh
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
wheel:x:10:root,alice
audio:x:29: bob , alice
alice:x:1000:
staff:x:50:
";

    fn db() -> (Vec<PasswdEntry>, Vec<GroupEntry>) {
        (parse_passwd(PASSWD), parse_group(GROUP))
    }

    #[test]
    fn parses_passwd_skipping_junk() {
        let p = parse_passwd(PASSWD);
        let names: Vec<&str> = p.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["root", "daemon", "alice", "nohome"]);
        assert_eq!(
            p[2],
            PasswdEntry {
                name: "alice".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/alice".into()
            }
        );
    }

    #[test]
    fn parses_group_members() {
        let g = parse_group(GROUP);
        assert_eq!(g.len(), 6);
        assert_eq!(g[2].members, ["root", "alice"]);
        assert_eq!(g[3].members, ["bob", "alice"]);
        assert!(g[0].members.is_empty());
    }

    #[test]
    fn none_is_root() {
        let (p, g) = db();
        let u = resolve(None, &p, &g).unwrap();
        assert_eq!(u.name.as_deref(), Some("root"));
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.home, "/root");
        assert_eq!(u.groups, [0, 10]);
    }

    #[test]
    fn by_name() {
        let (p, g) = db();
        let u = resolve(Some("alice"), &p, &g).unwrap();
        assert_eq!(u.name.as_deref(), Some("alice"));
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.home, "/home/alice");
        assert_eq!(u.groups, [1000, 10, 29]);
    }

    #[test]
    fn by_uid_known_and_unknown() {
        let (p, g) = db();
        let u = resolve(Some("1000"), &p, &g).unwrap();
        assert_eq!(u.name.as_deref(), Some("alice"));
        assert_eq!(u.gid, 1000);
        assert_eq!(u.home, "/home/alice");
        let u = resolve(Some("4242"), &p, &g).unwrap();
        assert_eq!(u.name, None);
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert_eq!(u.home, "/");
        assert_eq!(u.groups, [0]);
        // An entry with an empty home gets "/".
        assert_eq!(resolve(Some("nohome"), &p, &g).unwrap().home, "/");
    }

    #[test]
    fn by_uid_and_gid() {
        let (p, g) = db();
        let u = resolve(Some("1000:50"), &p, &g).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.groups, [50, 10, 29]);
        let u = resolve(Some("4242:4243"), &p, &g).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 4243, "/"));
        let u = resolve(Some("alice:staff"), &p, &g).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
    }

    #[test]
    fn unknown_and_invalid() {
        let (p, g) = db();
        assert_eq!(
            resolve(Some("mallory"), &p, &g).unwrap_err().kind,
            ErrorKind::UnknownUser
        );
        assert_eq!(
            resolve(Some("alice:nogroup"), &p, &g).unwrap_err().kind,
            ErrorKind::UnknownUser
        );
        for bad in ["", ":1", "1:", "99999999999", "4294967295", "1:4294967295"] {
            assert_eq!(
                resolve(Some(bad), &p, &g).unwrap_err().kind,
                ErrorKind::InvalidSpec,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn empty_databases() {
        let u = resolve(None, &[], &[]).unwrap();
        assert_eq!((u.name, u.uid, u.gid, u.home.as_str()), (None, 0, 0, "/"));
        assert_eq!(
            resolve(Some("root"), &[], &[]).unwrap_err().kind,
            ErrorKind::UnknownUser
        );
    }
}
