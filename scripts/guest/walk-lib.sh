# What the operator walk-throughs share (sourced by walk-systemd.sh and
# walk-package.sh): timed checks appended to $STEPS as "$WALK_PREFIX: NAME",
# `failed` set to 1 when one fails. The sourcing script sets STEPS and
# WALK_PREFIX first.
failed=0

# since START: seconds from an $EPOCHREALTIME to now, one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
# check NAME FUNCTION [ARGS]: one timed check, in a subshell with -e and -x.
check() {
    local name=$1 start=$EPOCHREALTIME rc
    shift
    echo "=== $WALK_PREFIX: $name"
    (set -ex; "$@")
    rc=$?
    printf '%s: %s\t%s\t%s\n' "$WALK_PREFIX" "$name" "$(since "$start")" \
        "$([[ $rc -eq 0 ]] && echo ok || echo "failed($rc)")" >>"$STEPS"
    [[ $rc -eq 0 ]] || { echo "=== $WALK_PREFIX: $name FAILED ($rc)"; failed=1; }
}
fail() { echo "$WALK_PREFIX: $*" >&2; return 1; }
