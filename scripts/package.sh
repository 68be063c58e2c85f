#!/usr/bin/env bash
# Assemble Grove's Debian package from release builds (./dev package runs
# this after `cargo build --release`; README "Debian package").
#
#   scripts/package.sh RELEASE_DIR OUT_DIR
#
# RELEASE_DIR holds grove-helper, groved, grove-garden, grove and the static
# wshd. Writes OUT_DIR/grove_<version>_<arch>.deb; prints its path on stdout
# (and nothing else there: what it says goes to stderr).
# Paths in the package (Debian's, not ./dev install's /usr/local ones):
#   /usr/libexec/grove/{grove-helper,groved,grove-garden,wshd,build-rootfs}
#   /usr/bin/grove, /usr/share/man/man1/grove*.1.gz, bash completion
#   /lib/systemd/system/*.{service,socket}, /usr/lib/tmpfiles.d/grove.conf
#   /etc/grove/{helper-policy,groved,garden}.conf (conffiles)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -eq 2 ]] || { echo "usage: $0 RELEASE_DIR OUT_DIR" >&2; exit 2; }
release=$1 out=$2
log() { printf '    %s\n' "$*" >&2; }
die() { printf 'package: error: %s\n' "$*" >&2; exit 1; }

for b in grove-helper groved grove-garden grove wshd; do
    [[ -x $release/$b ]] || die "$release/$b is not built"
done
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
[[ -n $version ]] || die "no version in Cargo.toml's [workspace.package]"
arch=$(dpkg --print-architecture)
deb=$out/grove_${version}_${arch}.deb
stage=$out/stage
rm -rf -- "$stage"
mkdir -p "$stage/DEBIAN" "$out"

# Files: mode and path; owners are root (dpkg-deb --root-owner-group).
put() { install -D -m "$1" "$2" "$stage$3"; }
libexec=/usr/libexec/grove
for b in grove-helper groved grove-garden wshd; do
    put 0755 "$release/$b" "$libexec/$b"
done
put 0755 "$ROOT/scripts/build-rootfs.sh" "$libexec/build-rootfs"
put 0755 "$release/grove" /usr/bin/grove
# Stripped as dh_strip does (the release profile keeps line tables for
# ./dev install's builds and the benchmarks).
for b in "$stage$libexec"/{grove-helper,groved,grove-garden,wshd} "$stage/usr/bin/grove"; do
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$b"
done
# The units name ./dev install's paths; the package's are Debian's.
for unit in "$ROOT"/systemd/*.service "$ROOT"/systemd/*.socket; do
    install -d "$stage/lib/systemd/system"
    sed -e "s|/usr/local/libexec/grove|$libexec|g" \
        -e "s|/usr/local/share/doc/grove|/usr/share/doc/grove|g" \
        "$unit" >"$stage/lib/systemd/system/$(basename "$unit")"
    chmod 0644 "$stage/lib/systemd/system/$(basename "$unit")"
done
put 0644 "$ROOT/systemd/grove.tmpfiles.conf" /usr/lib/tmpfiles.d/grove.conf
"$ROOT/scripts/default-config.sh" "$stage/etc/grove" "$libexec"
chmod 0644 "$stage"/etc/grove/*.conf
# Documentation, man pages from the CLI's definitions, completion.
doc=/usr/share/doc/grove
put 0644 "$ROOT/packaging/debian/copyright" "$doc/copyright"
put 0644 "$ROOT/systemd/README.md" "$doc/systemd.md"
put 0644 "$ROOT/README.md" "$doc/README.md"
gzip -9n "$stage$doc/README.md"
install -d "$stage$doc"
gzip -9nc "$ROOT/packaging/debian/changelog" >"$stage$doc/changelog.gz"
chmod 0644 "$stage$doc/changelog.gz"
"$release/grove" manpages "$stage/usr/share/man/man1" >&2
chmod 0644 "$stage"/usr/share/man/man1/*.1
gzip -9n "$stage"/usr/share/man/man1/*.1
install -d "$stage/usr/share/bash-completion/completions"
"$release/grove" completions bash >"$stage/usr/share/bash-completion/completions/grove"
chmod 0644 "$stage/usr/share/bash-completion/completions/grove"
put 0644 "$ROOT/packaging/debian/lintian-overrides" /usr/share/lintian/overrides/grove

# Control: the libraries the dynamic binaries need (wshd is static), as
# dpkg-shlibdeps reads them from the ELF files.
shlib_dir=$(mktemp -d)
trap 'rm -rf -- "$shlib_dir"' EXIT
mkdir -p "$shlib_dir/debian"
printf 'Source: grove\n\nPackage: grove\nArchitecture: any\n' >"$shlib_dir/debian/control"
shlibs=$(cd "$shlib_dir" && dpkg-shlibdeps -O \
    "$stage$libexec/grove-helper" "$stage$libexec/groved" "$stage$libexec/grove-garden" \
    "$stage/usr/bin/grove" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[[ -n $shlibs ]] || die "dpkg-shlibdeps found no library dependencies"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" \
    -e "s|@SHLIBS@|$shlibs|" "$ROOT/packaging/debian/control.in" >"$stage/DEBIAN/control"
for script in postinst prerm postrm; do
    install -m 0755 "$ROOT/packaging/debian/$script" "$stage/DEBIAN/$script"
done
(cd "$stage" && find etc -type f | sort | sed 's|^|/|') >"$stage/DEBIAN/conffiles"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | sort |
    xargs md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"
# Directories 0755 whatever the umask was.
find "$stage" -type d -exec chmod 0755 {} +
rm -f -- "$deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
log "$(dpkg-deb -f "$deb" Package Version Architecture | tr '\n' ' ')($(du -h "$deb" | cut -f1))"
echo "$deb"
