#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The README's first command: ostreewatch on the bundled sample hosts, on a
# fresh Debian 12 machine, as root (no sudo needed):
#     scripts/run-sample.sh          # show it, then clean up
#     scripts/run-sample.sh --keep   # then leave it running until Ctrl-C, and
#                                    # print the lines to paste into another shell
#
# 1. installs the few apt packages it needs and a virtualenv (.venv) with the
#    runtime dependencies only (no test tools, no Debian tree);
# 2. prints `ostreewatch status --sample --offline` (a real RHCOS node's boot
#    state, read directly from the files);
# 3. starts a private systemd-journald (in a private mount namespace: nothing
#    reaches the host's journal), a private dbus-daemon of type system with the
#    project's bus policy, and ostreewatchd on the second sample, `silverblue`
#    (its grub.cfg reads saved_entry, so the boot default can be changed),
#    unpacked into the temp dir;
# 4. shows what the daemon publishes (busctl, the CLI); changes arriving as
#    signals (ostreewatch monitor): a broken entry file dropped into the
#    sample and removed, a change of the default by uid 65534 refused (the
#    daemon authorizes every call: root, or polkit), one of an entry that does
#    not exist refused, one granted; and the records of all that in
#    the private journal (journalctl -D).
# Everything it starts is stopped, and its temp dir removed, on exit.
set -euo pipefail

# shellcheck source=scripts/setup-test-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-test-env.sh"
cd "$OW_REPO"

KEEP=0
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '3,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ow_die "unknown argument: $arg (try --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || ow_die "run it as root: it starts a private journald and bus in a mount namespace"

# Just what the sample needs: dbus-daemon, busctl, journald and journalctl, unshare and
# setpriv, and what building systemd-python (a pip dependency) needs.
SAMPLE_APT="dbus systemd util-linux python3-venv python3-dev gcc pkg-config libsystemd-dev"
ow_install_sample_apt() {
    ow_skip_setup && return 0
    local missing=() p
    for p in $SAMPLE_APT; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    ow_log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || ow_die "apt-get update failed"
    apt-get install -y -q "${missing[@]}" || ow_die "apt-get install failed"
}

ow_install_sample_apt
ow_make_venv ""
BIN="$OW_VENV/bin"
[ -x "$BIN/ostreewatchd" ] || ow_die "$BIN/ostreewatchd is missing: run without OSTREEWATCH_SKIP_SETUP=1 once"
SAMPLE=silverblue
MANAGER=(org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager)

if [ -t 1 ]; then
    section() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
else
    section() { printf '\n### %s\n' "$*"; }
fi
# Print a command the way a reader would type it (the venv's bin/ on PATH), then run it.
show() { printf '\n$ %s\n' "$(sed "s|$BIN/||g" <<<"$*")"; "$@"; }

# --- 2. offline: read a sample directly --------------------------------------------------
section "The bundled RHCOS sample, read directly (no daemon)"
show "$BIN/ostreewatch" status --sample --offline

