#!/usr/bin/env bash
# Build (or reuse) the Debian 12 guest image for the guest lane.
#
#   scripts/guest/build-image.sh CACHE_DIR
#
# Prints the directory holding root.img (ext4, sparse), vmlinuz and
# initrd.img. The image is cached under CACHE_DIR/<key>, the key being a
# hash of what goes into it: this script (it holds the package list) and the
# two files it bakes in (grove-lane, grove-lane.service). Anything else the
# lane does runs from the host's share, so editing it needs no rebuild.
# Older images are removed after a build. Run as root (mkfs.ext4 -d keeps
# the tree's owners; mmdebstrap's root mode needs root).
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
CACHE=${1:?usage: build-image.sh CACHE_DIR}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
ROOT_SIZE=8G
# What the lane needs in the guest: a systemd host (PID 1, udev, dbus), a
# bootable kernel and initrd, what Grove and its tests call (ip, nft, tc,
# bridge, btrfs, mount, setpriv, systemd-socket-activate, docker-registry
# for images.rs, python3 for target/pyvenv in python_interop.rs), busybox
# for the container rootfs, and the filesystems' tools (quota, xfs_quota)
# for disk limits on btrfs, ext4 and XFS.
PACKAGES=(
    systemd-sysv linux-image-amd64 initramfs-tools udev kmod dbus
    iproute2 nftables procps util-linux file
    btrfs-progs e2fsprogs xfsprogs quota
    busybox-static docker-registry python3
)

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
key=$(cat "$HERE/build-image.sh" "$HERE/grove-lane" "$HERE/grove-lane.service" | sha256sum | cut -c1-16)
out=$CACHE/$key
if [[ -f $out/root.img && -f $out/vmlinuz && -f $out/initrd.img ]]; then
    log "cached: $out"
    echo "$out"
    exit 0
fi

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf --one-file-system -- "$work"' EXIT
rootfs=$work/rootfs

log "mmdebstrap $SUITE (${#PACKAGES[@]} packages) into $rootfs"
packages=$(IFS=,; echo "${PACKAGES[*]}")
mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" \
    "$SUITE" "$rootfs" "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
    "deb http://deb.debian.org/debian-security $SUITE-security main" >&2

log "configuring the guest"
echo grove-guest >"$rootfs/etc/hostname"
echo 'LABEL=grove-root / ext4 rw,errors=remount-ro 0 1' >"$rootfs/etc/fstab"
# Modules the initrd does not load: the 9p shares, btrfs for the test disk.
printf '%s\n' 9p 9pnet_virtio overlay btrfs xfs >"$rootfs/etc/modules-load.d/grove-lane.conf"
# Nothing else competes for the 2 vCPUs; docker-registry's packaged unit
# would listen on :5000 (the tests start their own registry on loopback).
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
    serial-getty@ttyS0.service getty@tty1.service docker-registry.service; do
    ln -sfn /dev/null "$rootfs/etc/systemd/system/$unit"
done
ln -sfn /lib/systemd/system/multi-user.target "$rootfs/etc/systemd/system/default.target"
install -m 0755 "$HERE/grove-lane" "$rootfs/usr/local/sbin/grove-lane"
install -m 0644 "$HERE/grove-lane.service" "$rootfs/etc/systemd/system/grove-lane.service"
mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
ln -sfn ../grove-lane.service "$rootfs/etc/systemd/system/multi-user.target.wants/grove-lane.service"

# Kernel and initrd boot the guest directly (qemu -kernel/-initrd).
vmlinuz=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -1)
[[ -f $vmlinuz && -f $initrd ]] || die "no kernel or initrd in $rootfs/boot"
cp "$vmlinuz" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"

log "mkfs.ext4 -d (sparse $ROOT_SIZE root.img)"
truncate -s "$ROOT_SIZE" "$work/root.img"
mkfs.ext4 -q -L grove-root -d "$rootfs" "$work/root.img"
rm -rf --one-file-system -- "$rootfs"
{
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel=${vmlinuz##*/vmlinuz-}"
    echo "packages=$packages"
} >"$work/IMAGE"

# Replace any older image: one cached image at a time.
find "$CACHE" -mindepth 1 -maxdepth 1 -not -name "$(basename "$work")" -exec rm -rf --one-file-system -- {} +
mv -T -- "$work" "$out"
trap - EXIT
log "built: $out"
echo "$out"
