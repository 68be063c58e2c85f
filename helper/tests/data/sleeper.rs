// A stand-in wshd for helper/tests/helper.rs: reports what it sees, then
// sleeps. Built static with rustc by the test, or beforehand by
// `./dev test-guest` (GROVE_TEST_SLEEPER) for a guest without rustc.
use std::io::Write;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let fd3 = std::fs::read_link("/proc/self/fd/3").map(|p| p.display().to_string()).unwrap_or_default();
    let mut dev: Vec<String> = std::fs::read_dir("/dev").map(|d| d.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    dev.sort();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
        .lines().filter_map(|l| l.split(' ').nth(4).map(String::from)).collect();
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default().replace('\n', ";");
    println!("pid={} args=[{}] hostname={} fd3={} busybox={} env=[{}] dev=[{}] mounts=[{}] cgroup=[{}]",
        std::process::id(), args.join(" "), host.trim(), fd3, std::path::Path::new("/bin/busybox").exists(),
        env.join(","), dev.join(","), mounts.join(","), cgroup);
    std::io::stdout().flush().ok();
    loop { std::thread::sleep(std::time::Duration::from_secs(3600)); }
}
