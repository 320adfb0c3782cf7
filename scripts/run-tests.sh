#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# THE test command (README and CI), for a fresh Debian 12 machine, as root:
#     sudo scripts/run-tests.sh [PYTEST ARGS...]
# A part: `scripts/run-tests.sh tests/test_x.py` does only the set-up that file needs;
# `scripts/run-tests.sh -m unit` runs the pure tests (no root, no apt package, no tree;
# as any uid once root has made the venv).
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

# What the selected tests need. `-m unit` (the pure tests: no root, no package, no tree)
# needs only the venv. Test files named on the command line need the debootstrap tree or the
# modern trees only when they (or the tests/fixtures modules they import) use them; with no
# file named, the whole suite needs everything.
unit_only=0
files=()
prev=""
for arg in "$@"; do
    if [ "$prev" = "-m" ]; then
        case "$arg" in unit | "unit and "*) unit_only=1 ;; esac
    fi
    case "$arg" in -munit | "-munit and "*) unit_only=1 ;; esac
    path="${arg%%::*}"
    case "$path" in tests | tests/* | */tests | */tests/*) [ -e "$path" ] && files+=("$path") ;; esac
    prev="$arg"
done

# ow_files_need PATTERN: whether a named test file, or a tests/fixtures module it imports, matches PATTERN.
ow_files_need() {
    local pattern="$1" f fixture sources=()
    [ ${#files[@]} -eq 0 ] && return 0
    for f in "${files[@]}"; do
        if [ -d "$f" ]; then
            sources+=("$f")
            continue
        fi
        sources+=("$f")
        for fixture in $(grep -ohE "tests\.fixtures\.[a-z_]+|from tests\.fixtures import [a-z_, ]+" "$f" |
            sed -e 's/^from tests\.fixtures import //' -e 's/^tests\.fixtures\.//' | tr ',' ' '); do
            [ -f "tests/fixtures/$fixture.py" ] && sources+=("tests/fixtures/$fixture.py")
        done
    done
    grep -rqE "$pattern" --include='*.py' "${sources[@]}"
}
NEEDS_ROOTFS='fixtures[.]nspawn|fixtures import .*nspawn|NSPAWN_ROOT|mark[.]nspawn'
NEEDS_TREES='fixtures[.](modern|trees)|fixtures import .*(modern|trees)|SID_ROOT|TRIXIE_ROOT'
NEEDS_VM_TREE='fixtures[.]vm|fixtures import .*vm|tests[.]vm|VM_BASE|mark[.]vm'

if [ "$unit_only" = 1 ]; then
    ow_log "-m unit: the venv only (no apt packages, no trees; any uid)"
    ow_timed "virtualenv" ow_make_venv test
else
    [ "$(id -u)" -eq 0 ] || ow_log "warning: not root; most tests need root (mount namespaces, setpriv, journald)"
    ow_timed "apt packages" ow_install_apt
    ow_timed "virtualenv" ow_make_venv test
    if ow_files_need "$NEEDS_ROOTFS"; then
        ow_timed "debootstrap tree" ow_make_rootfs
    else
        ow_log "rootfs: not needed by ${files[*]}"
    fi
    if ow_files_need "$NEEDS_TREES"; then
        ow_timed "modern trees" ow_make_modern_trees
    else
        ow_log "modern trees: not needed by ${files[*]}"
    fi
    if ow_files_need "$NEEDS_VM_TREE"; then
        ow_timed "vm tree" ow_make_vm_tree
    else
        ow_log "vm tree: not needed by ${files[*]}"
    fi
fi

if ! ow_timed "lint" ow_lint; then
    ow_print_timings
    ow_log "FAILED: the linters found the problems above (scripts/lint.sh runs them alone); pytest not run"
    exit 1
fi

# Show the slowest tests unless the caller chose otherwise: CI's budget is 90 min.
args=("$@")
case " $* " in *" --durations"*) ;; *) args=(--durations=15 "${args[@]}") ;; esac
# A user who may not write the checkout: no .pytest_cache, hypothesis's examples in a temp dir.
if [ ! -w "$OW_REPO" ]; then
    args=(-p no:cacheprovider "${args[@]}")
    export HYPOTHESIS_STORAGE_DIRECTORY="${TMPDIR:-/tmp}/hypothesis-of-ostreewatch-$(id -u)"
fi

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
