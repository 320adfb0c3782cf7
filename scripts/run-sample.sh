#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The README's first command: ostreewatch on the bundled sample host (a real
# RHCOS node's boot state), no set-up needed on a fresh Debian 12 machine:
#     sudo scripts/run-sample.sh          # show it, then clean up
#     sudo scripts/run-sample.sh --keep   # leave the daemon running until Ctrl-C
#
# 1. installs the few apt packages it needs and a virtualenv (.venv) with the
#    runtime dependencies only (no test tools, no Debian tree);
# 2. prints `ostreewatch status --sample` (the offline reader);
# 3. starts a private dbus-daemon of type system (in a temp dir, with the
#    project's bus policy dbus/org.ostreewatch1.conf) and ostreewatchd on the
#    sample, then shows what it publishes with busctl.
# Everything it starts is stopped, and its temp dir removed, on exit.
set -euo pipefail

# shellcheck source=scripts/setup-test-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-test-env.sh"
cd "$OW_REPO"

KEEP=0
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '3,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ow_die "unknown argument: $arg (try --help)" ;;
    esac
done

# Just what the sample needs: dbus-daemon and busctl, and what building
# systemd-python (a pip dependency) needs.
SAMPLE_APT="dbus systemd python3-venv python3-dev gcc pkg-config libsystemd-dev"
ow_install_sample_apt() {
    ow_skip_setup && return 0
    local missing=() p
    for p in $SAMPLE_APT; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || ow_die "missing packages (${missing[*]}): run as root"
    ow_log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || ow_die "apt-get update failed"
    apt-get install -y -q "${missing[@]}" || ow_die "apt-get install failed"
}

ow_install_sample_apt
ow_make_venv ""
BIN="$OW_VENV/bin"

if [ -t 1 ]; then
    section() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
else
    section() { printf '\n### %s\n' "$*"; }
fi
show() { printf '\n$ %s\n' "$*"; "$@"; }

# --- 2. offline: read the sample directly ---------------------------------------------
section "The bundled sample, read directly (no daemon)"
status_help="$("$BIN/ostreewatch" status --help 2>/dev/null || true)"
if grep -q -- --sample <<<"$status_help"; then
    status_args=(status --sample)
    # Once status can ask the daemon, say explicitly that this one reads the files.
    grep -q -- --offline <<<"$status_help" && status_args+=(--offline)
    show "$BIN/ostreewatch" "${status_args[@]}"
else
    echo "(this build's CLI has no 'status --sample' yet)"
fi

# --- 3. live: the daemon on a private system bus --------------------------------------
if ! "$BIN/ostreewatchd" --help 2>/dev/null | grep -q -- --sample; then
    echo "(this build has no ostreewatchd --sample yet: stopping here)"
    exit 0
fi

TMP="$(mktemp -d /tmp/ostreewatch-sample.XXXXXX)"
chmod 0755 "$TMP"   # so a non-root busctl can reach the socket too
BUS_PID="" DAEMON_PID=""
cleanup() {
    local pid
    for pid in $DAEMON_PID $BUS_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SOCKET="$TMP/system_bus_socket"
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$SOCKET"
# A system-type bus like Debian's /usr/share/dbus-1/system.conf, with the project's policy
# (the same template the tests use).
sed -e "s|@LISTEN@|$DBUS_SYSTEM_BUS_ADDRESS|" -e '/@SERVICEDIR@/d' \
    -e "s|@INCLUDES@|  <include>$OW_REPO/dbus/org.ostreewatch1.conf</include>|" \
    "$OW_REPO/scripts/system-bus.conf.in" > "$TMP/bus.conf"

section "A private system bus and ostreewatchd on the sample"
dbus-daemon --config-file="$TMP/bus.conf" --nofork --nopidfile 2>"$TMP/dbus-daemon.log" &
BUS_PID=$!
for _ in $(seq 200); do [ -S "$SOCKET" ] && break; sleep 0.05; done
[ -S "$SOCKET" ] || { cat "$TMP/dbus-daemon.log" >&2; ow_die "dbus-daemon did not start"; }
echo "bus:    $DBUS_SYSTEM_BUS_ADDRESS (dbus-daemon pid $BUS_PID)"

"$BIN/ostreewatchd" --bus "$DBUS_SYSTEM_BUS_ADDRESS" --sample 2>"$TMP/ostreewatchd.log" &
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
echo "daemon: ostreewatchd --bus \$DBUS_SYSTEM_BUS_ADDRESS --sample (pid $DAEMON_PID)"
echo
echo "Every command below is plain busctl; with DBUS_SYSTEM_BUS_ADDRESS exported as above"
echo "it talks to this private bus instead of the host's."

section "What it publishes (busctl introspect)"
# busctl prints every value on one line; cut them for the screen.
printf '\n$ busctl --system introspect org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager   (long values shortened)\n'
busctl --system introspect org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager \
    | sed -E 's/ {2,}([^ ]+)$/  \1/' \
    | awk '{ if (length($0) > 150) print substr($0, 1, 146) " ..."; else print }'

section "Read one property (busctl get-property)"
show busctl --system get-property org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager \
    BootedDeployment DefaultEntry Bootloader
show busctl --system --json=pretty get-property org.ostreewatch1 /org/ostreewatch1 \
    org.ostreewatch1.Manager Problems

section "Anyone may read; only root may change (the bus policy)"
echo '$ setpriv --reuid=65534 --regid=65534 --clear-groups busctl --system call ... Reload'
setpriv --reuid=65534 --regid=65534 --clear-groups \
    busctl --system call org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager Reload 2>&1 || true
show busctl --system call org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager Reload

section "The CLI asks the daemon (and says so)"
show "$BIN/ostreewatch" status --bus "$DBUS_SYSTEM_BUS_ADDRESS"
echo
echo "Writes go through the daemon too; a refusal comes back as a named D-Bus error"
echo "(org.ostreewatch1.Error.*), never a traceback:"
show "$BIN/ostreewatch" set-default ostree-1-rhcos --bus "$DBUS_SYSTEM_BUS_ADDRESS" || true

section "Follow changes"
echo "ostreewatch monitor [--json] --bus \$DBUS_SYSTEM_BUS_ADDRESS   # one line (or JSON object) per change"
echo "busctl --system monitor org.ostreewatch1        # every signal and call"
echo "busctl --system --match=\"type='signal',sender='org.ostreewatch1'\" monitor"
echo "gdbus monitor --system --dest org.ostreewatch1"

if [ "$KEEP" -eq 1 ]; then
    section "Running until Ctrl-C"
    echo "In another shell:  export DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SYSTEM_BUS_ADDRESS"
    wait "$DAEMON_PID" || true
fi
