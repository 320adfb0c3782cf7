#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The linters, as scripts/run-tests.sh runs them before pytest (`make lint` runs them alone):
#     scripts/lint.sh
# ruff check and ruff format --check over the package, scripts, tests and bench,
# mypy --strict over the package, and vulture (dead code) over the package, scripts,
# tests and bench with scripts/vulture-whitelist.py (the names only a library uses);
# all configured in pyproject.toml and pinned in
# setup.cfg's test extra (installed into .venv first, as run-tests.sh does). Every tool
# runs and prints its findings (ruff format as a diff); the exit code is 1 when any found one.
set -euo pipefail

# shellcheck source=scripts/setup-test-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-test-env.sh"

# ow_lint: the three tools from the repository's root; 1 when any reports a finding.
ow_lint() {
    local rc=0 paths
    (
        cd "$OW_REPO"
        paths=(ostreewatch scripts/*.py tests bench)
        ow_log "ruff check ${paths[*]}"
        "$OW_VENV/bin/ruff" check --no-fix "${paths[@]}" || rc=1
        ow_log "ruff format --check ${paths[*]}"
        "$OW_VENV/bin/ruff" format --check --diff "${paths[@]}" || rc=1
        # A user who may not write the checkout (uid 65534 running `run-tests.sh -m unit`):
        # mypy without its cache (it fails when it cannot write .mypy_cache).
        local cache=()
        if ! { [ -w .mypy_cache ] || { [ ! -e .mypy_cache ] && [ -w . ]; }; }; then
            cache=(--cache-dir=/dev/null)
        fi
        ow_log "mypy --strict ostreewatch ${cache[*]}"
        "$OW_VENV/bin/mypy" --strict "${cache[@]}" ostreewatch || rc=1
        # scripts/*.py holds scripts/vulture-whitelist.py.
        ow_log "vulture ${paths[*]}"
        "$OW_VENV/bin/vulture" "${paths[@]}" || rc=1
        exit "$rc"
    )
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cd "$OW_REPO"
    ow_timed "virtualenv" ow_make_venv test
    rc=0
    ow_timed "lint" ow_lint || rc=$?
    ow_print_timings
    if [ "$rc" -ne 0 ]; then
        ow_log "FAILED: lint found the problems above"
    else
        ow_log "OK"
    fi
    exit "$rc"
fi
