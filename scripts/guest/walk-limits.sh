#!/usr/bin/env bash
# The operator walk-through's limits part, run in the guest by in-guest.sh
# after the install: what an operator tries with the installed units and
# the `grove` CLI, each part checked against the kernel's own files.
#
#   walk-limits.sh RESULTS
#
# Parts (each one line "walk-limits: PART: ok|FAILED (why) SECONDS" in the
# log and a row "limits/PART SECONDS STATUS" in RESULTS/steps.tsv):
#   create     create with memory, pids, CPU weight, quota and cpuset limits;
#              `grove limits` reads back what was set, the cgroup files agree
#   cpu        a busy loop under a quota of half a CPU gets at most that
#   oom        a process past the memory limit is OOM-killed; `grove info`
#              reports the event
#   forkbomb   a fork bomb is held at the pids limit; the host stays usable
#   device     a device node of the host's disk, in a rootfs directory and in
#              an image, cannot be read or written
#   disk-FS    a byte limit holds on FS (btrfs, ext4, xfs), and an inode limit
#              on ext4 and XFS (btrfs refuses one by name): the helper's depot
#              is moved there (policy `depot`, grove-helper restarted)
# Exit status: 0 when every part passed.
set -uo pipefail
RESULTS=$1
POLICY=/etc/grove/helper-policy.conf
ROOTFS=/var/lib/grove/rootfs/busybox
HANDLE=walk-limits
failures=0

say() { echo "walk-limits: $*"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
# fail WHY: print why and end the part (parts run in a subshell with set -e).
fail() { say "  FAILED: $*"; exit 1; }
# part NAME FUNCTION [ARGS]: run one part in a subshell with set -e (its
# EXIT trap cleans up), time it, record it.
part() {
    local name=$1 start=$EPOCHREALTIME status rc
    shift
    say "$name: start"
    (set -e; "$@")
    rc=$?
    if [[ $rc -eq 0 ]]; then status=ok; else status=FAILED; failures=$((failures + 1)); fi
    say "$name: $status $(since "$start")s"
    printf 'limits/%s\t%s\t%s\n' "$name" "$(since "$start")" "$status" >>"$RESULTS/steps.tsv"
}
# json EXPR: evaluate a Python expression over the JSON document on stdin (j).
json() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }
# cg HANDLE: the container's cgroup directory (wherever the helper put it).
cg() { find /sys/fs/cgroup -mindepth 1 -type d -name "$1" -print -quit; }
destroy() { grove destroy "$1" >/dev/null 2>&1 || true; }

part_create() {
    set -x
    destroy $HANDLE
    grove create --handle $HANDLE --limit-memory 64M --limit-pids 64 --limit-cpu 512 \
        --cpu-quota 50000/100000 --cpuset 0
    local limits dir
    limits=$(grove --json limits $HANDLE)
    echo "$limits"
    [[ $(json 'j["memory"]["limit_in_bytes"]' <<<"$limits") == 67108864 ]] || fail "memory read back"
    [[ $(json 'j["pid"]["max"]' <<<"$limits") == 64 ]] || fail "pids read back"
    [[ $(json 'j["cpu"]["weight"]' <<<"$limits") == 512 ]] || fail "CPU weight read back (shares 512)"
    [[ $(json 'j["cpu"]["quota_micros"]' <<<"$limits") == 50000 ]] || fail "CPU quota read back"
    dir=$(cg $HANDLE)
    [[ -n $dir ]] || fail "no cgroup named $HANDLE under /sys/fs/cgroup"
    echo "cgroup: $dir"
    grep -H . "$dir"/{memory.max,pids.max,cpu.max,cpu.weight,cpuset.cpus}
    [[ $(<"$dir/memory.max") == 67108864 ]] || fail "memory.max"
    [[ $(<"$dir/pids.max") == 64 ]] || fail "pids.max"
    [[ $(<"$dir/cpu.max") == "50000 100000" ]] || fail "cpu.max"
    # shares 512 → weight 59 (runc's and crun's conversion; 1024 → 100).
    [[ $(<"$dir/cpu.weight") == 59 ]] || fail "cpu.weight is not 59 for shares 512"
    [[ $(<"$dir/cpuset.cpus") == 0 ]] || fail "cpuset.cpus"
    # Nothing of a unit's settings leaks in: the container's own rlimit and
    # oom_score_adj, not the helper unit's LimitNOFILE/OOMScoreAdjust.
    local own
    own=$(grove run $HANDLE -- sh -c 'ulimit -n; cat /proc/self/oom_score_adj; grep Seccomp /proc/self/status')
    echo "$own"
    [[ $(sed -n 1p <<<"$own") == 1024 ]] || fail "the container's open-file limit is not its own 1024"
    [[ $(sed -n 2p <<<"$own") == 58 ]] || fail "the container's oom_score_adj is not 58 (wshd at -941, its processes 999 above)"
}