# --- 3. a private journald, bus and daemon ----------------------------------------------
TMP="$(mktemp -d /tmp/ostreewatch-sample.XXXXXX)"
chmod 0755 "$TMP"   # so a non-root busctl can reach the socket too
JOURNAL="$TMP/journal"
mkdir -m 0755 "$JOURNAL"
JOURNALD_PID="" BUS_PID="" DAEMON_PID="" MONITOR_PID=""
cleanup() {
    local pid
    for pid in $MONITOR_PID $DAEMON_PID $BUS_PID $JOURNALD_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section "A private journald, a private system bus, and ostreewatchd on the $SAMPLE sample"
# journald in its own mount namespace, as tests/fixtures/journald.py starts it: a tmpfs
# on /run/systemd (its sockets), $JOURNAL bound on /var/log/journal (its files), its
# own journald.conf. The host's journal and /run are never touched.
cat > "$TMP/journald.conf" <<'EOF'
[Journal]
Storage=persistent
ReadKMsg=no
Audit=no
ForwardToSyslog=no
ForwardToWall=no
ForwardToConsole=no
RateLimitBurst=0
EOF
machine_id_ok() { grep -qxE '[0-9a-f]{32}' /etc/machine-id 2>/dev/null; }
machine_id_ok || od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$TMP/machine-id"
"$OW_REPO/scripts/private-journald.sh" "$TMP" > "$TMP/journald.log" 2>&1 &
JOURNALD_PID=$!
for _ in $(seq 200); do
    [ -S "/proc/$JOURNALD_PID/root/run/systemd/journal/socket" ] && break
    kill -0 "$JOURNALD_PID" 2>/dev/null || break
    sleep 0.05
done
[ -S "/proc/$JOURNALD_PID/root/run/systemd/journal/socket" ] \
    || { cat "$TMP/journald.log" >&2; ow_die "systemd-journald did not start"; }
# Runs a command in journald's mount namespace, where /run/systemd/journal is that journald.
in_ns() { nsenter --mount="/proc/$JOURNALD_PID/ns/mnt" -- "$@"; }
echo "journal: $JOURNAL (systemd-journald pid $JOURNALD_PID, in a private mount namespace)"

SOCKET="$TMP/system_bus_socket"
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$SOCKET"
# A system-type bus like Debian's /usr/share/dbus-1/system.conf, with the project's policy
# (the same template the tests use).
sed -e "s|@LISTEN@|$DBUS_SYSTEM_BUS_ADDRESS|" -e '/@SERVICEDIR@/d' \
    -e "s|@INCLUDES@|  <include>$OW_REPO/dbus/org.ostreewatch1.conf</include>|" \
    "$OW_REPO/scripts/system-bus.conf.in" > "$TMP/bus.conf"
dbus-daemon --config-file="$TMP/bus.conf" --nofork --nopidfile 2>"$TMP/dbus-daemon.log" &
BUS_PID=$!
for _ in $(seq 200); do [ -S "$SOCKET" ] && break; sleep 0.05; done
[ -S "$SOCKET" ] || { cat "$TMP/dbus-daemon.log" >&2; ow_die "dbus-daemon did not start"; }
echo "bus:     $DBUS_SYSTEM_BUS_ADDRESS (dbus-daemon pid $BUS_PID)"

# The sample unpacked where this script can change its files (what `--sample NAME`
# does in a temp dir of its own).
S="$TMP/$SAMPLE"
"$BIN/python" -c 'import sys; from ostreewatch import sample; sample.materialize(sys.argv[1], sys.argv[2])' \
    "$S" "$SAMPLE"
SAMPLE_ARGS=(--sysroot "$S/sysroot" --mountinfo "$S/mountinfo" --cmdline "$S/cmdline" --run "$S/run")
# The boot records (docs/boot-outcome.md) in the temp dir, not the machine's /var/lib/ostreewatch.
STATE_ARGS=(--state-dir "$TMP/state")
# nsenter execs, and is not wrapped in a function (a function in the background is a
# subshell): $! is ostreewatchd itself. Its journal records go to the private journald.
nsenter --mount="/proc/$JOURNALD_PID/ns/mnt" -- "$BIN/ostreewatchd" --bus "$DBUS_SYSTEM_BUS_ADDRESS" "${SAMPLE_ARGS[@]}" "${STATE_ARGS[@]}" 2>"$TMP/ostreewatchd.log" &
DAEMON_PID=$!
owned=0
for _ in $(seq 300); do
    if [ "$(busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
            NameHasOwner s org.ostreewatch1 2>/dev/null)" = "b true" ]; then owned=1; break; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.05
done
if [ "$owned" -ne 1 ]; then
    cat "$TMP/ostreewatchd.log" >&2
    ow_die "ostreewatchd did not take org.ostreewatch1"
fi
echo "sample:  $S (the $SAMPLE sample: sysroot/, mountinfo, cmdline, run/)"
echo "daemon:  ostreewatchd --bus \$DBUS_SYSTEM_BUS_ADDRESS ${SAMPLE_ARGS[*]} ${STATE_ARGS[*]} (pid $DAEMON_PID)"
echo
echo "Every busctl command below talks to this private bus because DBUS_SYSTEM_BUS_ADDRESS"
echo "is exported; every journalctl command reads this private journal with -D."

# --- 4. what it publishes ---------------------------------------------------------------
section "What it publishes (busctl introspect)"
# busctl prints every value on one line; cut them for the screen.
printf '\n$ busctl introspect %s   (long values shortened)\n' "${MANAGER[*]}"
busctl --system introspect "${MANAGER[@]}" \
    | sed -E 's/ {2,}([^ ]+)$/  \1/' \
    | awk '{ if (length($0) > 150) print substr($0, 1, 146) " ..."; else print }'

section "Read properties (busctl get-property)"
show busctl get-property "${MANAGER[@]}" BootedDeployment DefaultEntry Bootloader
show busctl --json=short get-property "${MANAGER[@]}" Problems

section "The CLI asks the daemon (and says so)"
show "$BIN/ostreewatch" status

# Waits until busctl's form of PROPERTY matches the extended regex RE, at most 10 s.
wait_property() {
    for _ in $(seq 200); do
        busctl --system get-property "${MANAGER[@]}" "$1" | grep -qE -- "$2" && return 0
        sleep 0.05
    done
    echo "(after 10 s, $1 still does not match $2)"
}

section "Changes arriving as signals"
"$BIN/ostreewatch" monitor > "$TMP/monitor.out" 2> "$TMP/monitor.err" &
MONITOR_PID=$!
for _ in $(seq 200); do grep -q Monitoring "$TMP/monitor.err" 2>/dev/null && break; sleep 0.05; done
echo
echo "(ostreewatch monitor is running in the background; what it printed comes at the end)"
echo
echo "Someone drops a hand-written entry with no kernel into the sample's /boot, then removes it:"
ENTRIES="$S/sysroot/boot/loader/entries"
printf '\n$ printf "title Hand-written\\nversion 9\\n" > %s/hand.conf\n' "$ENTRIES"
printf 'title Hand-written\nversion 9\n' > "$ENTRIES/hand.conf"
wait_property Problems '"entry-no-kernel"'
show busctl --json=short get-property "${MANAGER[@]}" Problems
show rm "$ENTRIES/hand.conf"
wait_property Problems '^aa\{sv\} 0$'
echo
echo "Anyone may read; a caller that is not root (uid 65534 here) and has no polkit rule may not change:"
printf '$ setpriv --reuid=65534 --regid=65534 --clear-groups busctl call %s SetDefaultEntry s ostree-1\n' \
    "${MANAGER[*]}"
setpriv --reuid=65534 --regid=65534 --clear-groups \
    busctl --system call "${MANAGER[@]}" SetDefaultEntry s ostree-1 2>&1 || true
# The CLI turns the same refusal into one sentence (--debug shows the raw one); uid 65534
# needs to reach the checkout's venv for that, which a checkout under /root does not allow.
if setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN/ostreewatch" --version >/dev/null 2>&1; then
    printf '$ setpriv --reuid=65534 --regid=65534 --clear-groups ostreewatch set-default ostree-1\n'
    setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN/ostreewatch" set-default ostree-1 2>&1 || true
fi
echo
echo "A boot entry that does not exist: the daemon refuses it with a named error:"
show "$BIN/ostreewatch" set-default ostree-9 || true
echo
echo "As root, on a host whose grub.cfg reads saved_entry (the $SAMPLE sample's does):"
show "$BIN/ostreewatch" set-default ostree-1
show grep saved_entry "$S/sysroot/boot/grub2/grubenv"
show busctl get-property "${MANAGER[@]}" DefaultEntry DefaultDeployment
show "$BIN/ostreewatch" set-default --clear
wait_property DefaultEntry 's "ostree-2"'
for _ in $(seq 100); do [ "$(grep -c DefaultEntryChanged "$TMP/monitor.out")" -ge 2 ] && break; sleep 0.05; done
kill "$MONITOR_PID" 2>/dev/null || true
wait "$MONITOR_PID" 2>/dev/null || true
MONITOR_PID=""
echo
echo "What ostreewatch monitor printed meanwhile (PropertiesChanged with its Generation, then"
echo "the typed signals):"
sed 's/^/    /' "$TMP/monitor.out"

# --- 5. the audit records ----------------------------------------------------------------
section "The audit records, in the private journal"
in_ns journalctl --sync
echo
echo "Every attempt to change the boot default (MESSAGE_ID 64c23d02...), granted or not:"
show journalctl -D "$JOURNAL" -o cat MESSAGE_ID=64c23d02494a4656819de4e18f356173
echo
echo "Problems that appeared (9bfbe0e2...) and cleared (d0034dae...):"
show journalctl -D "$JOURNAL" -o cat MESSAGE_ID=9bfbe0e2a307441eaf788b4dc8daa70c + \
    MESSAGE_ID=d0034dae0098497f9159685ec374a760
echo
echo "One granted change, with every field:"
show journalctl -D "$JOURNAL" -o verbose --no-pager MESSAGE_ID=64c23d02494a4656819de4e18f356173 \
    OSTREEWATCH_RESULT=granted OSTREEWATCH_ENTRY=ostree-1

if [ "$KEEP" -eq 1 ]; then
    section "Running until Ctrl-C"
    echo "Paste these lines into another shell, then try the README's examples:"
    echo
    echo "export DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SYSTEM_BUS_ADDRESS"
    echo "export OSTREEWATCH_JOURNAL=$JOURNAL"
    echo "export PATH=$BIN:\$PATH"
    echo
    wait "$DAEMON_PID" || true
fi
