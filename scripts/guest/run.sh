#!/usr/bin/env bash
# Boot the guest lane (it reboots itself once) and report (host side; ./dev test-guest calls it
# after building everything and writing RESULTS/plan.tsv).
#
#   scripts/guest/run.sh SRC RESULTS [--keep]
#
# SRC: the built checkout, shared read-only. RESULTS: the results dir, shared
# writable; it gets console.log (the serial console, each line stamped with
# seconds since qemu started) next to what in-guest.sh writes.
# --keep: boot a writable copy of the image and keep it with the extra disks
# (their dir is printed) instead of discarding the guest's writes.
# Environment: GROVE_GUEST_CACHE (image cache, default /var/cache/grove-guest),
# GROVE_GUEST_TIMEOUT (seconds qemu may run, default 3600).
# Exit status: 0 when every step and every test passed.
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
SRC=$1 RESULTS=$2 KEEP=${3:-}
CACHE=${GROVE_GUEST_CACHE:-/var/cache/grove-guest}
[[ $SRC != *[[:space:]]* ]] || { echo "run.sh: the checkout's path has a space: $SRC" >&2; exit 2; }
TIMEOUT=${GROVE_GUEST_TIMEOUT:-3600}

say() { printf '    %s\n' "$*"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
# host_step NAME SECONDS STATUS: the host's own steps, next to the guest's.
host_step() { printf '%s\t%s\t%s\n' "$@" >>"$RESULTS/host-steps.tsv"; }

# ---- the image (cached by its inputs)
t=$EPOCHREALTIME
# One lane at a time per cache: the image and its rebuild are shared.
exec 9>"$CACHE.lock"
flock 9
image=$("$HERE/build-image.sh" "$CACHE")
host_step "guest image" "$(since "$t")" ok
say "image: $image ($(grep -h '^kernel=' "$image/IMAGE"))"

# ---- a scratch dir for this boot: the extra disks (sparse, formatted here:
# no loop mounts) and, with --keep, a writable copy of the root image.
run=$(mktemp -d /var/tmp/grove-guest.XXXXXX)
qemu_pid=""
cleanup() {
    if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill -TERM "$qemu_pid" 2>/dev/null
        sleep 2
        kill -KILL "$qemu_pid" 2>/dev/null || true
    fi
    if [[ $KEEP == --keep ]]; then
        say "kept: $run (root.img and the extra disks)"
    else
        rm -rf --one-file-system -- "$run"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
t=$EPOCHREALTIME
truncate -s 20G "$run/btrfs.img" && mkfs.btrfs -q "$run/btrfs.img" >/dev/null
truncate -s 8G "$run/ext4.img" && mkfs.ext4 -q -O quota,project "$run/ext4.img"
truncate -s 8G "$run/xfs.img" && mkfs.xfs -q "$run/xfs.img"
root=(-drive "file=$image/root.img,format=raw,if=virtio,snapshot=on")
if [[ $KEEP == --keep ]]; then
    cp --sparse=always "$image/root.img" "$run/root.img"
    root=(-drive "file=$run/root.img,format=raw,if=virtio")
fi
disks=()
for d in btrfs ext4 xfs; do
    disks+=(-drive "file=$run/$d.img,format=raw,if=none,id=$d"
        -device "virtio-blk-pci,drive=$d,serial=grove-$d")
done
host_step "disks" "$(since "$t")" ok

# ---- boot. TCG: KVM hangs on these machines (no nested virtualization).
# No network device at all: the guest has no route out. virtio-rng: the
# guest's getrandom() need not wait for entropy under emulation.
rm -f "$RESULTS/finished"
start=$EPOCHREALTIME
# The serial console, line by line: stamped into console.log, the lane's
# markers echoed live and their times noted for the summary.
console() {
    local line
    while IFS= read -r line; do
        line=${line%$'\r'}
        printf '[%7s] %s\n' "$(since "$start")" "$line" >>"$RESULTS/console.log"
        case $line in
            *grove-lane:\ started*) echo "$EPOCHREALTIME" >"$run/t_started" ;;
            *grove-lane:\ rebooting*) echo "$EPOCHREALTIME" >"$run/t_rebooting" ;;
            *grove-lane:\ rebooted*) echo "$EPOCHREALTIME" >"$run/t_rebooted" ;;
            *grove-lane:\ done*) echo "$EPOCHREALTIME" >"$run/t_done" ;;
        esac
        [[ $line == *grove-lane:* ]] && printf '    [%6.0fs] %s\n' "$(since "$start")" "${line#*grove-lane: }"
    done
}
# The lane reboots the guest once (in-guest.sh): qemu keeps running across
# it (snapshot=on keeps the root disk's writes until qemu exits) and exits
# at the second boot's poweroff.
qemu-system-x86_64 -accel tcg -cpu max -m 4G -smp 2 -nographic -nic none \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=LABEL=grove-root rw console=ttyS0 mitigations=off grove.src=$SRC" \
    "${root[@]}" "${disks[@]}" -device virtio-rng-pci \
    -virtfs "local,path=$SRC,mount_tag=host,security_model=none,readonly=on" \
    -virtfs "local,path=$RESULTS,mount_tag=results,security_model=none" \
    </dev/null > >(console) 2>&1 &
qemu_pid=$!
say "qemu pid $qemu_pid (console: $RESULTS/console.log)"
timed_out=0
while kill -0 "$qemu_pid" 2>/dev/null; do
    if (( ${EPOCHSECONDS} - ${start%.*} > TIMEOUT )); then
        say "the guest ran past GROVE_GUEST_TIMEOUT=${TIMEOUT}s; stopping qemu (pid $qemu_pid)"
        timed_out=1
        kill -TERM "$qemu_pid" 2>/dev/null
        break
    fi
    sleep 1
done
qrc=0
wait "$qemu_pid" || qrc=$?
qemu_pid=""
end=$EPOCHREALTIME
sleep 0.5 # the console reader drains the last lines
if [[ -f $run/t_started ]]; then
    host_step "boot (qemu start to the lane's unit)" "$(awk -v a="$start" -v b="$(<"$run/t_started")" 'BEGIN { printf "%.1f", b - a }')" ok
fi
if [[ -f $run/t_rebooting && -f $run/t_rebooted ]]; then
    host_step "reboot (the lane's reboot to its unit again)" "$(awk -v a="$(<"$run/t_rebooting")" -v b="$(<"$run/t_rebooted")" 'BEGIN { printf "%.1f", b - a }')" ok
fi
if [[ -f $run/t_done ]]; then
    host_step "shutdown (lane done to qemu exit)" "$(awk -v a="$(<"$run/t_done")" -v b="$end" 'BEGIN { printf "%.1f", b - a }')" ok
fi
host_step "guest total (qemu start to exit)" "$(since "$start")" \
    "$([[ $timed_out -eq 1 ]] && echo "timeout" || echo "exit $qrc")"

# ---- the summary
"$HERE/summary.sh" "$RESULTS"