part_cpu() {
    set -x
    local dir before after t0 t1 used wall
    dir=$(cg $HANDLE)
    before=$(awk '$1 == "usage_usec" { print $2 }' "$dir/cpu.stat")
    t0=$EPOCHREALTIME
    grove run $HANDLE -- sh -c 'timeout 4 sh -c "while :; do :; done"; true'
    t1=$EPOCHREALTIME
    after=$(awk '$1 == "usage_usec" { print $2 }' "$dir/cpu.stat")
    used=$((after - before))
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000000 }')
    echo "used ${used} µs of CPU in ${wall} µs"
    # Half a CPU, with room for the last period and the accounting.
    (( used * 100 <= wall * 60 )) || fail "used $used µs in $wall µs: over a quota of half a CPU"
    (( used * 100 >= wall * 10 )) || fail "used $used µs in $wall µs: the loop barely ran"
}

part_oom() {
    set -x
    local rc=0 info
    # 128 MiB in one buffer, in a container limited to 64 MiB.
    grove run $HANDLE -- sh -c 'dd if=/dev/zero of=/dev/null bs=128M count=1' || rc=$?
    echo "exit $rc"
    [[ $rc -eq 137 ]] || fail "dd past the memory limit exited $rc, not 137 (SIGKILL by the OOM killer)"
    info=$(grove --json info $HANDLE)
    echo "$info"
    json '"\n".join(j["events"])' <<<"$info" | grep -q "Out of memory" ||
        fail "no out-of-memory event in grove info"
    grep -H . "$(cg $HANDLE)/memory.events"
}

part_forkbomb() {
    set -x
    local dir events
    dir=$(cg $HANDLE)
    # Each shell forks two of itself until fork fails. The CLI waits in the
    # background; the bomb runs until the container is stopped (also when
    # a check fails: the EXIT trap).
    grove run $HANDLE -- sh -c 'b() { b | b & }; b' </dev/null >/dev/null 2>&1 &
    trap "set +e; grove stop --kill $HANDLE; wait $!" EXIT
    sleep 15
    grep -H . "$dir"/pids.{current,max,events}
    events=$(awk '$1 == "max" { print $2 }' "$dir/pids.events")
    (( events > 0 )) || fail "pids.events max is $events: the limit was never hit"
    (( $(<"$dir/pids.current") <= 64 )) || fail "pids.current is over 64"
    timeout 30 grove ping || fail "grove ping during the fork bomb"
    # Stopped and destroyed, the container goes with all of the bomb.
    grove stop --kill $HANDLE
    grep -H . "$dir"/pids.current
    grove destroy $HANDLE
    [[ ! -e $dir ]] || fail "the container's cgroup $dir is left after destroy"
}

