#!/usr/bin/env bash
# Write Grove's default configuration files, the ones ./dev install and the
# Debian package (./dev package) ship, into a directory:
#
#   scripts/default-config.sh OUT_DIR LIBEXEC_DIR
#
# OUT_DIR gets helper-policy.conf, groved.conf and garden.conf (TOML, every
# key in README "Configuration"); LIBEXEC_DIR is where wshd is installed
# (/usr/local/libexec/grove for ./dev install, /usr/libexec/grove for the
# package). One source for both, so an installed host and a packaged one
# start from the same defaults.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 OUT_DIR LIBEXEC_DIR" >&2; exit 2; }
out=$1 libexec=$2
GROVE_USER=grove STATE_DIR=/var/lib/grove RUN_DIR=/run/grove
mkdir -p "$out"
printf '%s\n' "# grove-helper's policy, TOML (README.md \"Configuration\" lists every key)." \
    "server_user = \"$GROVE_USER\"" "wshd = \"$libexec/wshd\"" \
    "# Bounds of one image unpack (the defaults): uncompressed bytes, tar entries, seconds." \
    "# image_max_bytes = 17179869184" "# image_max_entries = 1000000" \
    "# image_unpack_timeout = 600" \
    "# pids.max of a container created without a pids limit; of all containers together" \
    "# (default: half of the smaller of kernel.pid_max and kernel.threads-max)." \
    "# default_pids_limit = 4096" "# total_pids_limit = 16384" >"$out/helper-policy.conf"
printf '%s\n' "# groved's configuration, TOML (README.md \"Configuration\" lists every key)." \
    "listen = \"$RUN_DIR/grove.sock\"" "helper_socket = \"$RUN_DIR/helper.sock\"" \
    "state_dir = \"$STATE_DIR/server\"" >"$out/groved.conf"
printf '%s\n' "# grove-garden's configuration, TOML (README.md \"Garden wire compatibility\")." \
    "# Garden's protocol has no authentication: keep listen_tcp on loopback." \
    "listen = \"$RUN_DIR/garden.sock\"" "grove_socket = \"$RUN_DIR/grove.sock\"" >"$out/garden.conf"
