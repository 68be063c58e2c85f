#!/usr/bin/env bash
# An operator's walk through the Debian package's life on the guest, after
# everything else (run by in-guest.sh on the second boot; Grove installed
# from the .deb, its sockets enabled): an upgrade (the same .deb again)
# keeps an edited conffile and a running container and restarts groved;
# removal stops the
# units and leaves configuration and user; a reinstall finds both; purge
# removes the configuration.
#
#   walk-package.sh RESULTS DEB
#
# Each check is timed and appended to RESULTS/steps.tsv as "package: NAME";
# exit status 1 when any failed.
set -uo pipefail
RESULTS=$1 DEB=$2
STEPS=$RESULTS/steps.tsv
WALK_PREFIX=package
# shellcheck source=scripts/guest/walk-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/walk-lib.sh"
MARK='# edited by the operator (walk-package.sh)'
edited() { grep -qxF "$MARK" /etc/grove/groved.conf; }

upgrade_keeps_config_and_containers() {
    dpkg -s grove | grep -q '^Status: install ok installed'
    grove create --handle pkg1
    local before after
    before=$(systemctl show -P MainPID groved.service)
    [[ $before -gt 0 ]] || fail "groved does not run before the upgrade"
    echo "$MARK" >>/etc/grove/groved.conf
    # The same version again: dpkg runs the upgrade scripts (prerm upgrade,
    # postinst configure with the old version: try-restart of the daemons).
    DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB"
    edited || fail "the upgrade replaced the edited groved.conf"
    # postinst's try-restart: the running groved is a new process.
    after=$(systemctl show -P MainPID groved.service)
    [[ $after -gt 0 && $after != "$before" ]] || fail "groved was not restarted by the upgrade ($before -> $after)"
    timeout 60 grove ping
    grove list | grep -qw pkg1 || fail "the container did not survive the upgrade"
    [[ $(grove run pkg1 -- /bin/echo alive) == alive ]]
    grove destroy pkg1
}

remove_stops_and_keeps_config() {
    dpkg -r grove
    for unit in groved.socket grove-helper.socket grove-garden.socket groved.service \
        grove-helper.service grove-containers.service; do
        ! systemctl is-active --quiet "$unit" || fail "$unit is still active after dpkg -r"
    done
    [[ ! -e /usr/libexec/grove/groved && ! -e /usr/bin/grove && ! -e /lib/systemd/system/groved.service ]] ||
        fail "dpkg -r left binaries or units"
    edited || fail "dpkg -r removed the edited groved.conf"
    getent passwd grove >/dev/null || fail "dpkg -r removed the user grove"
    dpkg -s grove | grep -q '^Status: deinstall ok config-files'
}

reinstall_finds_config() {
    DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB"
    edited || fail "the reinstall replaced the edited groved.conf"
    # The operator's enable links outlived the removal; the sockets start
    # at the next boot, or now.
    systemctl start grove-helper.socket groved.socket
    timeout 60 grove ping
}

purge_removes_config() {
    dpkg --purge grove
    [[ ! -e /etc/grove ]] || fail "dpkg --purge left /etc/grove: $(ls -A /etc/grove)"
    ! dpkg -s grove >/dev/null 2>&1 || fail "dpkg still knows grove after --purge"
}

check "upgrade keeps an edited conffile and a container" upgrade_keeps_config_and_containers
check "remove stops the units, keeps config and user" remove_stops_and_keeps_config
check "reinstall finds the edited config, serves" reinstall_finds_config
check "purge removes the configuration" purge_removes_config
exit "$failed"
