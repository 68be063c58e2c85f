//! The supply-chain check (`./dev deny`, deny.toml) can fail: run as
//! ./dev runs it, cargo-deny passes the graph with deny.toml and refuses it
//! once a licence it uses or a duplicate it excuses is taken out of the
//! policy. Runs where ./dev test runs (it needs the cargo-deny that ./dev
//! deny installs and the workspace's crates), not in the guest lane.

use grove_tests::*;
use std::path::{Path, PathBuf};

/// `./dev deny` can fail: cargo-deny, run as ./dev runs it, passes with
/// deny.toml and refuses the same graph once a licence it uses is no longer
/// allowed or a known duplicate is no longer excused, naming each. Needs
/// the cargo-deny ./dev deny installs (./dev test runs it first).
#[test]
fn the_supply_chain_check_refuses_a_licence_or_duplicate_it_does_not_allow() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dev = std::fs::read_to_string(root.join("dev")).unwrap();
    let version = dev
        .lines()
        .find_map(|l| l.strip_prefix("CARGO_DENY_VERSION="))
        .expect("dev names CARGO_DENY_VERSION");
    let deny = PathBuf::from(format!(
        "/var/cache/grove-tools/cargo-deny-{version}/bin/cargo-deny"
    ));
    assert!(
        deny.exists(),
        "{} is missing: run ./dev deny",
        deny.display()
    );
    let policy = std::fs::read_to_string(root.join("deny.toml")).unwrap();
    let scratch = PathBuf::from(TEST_ROOT).join(format!("deny-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let check = |name: &str, config: &str| -> (bool, String) {
        let path = scratch.join(name);
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(&deny)
            .current_dir(&root)
            .args(["--offline", "--config"])
            .arg(&path)
            .args(["check", "licenses", "bans", "sources"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let start = policy.find("skip = [").expect("deny.toml has a skip list");
    let end = start + policy[start..].find("\n]").expect("the skip list ends") + 2;
    let no_mit = policy.replace("    \"MIT\",\n", "");
    let no_skips = format!("{}skip = []{}", &policy[..start], &policy[end..]);
    let results = [
        check("deny.toml", &policy),
        check("no-mit.toml", &no_mit),
        check("no-skips.toml", &no_skips),
    ];
    let _ = std::fs::remove_dir_all(&scratch);
    let [(as_is, text), (without_mit, mit_text), (without_skips, skips_text)] = results;
    assert!(as_is, "deny.toml itself fails:\n{text}");
    assert_ne!(no_mit, policy, "deny.toml allows MIT on a line of its own");
    assert!(
        !without_mit,
        "a graph of MIT crates passed without MIT allowed"
    );
    assert!(
        mit_text.contains("rejected") && mit_text.contains("MIT"),
        "{mit_text}"
    );
    assert!(
        !without_skips,
        "duplicate versions passed without their excuses"
    );
    assert!(
        skips_text.contains("duplicate entries for crate 'base64'"),
        "{skips_text}"
    );
}
