//! Container records on disk: one JSON file per container in
//! `<state_dir>/containers/`, written atomically (temp file, rename), so a
//! crash of groved leaves the old or the new record. They are not fsynced:
//! a record describes kernel objects that a power loss destroys anyway
//! (after a reboot groved destroys the records of the earlier boot), and an unreadable
//! file is reported and skipped at start-up; the fsyncs cost 1–8 ms per
//! create on btrfs.

use grove_schema::net::NetworkInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub handle: String,
    /// The rootfs as the spec named it ("" = the default).
    pub rootfs: String,
    pub env: Vec<String>,
    pub properties: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// "active" or "stopped".
    pub state: String,
    pub wshd_pid: i32,
    /// Events such as "Out of memory", oldest first.
    #[serde(default)]
    pub events: Vec<String>,
    /// OOM kills already turned into events.
    #[serde(default)]
    pub oom_kills_seen: u64,
    /// Process defaults from the image's config (Env, WorkingDir, User);
    /// empty for a rootfs directory.
    #[serde(default)]
    pub image_env: Vec<String>,
    #[serde(default)]
    pub image_dir: String,
    #[serde(default)]
    pub image_user: String,
    /// The container's address, gateway and prefix, as the helper made them
    /// (`None` in records of containers made before networking).
    #[serde(default)]
    pub network: Option<NetworkInfo>,
    /// Seconds without a request after which groved destroys the container
    /// (0 = never). The spec's value, or groved's `default_grace_time` when
    /// the spec gave 0; records from before grace times have none (0).
    #[serde(default)]
    pub grace_time_seconds: u64,
    /// A destroy was asked for and has not finished: written before groved
    /// asks the helper, so that a destroy cut short (groved killed, the
    /// helper gone) is finished by the next reconcile.
    #[serde(default)]
    pub destroying: bool,
    /// The manifest digest of the registry image it was created from ("":
    /// none), which the image cache's GC leaves while the container exists.
    #[serde(default)]
    pub image_digest: String,
}

/// In the records' dir; not a record (no .json).
const BOOT_ID_FILE: &str = "boot_id";
const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

fn this_boot() -> std::io::Result<String> {
    Ok(fs::read_to_string(KERNEL_BOOT_ID)?.trim().to_string())
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(state_dir: &std::path::Path) -> std::io::Result<Store> {
        let dir = state_dir.join("containers");
        fs::create_dir_all(&dir)?;
        Ok(Store { dir })
    }

    pub fn save(&self, record: &Record) -> std::io::Result<()> {
        let final_path = self.dir.join(format!("{}.json", record.handle));
        let temp_path = self.dir.join(format!(".{}.json.tmp", record.handle));
        let written = File::create(&temp_path).and_then(|mut file| {
            file.write_all(&serde_json::to_vec_pretty(record)?)?;
            drop(file);
            fs::rename(&temp_path, &final_path)
        });
        // A full disk leaves no half-written temporary file behind.
        if written.is_err() {
            let _ = fs::remove_file(&temp_path);
        }
        written
    }

    pub fn remove(&self, handle: &str) -> std::io::Result<()> {
        match fs::remove_file(self.dir.join(format!("{handle}.json"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The boot (the kernel's boot id) these records were last loaded in,
    /// if not this one. None for this boot, or for a state dir that names
    /// none (new, or older than boot ids). Read before groved confines
    /// itself; `note_boot` records this one.
    pub fn earlier_boot(&self) -> std::io::Result<Option<String>> {
        let now = this_boot()?;
        match fs::read_to_string(self.dir.join(BOOT_ID_FILE)) {
            Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty() && *s != now)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Record this boot as the one the records belong to. On a full disk
    /// the note of an earlier boot is removed instead (an unlink needs no
    /// space): a stale note would have a later start take this boot's
    /// records for an earlier one's.
    pub fn note_boot(&self) -> std::io::Result<()> {
        let temp = self.dir.join(format!(".{BOOT_ID_FILE}.tmp"));
        let file = self.dir.join(BOOT_ID_FILE);
        match fs::write(&temp, this_boot()?).and_then(|()| fs::rename(&temp, &file)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&temp);
                match fs::remove_file(&file) {
                    Err(r) if r.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => {
                        tracing::warn!(error = %e, "could not note this boot in the state dir");
                        Ok(())
                    }
                }
            }
        }
    }

    /// Every record, and a description of each file that could not be read.
    pub fn load_all(&self) -> std::io::Result<(Vec<Record>, Vec<String>)> {
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Record>(&bytes).map_err(|e| e.to_string())
                }) {
                Ok(record) => records.push(record),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        records.sort_by(|a, b| a.handle.cmp(&b.handle));
        Ok((records, problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("grove-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saves_loads_replaces_and_removes() {
        let dir = temp_dir("roundtrip");
        let store = Store::open(&dir).unwrap();
        let mut record = Record {
            handle: "c1".into(),
            rootfs: String::new(),
            env: vec!["A=1".into()],
            properties: BTreeMap::from([("k".into(), "v".into())]),
            created_at: 1,
            state: "active".into(),
            wshd_pid: 42,
            events: vec!["Out of memory".into()],
            oom_kills_seen: 1,
            image_env: vec!["FOO=bar".into()],
            image_dir: "/opt".into(),
            image_user: "user".into(),
            network: Some(NetworkInfo {
                ip: "10.254.0.2".parse().unwrap(),
                gateway: "10.254.0.1".parse().unwrap(),
                prefix_len: 24,
                mtu: 1500,
            }),
            grace_time_seconds: 30,
            destroying: true,
            image_digest: format!("sha256:{}", "d".repeat(64)),
        };
        store.save(&record).unwrap();
        record.state = "stopped".into();
        store.save(&record).unwrap();
        fs::write(dir.join("containers/broken.json"), b"{").unwrap();
        // A record written before networking loads without one.
        fs::write(
            dir.join("containers/old.json"),
            br#"{"handle":"old","rootfs":"","env":[],"properties":{},"created_at":1,"state":"active","wshd_pid":1}"#,
        )
        .unwrap();
        let (records, problems) = store.load_all().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], record);
        assert_eq!(records[1].network, None);
        assert_eq!(records[1].grace_time_seconds, 0, "no grace time: never");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("broken.json"));
        store.remove("c1").unwrap();
        store.remove("old").unwrap();
        store.remove("c1").unwrap();
        assert!(store.load_all().unwrap().0.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