# A rootfs (and an image) with a node of the guest's root disk: neither
# reads nor writes reach the disk, and mknod inside gives nothing usable.
part_device() {
    set -x
    local disk major minor dir=/var/lib/grove/rootfs/walk-dev img=/var/lib/grove/images/walk-dev out
    trap "set +e; grove destroy walk-dev; rm -rf $dir $img $img.tar" EXIT
    disk=$(findmnt -no SOURCE /)
    major=$((16#$(stat -Lc %t "$disk"))) minor=$((16#$(stat -Lc %T "$disk")))
    rm -rf "$dir" "$img" "$img.tar"
    cp -a "$ROOTFS" "$dir"
    mknod "$dir/hostdisk" b "$major" "$minor"
    destroy walk-dev
    grove create --handle walk-dev --rootfs "$dir"
    out=$(grove run walk-dev -- sh -c 'ls -l /hostdisk; head -c 512 /hostdisk >/dev/null && echo READ' 2>&1) || true
    echo "$out"
    [[ $out != *READ* ]] || fail "the rootfs's device node was readable"
    out=$(grove run walk-dev -- sh -c 'echo x | dd of=/hostdisk bs=1 seek=100000000 2>&1 && echo WROTE' 2>&1) || true
    echo "$out"
    [[ $out != *WROTE* ]] || fail "the rootfs's device node was writable"
    out=$(grove run walk-dev -- sh -c "mknod /n b $major $minor && head -c 1 /n >/dev/null && echo MADE" 2>&1) || true
    echo "$out"
    [[ $out != *MADE* ]] || fail "a device node made inside was readable"
    grove destroy walk-dev
    # The same node in an image (docker-archive: one layer, the rootfs).
    mkdir -p "$img"
    tar -C "$dir" -cf "$img/layer.tar" .
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}' \
        "$(sha256sum "$img/layer.tar" | cut -d' ' -f1)" >"$img/config.json"
    # The config is named by its sha256, as docker save names it.
    local config
    config=$(sha256sum "$img/config.json" | cut -d' ' -f1).json
    mv "$img/config.json" "$img/$config"
    printf '[{"Config":"%s","RepoTags":["walk-dev:latest"],"Layers":["layer.tar"]}]' "$config" >"$img/manifest.json"
    tar -C "$img" -cf "$img.tar" manifest.json "$config" layer.tar
    grove create --handle walk-dev --image "docker-archive:$img.tar"
    out=$(grove run walk-dev -- sh -c 'ls -l /hostdisk; head -c 512 /hostdisk >/dev/null && echo READ' 2>&1) || true
    echo "$out"
    [[ $out != *READ* ]] || fail "the image's device node was readable"
}

# part_disk FS MOUNTPOINT: the helper's depot moved to FS (the policy's
# `depot`, grove-helper restarted); a 32 MiB limit holds there. The EXIT
# trap puts the policy back.
part_disk() {
    set -x
    local fs=$1 mnt=$2 out usage made
    findmnt "$mnt"
    mkdir -p "$mnt/depot"
    cp "$POLICY" "$POLICY.walk"
    trap "set +e; grove destroy walk-disk; mv -f $POLICY.walk $POLICY; systemctl restart grove-helper.service; timeout 60 grove ping" EXIT
    sed -i '/^depot *=/d' "$POLICY"
    echo "depot = \"$mnt/depot\"" >>"$POLICY"
    systemctl restart grove-helper.service
    timeout 60 grove ping
    destroy walk-disk
    grove create --handle walk-disk --limit-disk 32M --disk-scope exclusive
    grove --json limits walk-disk
    out=$(grove run walk-disk -- sh -c 'dd if=/dev/zero of=/big bs=1M count=64 2>&1; sync' 2>&1) || true
    echo "$out"
    # XFS reports a full project as ENOSPC (as for directory quotas); ext4
    # and btrfs as EDQUOT.
    [[ $out == *"quota exceeded"* || ($fs == xfs && $out == *"No space left"*) ]] ||
        fail "writing 64 MiB past a 32 MiB limit on $fs did not fail with EDQUOT (ENOSPC on XFS)"
    sync -f "$mnt/depot" # btrfs counts qgroup usage at its commits
    usage=$(grove --json metrics walk-disk | json 'j["disk"]["exclusive_bytes_used"]')
    echo "exclusive bytes used: $usage"
    (( usage >= 16 << 20 && usage <= 33 << 20 )) || fail "metrics report $usage bytes used, not about 32 MiB"
    grove destroy walk-disk
    # Inodes: project quotas count them (ext4, XFS); btrfs refuses by name.
    if [[ $fs == btrfs ]]; then
        out=$(grove create --handle walk-disk --limit-disk-inodes 50 --disk-scope exclusive 2>&1) &&
            fail "btrfs took an inode limit"
        echo "$out"
        [[ $out == *inode* ]] || fail "btrfs's refusal does not name inodes: $out"
        return 0
    fi
    grove create --handle walk-disk --limit-disk-inodes 50 --disk-scope exclusive
    out=$(grove run walk-disk -- sh -c 'mkdir /many; i=0; while [ $i -lt 100 ]; do true >/many/$i || break; i=$((i + 1)); done; echo made $i' 2>&1) || true
    echo "$out"
    made=$(sed -n 's/^made \([0-9]*\)$/\1/p' <<<"$out")
    [[ -n $made ]] && (( made < 50 )) || fail "made ${made:-?} files under an inode limit of 50"
}

main() {
    part create part_create
    part cpu part_cpu
    part oom part_oom
    part forkbomb part_forkbomb
    destroy $HANDLE
    part device part_device
    part disk-btrfs part_disk btrfs /var/lib/grove-test
    part disk-ext4 part_disk ext4 /var/lib/grove-test-ext4
    part disk-xfs part_disk xfs /var/lib/grove-test-xfs
    say "done: $failures part(s) failed"
    [[ $failures -eq 0 ]]
}

main
