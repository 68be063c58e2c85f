#!/usr/bin/env bash
# An operator's walk through Grove under systemd, in the guest lane (run by
# in-guest.sh as root, Grove installed by ./dev install, its sockets
# enabled). Only systemctl, journalctl, systemd-cgls, the `grove` CLI and
# what /proc and /sys show: what an operator has.
#
#   walk-systemd.sh walk          RESULTS   containers in their unit; stop+start and
#                                           restart of each service keep them; sockets
#                                           stay and re-activate; stopping the
#                                           containers' unit is quick
#   walk-systemd.sh before-reboot RESULTS   leave a container running for the reboot
#   walk-systemd.sh after-reboot  RESULTS   (second boot) how long the shutdown took to
#                                           stop it; nothing of it is left
#
# Each check is timed and appended to RESULTS/steps.tsv as "walk: NAME";
# exit status 1 when any failed.
set -uo pipefail
MODE=$1 RESULTS=$2
STEPS=$RESULTS/steps.tsv
UNIT=grove-containers.service
WALK_PREFIX=walk
# shellcheck source=scripts/guest/walk-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/walk-lib.sh"

# The containers' cgroup parent: <the unit's cgroup>/grove (cgroup_parent).
parent() { echo "/sys/fs/cgroup$(systemctl show -P ControlGroup "$UNIT")/grove"; }
# The pid of a process named NAME in container HANDLE's cgroup.
pid_in() {
    local p
    for p in $(cat "$(parent)/$1/cgroup.procs"); do
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == "$2" ]] && { echo "$p"; return 0; }
    done
    return 1
}
# The container's wshd: PID 1 of its PID namespace (NSpid ends in 1).
wshd_of() {
    local p
    for p in $(cat "$(parent)/$1/cgroup.procs"); do
        grep -qE '^NSpid:.*\s1$' "/proc/$p/status" 2>/dev/null && { echo "$p"; return 0; }
    done
    return 1
}
# Wait up to SECONDS for COMMAND to succeed.
wait_for() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    "$@"
}
# Start a process in a container that outlives the CLI (and groved restarts).
start_bg() {
    local handle=$1 id=$2
    shift 2
    setsid grove run --id "$id" "$handle" -- "$@" </dev/null >/dev/null 2>&1 &
}
usable() { [[ $(grove run "$1" -- /bin/echo usable) == usable ]]; }
garden_ping() {
    python3 - <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(60)
s.connect("/run/grove/garden.sock")
s.sendall(b"GET /ping HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
reply = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    reply += chunk
print(reply.split(b"\r\n")[0].decode())
sys.exit(0 if reply.startswith(b"HTTP/1.1 200") else 1)
EOF
}
# What a socket activation of each service takes: a request that needs it.
activate() {
    case $1 in
        grove-helper) grove limits walk1 ;; # groved asks the helper
        groved) grove ping ;;
        grove-garden) garden_ping ;;
    esac
}
socket_path() {
    case $1 in
        grove-helper) echo /run/grove/helper.sock ;;
        groved) echo /run/grove/grove.sock ;;
        grove-garden) echo /run/grove/garden.sock ;;
    esac
}

containers_in_their_unit() {
    systemctl is-active "$UNIT"
    grove create --handle walk1
    local cg
    cg=$(parent)/walk1
    [[ -d $cg ]] || fail "no cgroup $cg"
    systemd-cgls --no-pager -u "$UNIT" | tee /dev/stderr | grep -q 'walk1' ||
        fail "systemd-cgls does not show walk1 under $UNIT"
    start_bg walk1 sleeper /bin/sleep 100000
    wait_for 30 pid_in walk1 sleep
    pid_in walk1 sleep >"$WORK/sleeper"
    usable walk1
    # Containers are forked by the helper's spawner: it carries no seccomp
    # filter of the unit's (the helper's own allowlist is on its main
    # process only), so neither do they.
    local main spawner
    main=$(systemctl show -P MainPID grove-helper.service)
    spawner=$(pgrep -P "$main" | head -1)
    grep -E '^(Seccomp|Seccomp_filters):' "/proc/$spawner/status"
    grep -qE '^Seccomp_filters:\s+0$' "/proc/$spawner/status" ||
        fail "the helper's spawner has seccomp filters"
    # wshd's own limits, not the helper unit's (LimitNOFILE=65536,
    # OOMScoreAdjust=-500): 1024:524288 open files, oom_score_adj -941.
    local wshd
    wshd=$(wshd_of walk1)
    grep 'Max open files' "/proc/$wshd/limits"
    grep -qE 'Max open files +1024 +524288' "/proc/$wshd/limits" || fail "wshd's open-file limit"
    [[ $(cat "/proc/$wshd/oom_score_adj") == -941 ]] || fail "wshd's oom_score_adj: $(cat "/proc/$wshd/oom_score_adj")"
}

# The container and its process are the same ones as before, and usable.
kept() {
    local before
    before=$(cat "$WORK/sleeper")
    [[ $(pid_in walk1 sleep) == "$before" ]] || fail "walk1's sleep (pid $before) is gone"
    usable walk1
}

stop_start() {
    local svc=$1
    systemctl stop "$svc.service"
    [[ $(systemctl is-active "$svc.service") != active ]] || fail "$svc.service still active"
    systemctl is-active "$svc.socket"
    [[ -S $(socket_path "$svc") ]] || fail "$(socket_path "$svc") is gone"
    systemctl is-active "$UNIT"
    # The socket starts the service again on the next request.
    activate "$svc"
    systemctl is-active "$svc.service"
    kept
}

