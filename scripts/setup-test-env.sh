#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Set-up steps shared by scripts/run-tests.sh and scripts/run-sample.sh, for a
# Debian 12 machine (as root). Source it, then call the ow_* functions; or run
# it directly to do the whole test set-up without running the tests:
#     sudo scripts/setup-test-env.sh
# Every step is idempotent and cheap when there is nothing to do.

OW_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OW_VENV="$OW_REPO/.venv"
# Debian's python, not a pyenv/conda one first on PATH: uid 65534 must be able
# to run the venv's python in tests, and the system's modules must match.
OW_PYTHON=/usr/bin/python3
# The debootstrapped Debian tree for the systemd-nspawn tests: a cache outside
# the repository, never modified in place (tests use --volatile=overlay).
# tests/fixtures/nspawn.py reads the same variable.
: "${OSTREEWATCH_NSPAWN_ROOT:=/var/cache/ostreewatch/bookworm-root}"
export OSTREEWATCH_NSPAWN_ROOT
OW_ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-dbus-next,python3-systemd,python3-pyinotify
export PATH="$PATH:/usr/sbin:/sbin"

ow_log() { printf '==> %s\n' "$*" >&2; }
ow_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# OSTREEWATCH_SKIP_SETUP=1 skips apt, venv and debootstrap (tests of the
# scripts themselves use it, so a test run never reinstalls under its own feet).
ow_skip_setup() { [ "${OSTREEWATCH_SKIP_SETUP:-0}" = 1 ]; }

