#!/usr/bin/env bash
# Print the guest lane's results and decide its exit status.
#
#   scripts/guest/summary.sh RESULTS
#
# Reads host-steps.tsv (run.sh, ./dev), steps.tsv and tests.tsv (in-guest.sh)
# plan.tsv (what should have run) and selection.tsv (what tests.tsv left to
# ./dev test). Exit 1 when a step failed, a planned test file did not run or
# ran other tests than selected, or any test failed; 0 otherwise.
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

# What scripts/guest/tests.tsv leaves to ./dev test (./dev test-guest
# without --only writes selection.tsv: file, rule, tests, selected, why);
# each file ran exactly the tests it selected.
if [[ -f $RESULTS/selection.tsv ]]; then
    declare -A counted=()
    if [[ -f $RESULTS/tests.tsv ]]; then
        while IFS=$'\t' read -r name passed failed ignored _; do
            counted[$name]=$((passed + failed + ignored))
        done <"$RESULTS/tests.tsv"
    fi
    printf '==> left to ./dev test (scripts/guest/tests.tsv)\n'
    in_guest=0 all=0
    while IFS=$'\t' read -r name rule total selected why; do
        all=$((all + total)) in_guest=$((in_guest + selected))
        if [[ -n ${counted[$name]:-} && ${counted[$name]} -ne $selected ]]; then
            printf '    %s ran %s tests, but its rule selects %s\n' "$name" "${counted[$name]}" "$selected"
            bad=1
        fi
        [[ $rule == all ]] && continue
        printf '    %-18s %3s of %3s in the guest: %s\n' "$name" "$selected" "$total" "$why"
    done <"$RESULTS/selection.tsv"
    printf '    in the guest: %s of the %s integration tests\n' "$in_guest" "$all"
fi

for f in "$RESULTS"/tests/*.failed; do
    [[ -s $f ]] || continue
    printf '    failed in %s:\n' "$(basename "$f" .failed)"
    sed 's/^/        /' "$f"
    # CI shows only what this prints: each failure's own report (libtest's
    # "---- name stdout ----" sections), bounded, so a flaky failure can be
    # diagnosed from CI's output without the results directory.
    log=${f%.failed}.log
    if [[ -f $log ]]; then
        printf '    its output (%s, first 60 lines of the failures):\n' "$log"
        # (Backtrace frames left out: the panic's place and message say it.)
        awk '/^---- .* stdout ----$/ { on = 1 } /^failures:$/ && on { exit }
             /^ +[0-9]+: |^ +at |^stack backtrace:|^note: Some details/ { next } on' "$log" |
            head -n 60 | sed 's/^/        | /'
    fi
done
if [[ -n ${GROVE_LANE_START:-} ]]; then
    printf '==> lane total: %ss\n' "$(awk -v a="$GROVE_LANE_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')"
fi
printf '    results: %s (console.log, journal.txt, tests/<file>.log)\n' "$RESULTS"
exit "$bad"