restart() {
    local svc=$1
    systemctl restart "$svc.service"
    systemctl is-active "$svc.service" "$svc.socket" "$UNIT"
    activate "$svc"
    kept
}

stop_containers_unit() {
    grove create --handle walk2
    # One process exits on SIGTERM (walk1's sleep), one only after a while.
    start_bg walk2 slow /bin/sh -c 'trap "sleep 1; exit 0" TERM; while :; do sleep 1; done'
    wait_for 30 pid_in walk2 sh
    local t=$EPOCHREALTIME secs
    systemctl stop "$UNIT"
    secs=$(since "$t")
    echo "systemctl stop $UNIT: ${secs} s"
    printf 'walk: (stop %s with 2 containers, seconds)\t%s\tok\n' "$UNIT" "$secs" >>"$STEPS"
    awk -v s="$secs" 'BEGIN { exit !(s < 15) }' || fail "stopping $UNIT took $secs s"
    journalctl --no-pager -b -u "$UNIT" | tail -8
    # The helper and its socket went with it (nothing restarts them
    # meanwhile); groved's socket stays.
    [[ $(systemctl is-active grove-helper.service) != active ]] || fail "grove-helper.service still active"
    [[ $(systemctl is-active grove-helper.socket) != active ]] || fail "grove-helper.socket still active"
    systemctl is-active groved.socket
    # Started again, the containers are stopped, and destroyable.
    systemctl start "$UNIT"
    systemctl is-active grove-helper.socket
    grove destroy walk1
    grove destroy walk2
    systemctl is-active "$UNIT" grove-helper.service
    [[ -z $(grove list) ]] || fail "containers left: $(grove list)"
    [[ ! -e /var/lib/grove/depot/walk1 && ! -e /var/lib/grove/depot/walk2 ]] || fail "depot dirs left"
}

leave_one_running() {
    # The reboot's shutdown reads the journal of this boot afterwards.
    mkdir -p /var/log/journal
    systemd-tmpfiles --create --prefix /var/log/journal
    journalctl --flush
    grove create --handle survivor
    start_bg survivor stubborn /bin/sh -c 'trap "" TERM; while :; do sleep 1; done'
    wait_for 30 pid_in survivor sh
    [[ -d /var/lib/grove/depot/survivor ]]
    [[ -f /var/lib/grove/server/containers/survivor.json ]]
}

shutdown_time() {
    journalctl --no-pager -b -1 -o short-monotonic -u "$UNIT" | tee "$RESULTS/walk-shutdown.txt"
    # "[  123.456789] host systemd[1]: Stopping grove-containers.service ..."
    local start stop secs
    # The last stop of the boot (the walk stopped it once before).
    start=$(grep 'Stopping grove-containers' "$RESULTS/walk-shutdown.txt" | tail -1 | sed -E 's/^\[ *([0-9.]+)\].*/\1/')
    stop=$(grep -E 'Stopped grove-containers|grove-containers.service: Deactivated' "$RESULTS/walk-shutdown.txt" |
        tail -1 | sed -E 's/^\[ *([0-9.]+)\].*/\1/')
    [[ -n $start && -n $stop ]] || fail "no stop of $UNIT in the previous boot's journal"
    secs=$(awk -v a="$start" -v b="$stop" 'BEGIN { printf "%.1f", b - a }')
    printf 'walk: (shutdown: stop %s with 1 container, seconds)\t%s\tok\n' "$UNIT" "$secs" >>"$STEPS"
    grep -q 'grove-containers: stopped in' "$RESULTS/walk-shutdown.txt" || fail "the keeper did not say it stopped them"
    if grep -q 'timed out' "$RESULTS/walk-shutdown.txt"; then fail "the stop timed out"; fi
    awk -v s="$secs" 'BEGIN { exit !(s < 15) }' || fail "the shutdown took $secs s to stop $UNIT"
}

nothing_stale() {
    # Either daemon starts on this first request and cleans up.
    local i
    for ((i = 0; i < 60; i++)); do
        [[ -z $(grove list) && ! -e /var/lib/grove/depot/survivor ]] && break
        sleep 1
    done
    [[ -z $(grove list) ]] || fail "containers listed after the reboot: $(grove list)"
    [[ ! -e /var/lib/grove/depot/survivor ]] || fail "the depot dir of survivor is left"
    [[ ! -e /var/lib/grove/server/containers/survivor.json ]] || fail "groved's record of survivor is left"
    journalctl --no-pager -b -u grove-helper.service -u groved.service | grep -iE 'earlier boot'
    journalctl --no-pager -b -u grove-helper.service | grep -q 'survivor: from an earlier boot' ||
        fail "the helper did not log survivor's destruction"
    # And a new container works.
    grove create --handle after
    usable after
    grove destroy after
}

WORK=$(mktemp -d)
trap 'rm -rf -- "$WORK"' EXIT
case $MODE in
    walk)
        check "containers in $UNIT" containers_in_their_unit
        for svc in grove-helper groved grove-garden; do
            check "stop+start $svc (re-activated, container kept)" stop_start "$svc"
            check "restart $svc (container kept)" restart "$svc"
        done
        check "stop $UNIT (containers stopped, destroyable)" stop_containers_unit
        ;;
    before-reboot) check "a container left running for the reboot" leave_one_running ;;
    after-reboot)
        check "shutdown stopped $UNIT quickly" shutdown_time
        check "no container of the earlier boot left" nothing_stale
        ;;
    *) echo "usage: walk-systemd.sh walk|before-reboot|after-reboot RESULTS" >&2; exit 2 ;;
esac
exit "$failed"
