#!/usr/bin/env bash
# The guest lane's steps, run inside the guest by grove-lane.service as root
# (systemd is PID 1, cgroup v2). It runs from the host's read-only share, so
# changing it needs no image rebuild.
#
#   in-guest.sh SRC RESULTS
#
# SRC is the host's checkout (built: target/debug, the static wshd and
# grove-escape, the test executables), mounted at the path it has on the
# host. RESULTS is the writable share: the host put plan.tsv there (one test
# executable a line: name, path, working directory, libtest's arguments)
# and lane.conf; this
# script writes back steps.tsv, tests.tsv, tests/<name>.{log,failed},
# install.log, journal.txt and a `finished` mark. It runs twice: the first
# boot ends in a reboot (phase marker RESULTS/phase), the second checks
# what the reboot left and powers off. Lines starting with
# "grove-lane:" go to the serial console, which the host timestamps.
set -uo pipefail
SRC=$1 RESULTS=$2
TEST_TIMEOUT=900
# Emulated CPUs run the tests' heaviest loads 10-20 times slower than the
# host: the lane streams 48 MiB instead of 1 GiB (stream.rs) and 100 MiB
# (garden.rs), and the soak (soak.rs) runs its first default seed with 400
# operations instead of six seeds of 2,000 (12,000 took over 15 minutes);
# the checks are the same. lane.conf may set other values.
BIG_STREAM_MIB=48
SOAK_SEED=0x5eed0001
SOAK_OPS=400
# shellcheck source=/dev/null
[[ -f $RESULTS/lane.conf ]] && . "$RESULTS/lane.conf"

say() { echo "grove-lane: $*"; }
# since START: seconds from an $EPOCHREALTIME to now, one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
# step NAME COMMAND...: run one step in a subshell (its set -e/-x stay
# there), its output to RESULTS/NAME.log, its time and status to steps.tsv.
# Returns the command's status.
step() {
    local name=$1 start=$EPOCHREALTIME rc
    shift
    say "step $name"
    ("$@") >"$RESULTS/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$(since "$start")" \
        "$([[ $rc -eq 0 ]] && echo ok || echo "failed($rc)")" >>"$RESULTS/steps.tsv"
    say "step $name: $([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit $rc, see $name.log)")"
    return "$rc"
}

# The operator's install: README "Debian package": the .deb the host built
# (lane.conf's DEB) on this fresh Debian 12, then enable the sockets.
install_grove() {
    set -x
    [[ -n ${DEB:-} && -f $DEB ]] || { echo "no package (lane.conf's DEB='${DEB:-}')"; return 1; }
    DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB" || return 1
    # The package enables and starts nothing by itself. (is-enabled's
    # status is 0 for "static" too, grove-containers.service's state: the
    # word is what counts.)
    local unit
    for unit in grove-helper.socket groved.socket grove-garden.socket grove-containers.service; do
        if [[ $(systemctl is-enabled "$unit") == enabled ]] || systemctl is-active --quiet "$unit"; then
            echo "the package enabled or started $unit"
            return 1
        fi
    done
    systemctl enable --now grove-helper.socket groved.socket grove-garden.socket &&
        systemctl --no-pager status grove-helper.socket groved.socket grove-garden.socket
}

# Socket activation: the first call starts groved, which starts the helper.
ping_grove() {
    set -x
    timeout 60 grove ping
    local rc=$?
    systemctl --no-pager status groved.service grove-helper.service
    journalctl --no-pager -b -u groved.service -u grove-helper.service
    return "$rc"
}

# What the integration tests expect of the host (./dev setup's setup_btrfs
# and setup_rootfs): a btrfs with quotas at /var/lib/grove-test and the
# busybox rootfs. The ext4 (project quota) and XFS disks are mounted for
# the disk-limit tests that use them.
prepare_tests() {
    set -ex
    local disk=/dev/disk/by-id/virtio-grove
    udevadm settle
    mkdir -p /var/lib/grove-test /var/lib/grove-test-ext4 /var/lib/grove-test-xfs
    mount "$disk-btrfs" /var/lib/grove-test
    btrfs quota enable /var/lib/grove-test
    mount -o prjquota "$disk-ext4" /var/lib/grove-test-ext4
    mount -o prjquota "$disk-xfs" /var/lib/grove-test-xfs
    findmnt /var/lib/grove-test /var/lib/grove-test-ext4 /var/lib/grove-test-xfs
    "$SRC/scripts/build-rootfs.sh" /var/lib/grove/rootfs/busybox
    grep cgroup2 /proc/mounts
    cat /sys/fs/cgroup/cgroup.controllers
}

