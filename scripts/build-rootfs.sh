#!/usr/bin/env bash
# Build Grove's default container rootfs from Debian's busybox-static.
#
#   scripts/build-rootfs.sh [DEST]      (default DEST: /var/lib/grove/rootfs/busybox)
#
# The tree is assembled in a temporary directory next to DEST and renamed into
# place, so DEST is either the old complete tree or the new complete tree. It is
# rebuilt only when missing, or when this script or /bin/busybox is newer than
# the stamp file inside it. FORCE=1 rebuilds unconditionally. Run as root.
set -euo pipefail

DEST=${1:-/var/lib/grove/rootfs/busybox}
BUSYBOX=${BUSYBOX:-/bin/busybox}
STAMP_REL=etc/grove-rootfs.stamp
SELF=$(readlink -f "${BASH_SOURCE[0]}")

log() { printf 'build-rootfs: %s\n' "$*"; }
die() { printf 'build-rootfs: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it creates root- and uid-1000-owned files)"
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found; install it: apt-get install busybox-static"
if ! file_out=$(file -bL "$BUSYBOX" 2>/dev/null) || [[ $file_out != *static* ]]; then
    # `file` may be missing; fall back to ldd.
    if ldd "$BUSYBOX" >/dev/null 2>&1; then
        die "$BUSYBOX is dynamically linked; the rootfs needs busybox-static (apt-get install busybox-static)"
    fi
fi

stamp=$DEST/$STAMP_REL
if [[ ${FORCE:-0} != 1 && -d $DEST && -f $stamp && ! $SELF -nt $stamp && ! $BUSYBOX -nt $stamp ]]; then
    log "$DEST is up to date"
    exit 0
fi

parent=$(dirname "$DEST")
name=$(basename "$DEST")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.$name.new.XXXXXX")
old=""
cleanup() {
    [[ -n $tmp && -d $tmp ]] && rm -rf -- "$tmp"
    [[ -n $old && -d $old ]] && rm -rf -- "$old"
    return 0
}
trap cleanup EXIT

log "building $DEST from $BUSYBOX"
chmod 0755 "$tmp"
for d in bin sbin usr usr/bin usr/sbin etc proc sys dev var var/tmp home; do
    install -d -m 0755 "$tmp/$d"
done
install -d -m 1777 "$tmp/tmp"
chmod 1777 "$tmp/var/tmp"
install -d -m 0700 "$tmp/root"
install -d -m 0755 -o 1000 -g 1000 "$tmp/home/user"

install -m 0755 "$BUSYBOX" "$tmp/bin/busybox"

# Every applet becomes a symlink to /bin/busybox at its full path.
count=0
while IFS= read -r applet; do
    applet=${applet#/}
    [[ -n $applet ]] || continue
    target=$tmp/$applet
    [[ -e $target || -L $target ]] && continue
    # No fork per applet but ln's: this loop runs ~270 times (slow under emulation).
    [[ -d ${target%/*} ]] || mkdir -p "${target%/*}"
    ln -s /bin/busybox "$target"
    count=$((count + 1))
done < <("$BUSYBOX" --list-full)
[[ $count -gt 0 ]] || die "$BUSYBOX --list-full listed no applets"
[[ -L $tmp/bin/sh ]] || die "busybox provides no /bin/sh applet"

cat > "$tmp/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$tmp/etc/group" <<'GROUP'
root:x:0:
user:x:1000:
staff:x:50:user
nogroup:x:65534:
GROUP
version=$({ "$BUSYBOX" 2>&1 || true; } | sed -n '1s/^BusyBox \(v[^ ]*\).*/\1/p')
cat > "$tmp/etc/os-release" <<OSREL
NAME="Grove busybox rootfs"
PRETTY_NAME="Grove busybox rootfs${version:+ (BusyBox $version)}"
ID=grove-busybox
HOME_URL="https://github.com/cloudfoundry/garden"
OSREL
chmod 0644 "$tmp/etc/passwd" "$tmp/etc/group" "$tmp/etc/os-release"
{
    echo "# written by scripts/build-rootfs.sh; the tree is rebuilt when the script or busybox is newer"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "busybox=$BUSYBOX ${version:-unknown}"
    echo "applets=$count"
} > "$tmp/$STAMP_REL"

# Swap into place: rename(2) cannot replace a non-empty directory, so move the
# old tree aside first, then rename the new one in, then delete the old one.
if [[ -e $DEST ]]; then
    old=$(mktemp -u "$parent/.$name.old.XXXXXX")
    mv -T -- "$DEST" "$old"
fi
mv -T -- "$tmp" "$DEST"
tmp=""
log "done: $DEST ($count applets)"
