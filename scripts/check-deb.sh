#!/usr/bin/env bash
# Check a Grove .deb before anyone installs it (./dev test runs this after
# ./dev package; the guest lane then installs it on a fresh Debian 12):
#
#   scripts/check-deb.sh DEB
#
# What is in it and where, the conffiles, the control fields, that no unit
# names ./dev install's /usr/local paths, a man page per subcommand, and
# lintian with no error or warning (packaging/debian/lintian-overrides says
# why for each one it overrides). Exit 1 on any finding, each named.
set -uo pipefail
deb=$1
bad=0
fail() { printf '    FAIL: %s\n' "$*"; bad=1; }
ok() { printf '    ok: %s\n' "$*"; }
[[ -f $deb ]] || { echo "no such package: $deb" >&2; exit 1; }

contents=$(dpkg-deb -c "$deb" | awk '{ print $1, $2, $6 }') || { echo "dpkg-deb -c failed" >&2; exit 1; }
for f in ./usr/libexec/grove/grove-helper ./usr/libexec/grove/groved ./usr/libexec/grove/grove-garden \
    ./usr/libexec/grove/wshd ./usr/libexec/grove/build-rootfs ./usr/bin/grove \
    ./lib/systemd/system/grove-containers.service ./lib/systemd/system/grove-helper.socket \
    ./lib/systemd/system/grove-helper.service ./lib/systemd/system/groved.socket \
    ./lib/systemd/system/groved.service ./lib/systemd/system/grove-garden.socket \
    ./lib/systemd/system/grove-garden.service ./usr/lib/tmpfiles.d/grove.conf \
    ./etc/grove/helper-policy.conf ./etc/grove/groved.conf ./etc/grove/garden.conf \
    ./usr/share/doc/grove/copyright ./usr/share/man/man1/grove.1.gz \
    ./usr/share/bash-completion/completions/grove; do
    grep -q " $f\$" <<<"$contents" || fail "missing $f"
done
# Executables root:root 0755 and nothing writable by group or others.
while read -r mode owner path; do
    [[ $owner == root/root ]] || fail "$path is owned by $owner"
    [[ ${mode:5:1} == w || ${mode:8:1} == w ]] && fail "$path is writable by others ($mode)"
done <<<"$contents"
ok "$(wc -l <<<"$contents") entries, all root/root, none group- or world-writable"

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
dpkg-deb -R "$deb" "$work/pkg"
conffiles=$(sort "$work/pkg/DEBIAN/conffiles")
want=$(printf '/etc/grove/%s\n' garden.conf groved.conf helper-policy.conf)
[[ $conffiles == "$want" ]] && ok "conffiles: $(tr '\n' ' ' <<<"$conffiles")" || fail "conffiles are: $conffiles"
depends=$(dpkg-deb -f "$deb" Depends)
for d in libc6 iproute2 nftables systemd; do
    grep -qw "$d" <<<"$depends" || fail "Depends lacks $d: $depends"
done
ok "Depends: $depends"
if grep -rl /usr/local "$work/pkg/lib/systemd/system" "$work/pkg/etc/grove"; then
    fail "units or config name /usr/local (./dev install's paths)"
else
    ok "units and config name /usr/libexec/grove"
fi
grep -q '^wshd = "/usr/libexec/grove/wshd"$' "$work/pkg/etc/grove/helper-policy.conf" ||
    fail "the policy's wshd is not /usr/libexec/grove/wshd"
file -b "$work/pkg/usr/libexec/grove/wshd" | grep -Eq 'static(-pie)? linked|statically linked' ||
    fail "wshd is not static"
# Release builds, stripped: a debug build of groved is over 100 MB.
for b in groved grove-helper grove-garden wshd; do
    readelf -S "$work/pkg/usr/libexec/grove/$b" | grep -Eq '\.debug_(info|line)' && fail "$b is not stripped"
done
size=$(stat -c %s "$work/pkg/usr/libexec/grove/groved")
[[ $size -lt 30000000 ]] || fail "groved is $size bytes: a debug build?"
# A man page for every subcommand the CLI lists (and its nested ones).
pages=$(ls "$work/pkg/usr/share/man/man1")
for sub in $("$work/pkg/usr/bin/grove" --help | awk '/^Commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ { exit }'); do
    [[ $sub == help ]] && continue
    grep -qx "grove-$sub.1.gz" <<<"$pages" || fail "no man page grove-$sub.1.gz"
done
ok "$(wc -l <<<"$pages") man pages"
for script in postinst prerm postrm; do
    sh -n "$work/pkg/DEBIAN/$script" || fail "$script: syntax"
    grep -Eq '^[[:space:]]*(systemctl|deb-systemd-invoke)( .*)? (enable|start)( |$)' "$work/pkg/DEBIAN/$script" &&
        fail "$script enables or starts a unit (the package enables nothing)"
done
ok "maintainer scripts parse and enable nothing"

if command -v lintian >/dev/null; then
    rc=0
    out=$(lintian --fail-on error,warning --tag-display-limit 0 "$deb" 2>&1) || rc=$?
    # Its warning about root is about lintian, not the package.
    out=$(grep -v '^running with root privileges is not recommended!$' <<<"$out")
    if [[ $rc -eq 0 ]]; then
        ok "lintian: no error or warning${out:+ (}${out:+$(wc -l <<<"$out") info/pedantic line(s))}"
        [[ -n $out ]] && sed 's/^/        /' <<<"$out"
    else
        fail "lintian:"
        sed 's/^/        /' <<<"$out"
    fi
else
    fail "lintian is not installed (./dev package installs it)"
fi
exit "$bad"
