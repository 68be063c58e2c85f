#!/usr/bin/env bash
# Print the guest lane's results and decide its exit status.
#
#   scripts/guest/summary.sh RESULTS
#
# Reads host-steps.tsv (run.sh, ./dev), steps.tsv and tests.tsv (in-guest.sh)
# and plan.tsv (what should have run). Exit 1 when a step failed, a planned
# test file did not run, or any test failed; 0 otherwise.
set -uo pipefail
RESULTS=$1
bad=0

printf '==> guest lane steps (seconds)\n'
for f in host-steps.tsv steps.tsv; do
    [[ -f $RESULTS/$f ]] || continue
    while IFS=$'\t' read -r name secs status; do
        printf '    %-40s %8s  %s\n' "$name" "$secs" "$status"
        [[ $status == ok || $status == "exit 0" ]] || bad=1
    done <"$RESULTS/$f"
done
if [[ ! -f $RESULTS/finished ]]; then
    printf '    the lane did not finish in the guest (see %s/console.log)\n' "$RESULTS"
    bad=1
fi

printf '==> integration tests in the guest\n'
printf '    %-20s %6s %6s %7s %8s  %s\n' file passed failed ignored seconds status
tp=0 tf=0 ti=0
declare -A ran=()
if [[ -f $RESULTS/tests.tsv ]]; then
    while IFS=$'\t' read -r name passed failed ignored secs status; do
        ran[$name]=1
        printf '    %-20s %6s %6s %7s %8s  %s\n' "$name" "$passed" "$failed" "$ignored" "$secs" "$status"
        tp=$((tp + passed)) tf=$((tf + failed)) ti=$((ti + ignored))
        [[ $status == ok ]] || bad=1
    done <"$RESULTS/tests.tsv"
fi
while IFS=$'\t' read -r name _; do
    if [[ -n $name && -z ${ran[$name]:-} ]]; then
        printf '    %-20s %6s %6s %7s %8s  %s\n' "$name" - - - - "not run"
        bad=1
    fi
done <"$RESULTS/plan.tsv"
printf '    %-20s %6s %6s %7s\n' total "$tp" "$tf" "$ti"

for f in "$RESULTS"/tests/*.failed; do
    [[ -s $f ]] || continue
    printf '    failed in %s:\n' "$(basename "$f" .failed)"
    sed 's/^/        /' "$f"
done
if [[ -n ${GROVE_LANE_START:-} ]]; then
    printf '==> lane total: %ss\n' "$(awk -v a="$GROVE_LANE_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')"
fi
printf '    results: %s (console.log, journal.txt, tests/<file>.log)\n' "$RESULTS"
exit "$bad"
