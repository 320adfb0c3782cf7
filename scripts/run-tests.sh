#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# THE test command (README and CI), for a fresh Debian 12 machine, as root:
#     sudo scripts/run-tests.sh [PYTEST ARGS...]
# Installs the apt packages of scripts/apt-packages.txt that are missing, a
# virtualenv (.venv, from /usr/bin/python3) with `pip install -e .[test]`, the
# cached Debian tree for the systemd-nspawn tests, then the linters (scripts/lint.sh:
# ruff check, ruff format --check, mypy --strict; a finding fails the run, exit 1,
# before pytest), then runs pytest with the given arguments. Exit code: pytest's;
# "no tests collected" (5) is a failure too.
set -euo pipefail

# shellcheck source=scripts/setup-test-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-test-env.sh"
# shellcheck source=scripts/lint.sh
source "$(dirname "${BASH_SOURCE[0]}")/lint.sh"
cd "$OW_REPO"

[ "$(id -u)" -eq 0 ] || ow_log "warning: not root; most tests need root (mount namespaces, setpriv, journald)"

ow_timed "apt packages" ow_install_apt
ow_timed "virtualenv" ow_make_venv test
ow_timed "debootstrap tree" ow_make_rootfs
ow_timed "modern trees" ow_make_modern_trees

if ! ow_timed "lint" ow_lint; then
    ow_print_timings
    ow_log "FAILED: the linters found the problems above (scripts/lint.sh runs them alone); pytest not run"
    exit 1
fi

# Show the slowest tests unless the caller chose otherwise: CI's budget is 90 min.
args=("$@")
case " $* " in *" --durations"*) ;; *) args=(--durations=15 "${args[@]}") ;; esac

# Every process of this run inherits the tag; whatever still carries it after
# pytest has exited was leaked by a test (a daemon, a bus, a namespace holder).
export OSTREEWATCH_TEST_RUN="$$-$(date +%s%N)"
tmp_before="$(ls -A /tmp | sort)"

ow_log "pytest ${args[*]}"
rc=0
ow_timed "pytest" "$OW_VENV/bin/pytest" "${args[@]}" || rc=$?
ow_print_timings

# Unset first, so that the scan's own processes do not carry the tag.
run_tag="$OSTREEWATCH_TEST_RUN"
unset OSTREEWATCH_TEST_RUN
leaked="$(grep -lsa "OSTREEWATCH_TEST_RUN=$run_tag" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 || true)"
if [ -n "$leaked" ]; then
    ow_log "warning: processes left running by the tests:"
    for pid in $leaked; do
        printf '    %s %s\n' "$pid" "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c -150)" >&2
    done
fi
new_tmp="$(comm -13 <(echo "$tmp_before") <(ls -A /tmp | sort) | grep -E '^(ow|ostreewatch|owbench)' || true)"
if [ -n "$new_tmp" ]; then
    ow_log "warning: new entries left in /tmp (or made by a concurrent run): $(echo $new_tmp)"
fi
if [ "$rc" -eq 5 ]; then
    ow_log "FAILED: pytest collected no tests (exit 5)"
elif [ "$rc" -ne 0 ]; then
    ow_log "FAILED: pytest exit code $rc"
else
    ow_log "OK"
fi
exit "$rc"