# Timing: ow_timed NAME CMD... runs CMD and records how long it took.
OW_TIMINGS=()
ow_timed() {
    local name="$1" start end rc=0
    shift
    start=$(date +%s.%N)
    "$@" || rc=$?
    end=$(date +%s.%N)
    OW_TIMINGS+=("$(awk -v n="$name" -v a="$start" -v b="$end" 'BEGIN { printf "%-22s %8.1f s", n, b - a }')")
    return "$rc"
}
# ow_with_progress NAME LOG CMD...: run CMD (its output into LOG, or to stderr when LOG
# is "-") and print NAME, the elapsed seconds and LOG's last line every 15 s, so a step
# of a minute or more never sits silent.
ow_with_progress() {
    local name="$1" log="$2" start pid rc=0 n=0 last=""
    shift 2
    start=$(date +%s)
    if [ "$log" = - ]; then "$@" & else "$@" > "$log" 2>&1 & fi
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        n=$((n + 1))
        if [ $((n % 15)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then
            [ "$log" != - ] && last="$(tail -n 1 "$log" 2>/dev/null | tr -d '\r' | cut -c 1-90)"
            ow_log "$name: $(( $(date +%s) - start )) s${last:+ (last: $last)}"
        fi
    done
    wait "$pid" || rc=$?
    ow_log "$name: $([ "$rc" -eq 0 ] && echo done || echo "failed (exit $rc)") after $(( $(date +%s) - start )) s"
    return "$rc"
}

ow_print_timings() {
    local line
    printf '\n==> timing summary\n' >&2
    for line in "${OW_TIMINGS[@]}"; do printf '    %s\n' "$line" >&2; done
}

# The packages of scripts/apt-packages.txt (read now: others add to it), comments stripped.
ow_apt_packages() {
    sed -e 's/#.*//' "$OW_REPO/scripts/apt-packages.txt" | awk 'NF { print $1 }'
}

ow_install_apt() {
    ow_skip_setup && return 0
    local missing=() p
    for p in $(ow_apt_packages); do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        ow_log "apt: all $(ow_apt_packages | wc -l) packages of scripts/apt-packages.txt installed"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || ow_die "missing packages (${missing[*]}): run as root"
    ow_log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || ow_die "apt-get update failed"
    # prometheus, prometheus-node-exporter, polkitd and systemd-journal-remote would start their
    # services from their maintainer scripts (listening on every address); the tests start their
    # own instances on loopback. A policy-rc.d that says "not now" (exit 101), unless the machine
    # already has one, for the install only.
    local own_policy=0 rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    apt-get install -y -q "${missing[@]}" || rc=$?
    [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || ow_die "apt-get install ${missing[*]} failed"
}

# The extras the venv must hold: "" for the runtime only, "test" for the tests.
ow_make_venv() {
    ow_skip_setup && return 0
    local extras="${1-test}" spec stamp hash want have
    spec="$OW_REPO"
    [ -n "$extras" ] && spec="$OW_REPO[$extras]"
    stamp="$OW_VENV/.ostreewatch-installed"
    if [ -x "$OW_VENV/bin/python" ] && ! grep -qx 'home = /usr/bin' "$OW_VENV/pyvenv.cfg" 2>/dev/null; then
        ow_log "venv: $OW_VENV was not built from $OW_PYTHON; rebuilding it"
        rm -rf "$OW_VENV"
    fi
    if [ ! -x "$OW_VENV/bin/python" ]; then
        [ -x "$OW_PYTHON" ] || ow_die "$OW_PYTHON not found (apt-get install python3 python3-venv)"
        ow_log "venv: creating $OW_VENV from $OW_PYTHON"
        "$OW_PYTHON" -m venv "$OW_VENV" || ow_die "python3 -m venv failed (is python3-venv installed?)"
    fi
    # Reinstall when the packaging metadata changed, the extras differ, the
    # install points at another checkout, or an import fails.
    hash="$(cat "$OW_REPO/setup.cfg" "$OW_REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    want="$extras $hash"
    have="$(cat "$stamp" 2>/dev/null || true)"
    # A venv with the test extras also serves a runtime-only request.
    if { [ "$have" = "$want" ] || [ "$have" = "test $hash" ]; } && "$OW_VENV/bin/python" - "$OW_REPO" "$extras" <<'EOF' 2>/dev/null
import os, sys
import ostreewatch, dbus_next, systemd.journal, pyinotify
assert os.path.realpath(ostreewatch.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep)
if sys.argv[2] == "test":
    import pytest, pytest_timeout, hypothesis
EOF
    then
        ow_log "venv: up to date ($OW_VENV)"
        return 0
    fi
    ow_log "venv: pip install -e '$spec' (about 20 s)"
    ow_with_progress "venv: pip install" - \
        "$OW_VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" \
        || ow_die "pip install -e '$spec' failed"
    echo "$want" > "$stamp"
}

ow_rootfs_ok() {
    [ -x "$OSTREEWATCH_NSPAWN_ROOT/usr/lib/systemd/systemd" ] &&
    [ -x "$OSTREEWATCH_NSPAWN_ROOT/usr/bin/dbus-daemon" ] &&
    [ -x "$OSTREEWATCH_NSPAWN_ROOT/usr/bin/python3" ] &&
    [ -d "$OSTREEWATCH_NSPAWN_ROOT/usr/lib/python3/dist-packages/dbus_next" ] &&
    [ -d "$OSTREEWATCH_NSPAWN_ROOT/usr/lib/python3/dist-packages/systemd" ] &&
    [ -f "$OSTREEWATCH_NSPAWN_ROOT/usr/lib/python3/dist-packages/pyinotify.py" ]
}

ow_make_rootfs() {
    ow_skip_setup && return 0
    if ow_rootfs_ok; then
        ow_log "rootfs: cached at $OSTREEWATCH_NSPAWN_ROOT"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || ow_die "the Debian tree $OSTREEWATCH_NSPAWN_ROOT is missing: run as root to build it"
    local parent tmp
    parent="$(dirname "$OSTREEWATCH_NSPAWN_ROOT")"
    mkdir -p "$parent" || ow_die "cannot create $parent"
    # One builder at a time; a second run waits, then finds the tree there.
    exec {lockfd}>"$parent/.build.lock"
    flock "$lockfd"
    if ow_rootfs_ok; then
        exec {lockfd}>&-
        return 0
    fi
    tmp="$OSTREEWATCH_NSPAWN_ROOT.tmp.$$"
    rm -rf "$OSTREEWATCH_NSPAWN_ROOT".tmp.*
    ow_log "rootfs: debootstrap bookworm into $tmp (about 2 minutes and 290 MB, once)"
    if ! ow_with_progress "rootfs: debootstrap" "$parent/debootstrap.log" \
            debootstrap --variant=minbase --include="$OW_ROOTFS_PACKAGES" bookworm "$tmp" \
            http://deb.debian.org/debian; then
        tail -20 "$parent/debootstrap.log" >&2
        rm -rf "$tmp"
        ow_die "debootstrap failed (log: $parent/debootstrap.log)"
    fi
    rm -rf "$OSTREEWATCH_NSPAWN_ROOT"
    mv "$tmp" "$OSTREEWATCH_NSPAWN_ROOT" || ow_die "cannot move $tmp to $OSTREEWATCH_NSPAWN_ROOT"
    exec {lockfd}>&-
    ow_rootfs_ok || ow_die "debootstrap finished but $OSTREEWATCH_NSPAWN_ROOT lacks what the tests need"
    ow_log "rootfs: ready at $OSTREEWATCH_NSPAWN_ROOT"
}

# The newer Debian trees whose ostree, ostree-boot, GRUB and systemd are the
# tests' oracles for modern hosts: trixie (ostree 2025.2, `admin set-default`)
# and sid (ostree 2026.4 with `admin status --json` and ostree-prepare-root,
# grub-emu 2.14 with upstream GRUB's blscfg, systemd 262). Cached beside the
# bookworm tree, built once by scripts/build-modern-tree.sh, never modified in
# place (tests copy or bind what they need). tests/fixtures/modern.py reads the
# same variables. A tree that cannot be built fails the set-up: its tests must
# never be skipped silently.
: "${OSTREEWATCH_SID_ROOT:=/var/cache/ostreewatch/sid-root}"
: "${OSTREEWATCH_TRIXIE_ROOT:=/var/cache/ostreewatch/trixie-root}"
export OSTREEWATCH_SID_ROOT OSTREEWATCH_TRIXIE_ROOT
OW_SID_PACKAGES="ostree ostree-boot grub-emu composefs systemd python3-gi gir1.2-glib-2.0 gir1.2-ostree-1.0"
OW_TRIXIE_PACKAGES="ostree python3-gi gir1.2-glib-2.0 gir1.2-ostree-1.0"

ow_modern_tree_ok() {
    local root="$1"
    [ -x "$root/usr/bin/ostree" ] && [ -x "$root/usr/bin/python3" ] &&
    [ -f "$root/usr/lib/$(uname -m)-linux-gnu/girepository-1.0/OSTree-1.0.typelib" ] &&
    { [ "$root" != "$OSTREEWATCH_SID_ROOT" ] ||
      { [ -x "$root/usr/lib/ostree/ostree-prepare-root" ] && [ -x "$root/usr/bin/grub-emu" ]; }; }
}

ow_make_modern_tree() {
    local suite="$1" root="$2" packages="$3" parent
    ow_skip_setup && return 0
    if ow_modern_tree_ok "$root"; then
        ow_log "$suite tree: cached at $root ($(chroot "$root" ostree --version | sed -n "s/^ Version: //p" | tr -d "'"))"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || ow_die "the $suite tree $root is missing: run as root to build it"
    parent="$(dirname "$root")"
    mkdir -p "$parent" || ow_die "cannot create $parent"
    exec {lockfd}>"$parent/.build-$suite.lock"
    flock "$lockfd"
    if ! ow_modern_tree_ok "$root"; then
        # shellcheck disable=SC2086
        ow_with_progress "$suite tree" - "$OW_REPO/scripts/build-modern-tree.sh" "$suite" "$root" $packages \
            || ow_die "the $suite tree could not be built: the modern-host tests need it"
    fi
    exec {lockfd}>&-
    ow_modern_tree_ok "$root" || ow_die "the $suite tree at $root lacks what the tests need"
}

ow_make_modern_trees() {
    ow_make_modern_tree trixie "$OSTREEWATCH_TRIXIE_ROOT" "$OW_TRIXIE_PACKAGES"
    ow_make_modern_tree sid "$OSTREEWATCH_SID_ROOT" "$OW_SID_PACKAGES"
}

# The guest tree of the real-boot tests (tests/vm, docs/vm-rig.md): a sid tree with a kernel,
# dracut + ostree's module, GRUB 2.14, systemd and the daemon's dependencies, and the same in an
# ostree commit's shape. Built once by scripts/build-vm-tree.sh (about 3 minutes), never modified
# in place: every image is built from an overlay. tests/vm/build-image.sh reads the same variables.
: "${OSTREEWATCH_VM_TREE:=/var/cache/ostreewatch/vm-tree}"
: "${OSTREEWATCH_VM_BASE:=/var/cache/ostreewatch/vm-base}"
export OSTREEWATCH_VM_TREE OSTREEWATCH_VM_BASE

ow_vm_tree_ok() {
    [ -f "$OSTREEWATCH_VM_BASE.ok" ] && [ -x "$OSTREEWATCH_VM_TREE/usr/bin/ostree" ] &&
    [ -x "$OSTREEWATCH_VM_TREE/usr/sbin/grub-install" ] &&
    [ -d "$OSTREEWATCH_VM_TREE/usr/lib/grub/x86_64-efi" ] &&
    compgen -G "$OSTREEWATCH_VM_BASE/usr/lib/modules/*/initramfs.img" > /dev/null &&
    [ -d "$OSTREEWATCH_VM_BASE/usr/lib/python3/dist-packages/dbus_next" ]
}

ow_make_vm_tree() {
    ow_skip_setup && return 0
    if ow_vm_tree_ok; then
        ow_log "vm tree: cached at $OSTREEWATCH_VM_BASE"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || ow_die "the VM tree $OSTREEWATCH_VM_BASE is missing: run as root to build it"
    local parent
    parent="$(dirname "$OSTREEWATCH_VM_BASE")"
    mkdir -p "$parent" || ow_die "cannot create $parent"
    exec {lockfd}>"$parent/.build-vm.lock"
    flock "$lockfd"
    if ! ow_vm_tree_ok; then
        ow_with_progress "vm tree" - "$OW_REPO/scripts/build-vm-tree.sh" "$OSTREEWATCH_VM_TREE" "$OSTREEWATCH_VM_BASE" \
            || ow_die "the VM tree could not be built: the real-boot tests need it"
    fi
    exec {lockfd}>&-
    ow_vm_tree_ok || ow_die "the VM tree at $OSTREEWATCH_VM_BASE lacks what the tests need"
}

# Run directly: the whole test set-up.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    ow_timed "apt packages" ow_install_apt
    ow_timed "virtualenv" ow_make_venv test
    ow_timed "debootstrap tree" ow_make_rootfs
    ow_timed "modern trees" ow_make_modern_trees
    ow_timed "vm tree" ow_make_vm_tree
    ow_print_timings
fi
