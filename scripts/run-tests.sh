#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# THE test command (README and CI), for a fresh Debian 12 machine, as root:
#     sudo scripts/run-tests.sh [PYTEST ARGS...]
# Installs the apt packages of scripts/apt-packages.txt that are missing, a
# virtualenv (.venv, from /usr/bin/python3) with `pip install -e .[test]`, the
# cached Debian tree for the systemd-nspawn tests, then runs pytest with the
# given arguments. Exit code: pytest's; "no tests collected" (5) is a failure too.
set -euo pipefail

# shellcheck source=scripts/setup-test-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-test-env.sh"
cd "$OW_REPO"

[ "$(id -u)" -eq 0 ] || ow_log "warning: not root; most tests need root (mount namespaces, setpriv, journald)"

ow_timed "apt packages" ow_install_apt
ow_timed "virtualenv" ow_make_venv test
ow_timed "debootstrap tree" ow_make_rootfs

# Show the slowest tests unless the caller chose otherwise: CI's budget is 90 min.
args=("$@")
case " $* " in *" --durations"*) ;; *) args=(--durations=15 "${args[@]}") ;; esac

ow_log "pytest ${args[*]}"
rc=0
ow_timed "pytest" "$OW_VENV/bin/pytest" "${args[@]}" || rc=$?
ow_print_timings
if [ "$rc" -eq 5 ]; then
    ow_log "FAILED: pytest collected no tests (exit 5)"
elif [ "$rc" -ne 0 ]; then
    ow_log "FAILED: pytest exit code $rc"
else
    ow_log "OK"
fi
exit "$rc"