# run_test NAME EXE DIR [ARGS]: one test executable, like `cargo test`
# runs it (working directory: its package), with a time limit. ARGS:
# libtest's filters or --skip options from scripts/guest/tests.tsv.
run_test() {
    local name=$1 exe=$2 dir=$3 log=$RESULTS/tests/$1.log start=$EPOCHREALTIME rc status
    local -a args
    read -r -a args <<<"${4:-}"
    say "test $name${4:+ ($4)}"
    (cd "$dir" && GROVE_BIN_DIR=$SRC/target/debug GROVE_ROOTFS=/var/lib/grove/rootfs/busybox \
        GROVE_TEST_BIG_STREAM_MIB=$BIG_STREAM_MIB GROVE_SOAK_SEED=$SOAK_SEED GROVE_SOAK_OPS=$SOAK_OPS \
        RUST_BACKTRACE=1 timeout --kill-after=30 "$TEST_TIMEOUT" "$exe" "${args[@]}") >"$log" 2>&1 </dev/null
    rc=$?
    local secs passed failed ignored
    secs=$(since "$start")
    # libtest prints one "test NAME ... RESULT" line per test when it ends.
    passed=$(grep -cE '^test .* \.\.\. ok$' "$log" || true)
    failed=$(grep -cE '^test .* \.\.\. FAILED$' "$log" || true)
    ignored=$(grep -cE '^test .* \.\.\. ignored' "$log" || true)
    grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' >"$RESULTS/tests/$name.failed"
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        status="timeout(${TEST_TIMEOUT}s)"
    elif grep -q '^test result: ' "$log"; then
        status=$([[ $rc -eq 0 ]] && echo ok || echo FAILED)
    else
        status="crashed($rc)"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$passed" "$failed" "$ignored" "$secs" "$status" >>"$RESULTS/tests.tsv"
    say "test $name: $status, $passed passed, $failed failed, $ignored ignored, ${secs%.*}s"
}

# The operator's walk-throughs (scripts/guest/walk-*.sh), each its own
# step; each adds its checks to steps.tsv as "walk: ...".
walk() {
    bash "$SRC/scripts/guest/walk-$1.sh" "$2" "$RESULTS"
}

# Reboot into the lane's second phase: the marker tells in-guest.sh there,
# and a runtime drop-in (gone after the reboot) keeps grove-lane.service's
# SuccessAction=/FailureAction=poweroff from racing the reboot.
reboot_guest() {
    echo rebooted >"$RESULTS/phase"
    mkdir -p /run/systemd/system/grove-lane.service.d
    printf '[Unit]\nSuccessAction=none\nFailureAction=none\n' \
        >/run/systemd/system/grove-lane.service.d/reboot.conf
    systemctl daemon-reload
    say "rebooting (uptime $(cut -d' ' -f1 /proc/uptime) s)"
    systemctl --no-block reboot
}

collect() {
    systemd-analyze critical-chain grove-lane.service >"$RESULTS/boot$1.txt" 2>&1
    systemd-cgls --no-pager >"$RESULTS/cgroups$1.txt" 2>&1
    journalctl -b --no-pager -o short-monotonic >"$RESULTS/journal$1.txt" 2>&1
}

# Boot 1: install, the walk-throughs, the tests; then reboot with a
# container running. Boot 2: what the reboot left.
main() {
    if [[ $(cat "$RESULTS/phase" 2>/dev/null) == rebooted ]]; then
        say "rebooted (uptime $(cut -d' ' -f1 /proc/uptime) s)"
        echo done >"$RESULTS/phase"
        step walk-systemd-after-reboot walk systemd after-reboot
        # Last: it removes the package.
        step walk-package bash "$SRC/scripts/guest/walk-package.sh" "$RESULTS" "$DEB"
        collect ""
        touch "$RESULTS/finished"
        say "done; powering off"
        return
    fi
    say "started (uptime $(cut -d' ' -f1 /proc/uptime) s, $(uname -r), systemd $(systemctl --version | sed -n '1s/systemd \([0-9]*\).*/\1/p'))"
    mkdir -p "$RESULTS/tests"
    : >"$RESULTS/steps.tsv"
    : >"$RESULTS/tests.tsv"
    rm -f "$RESULTS/phase"
    step install install_grove
    step ping ping_grove
    step walk-systemd walk systemd walk
    if step prepare prepare_tests; then
        # After prepare: its disk parts use the btrfs, ext4 and XFS mounts.
        step walk-limits bash "$SRC/scripts/guest/walk-limits.sh" "$RESULTS"
        local name exe dir args
        while IFS=$'\t' read -r name exe dir args; do
            [[ -n $name ]] && run_test "$name" "$exe" "$dir" "$args"
        done <"$RESULTS/plan.tsv"
    else
        say "the tests' prerequisites failed; no test ran"
    fi
    if step walk-systemd-before-reboot walk systemd before-reboot; then
        collect -boot1
        reboot_guest
        return
    fi
    collect ""
    touch "$RESULTS/finished"
    say "done; powering off"
}

main
