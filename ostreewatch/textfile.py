"""The node_exporter textfile: a snapshot rendered in the Prometheus text exposition format.

`render()` is pure (snapshot in, text out); `write_textfile()` replaces DIR/ostreewatch.prom
atomically (a temp file in the same directory, fsync, rename, fsync of the directory), so
node_exporter's textfile collector never reads a half-written file. The daemon calls both
from an executor thread, at start and on every published change (docs/fleet.md).

Label cardinality is bounded: one `ostreewatch_info` series per host (the booted and the
default deployment and their versions), `ostreewatch_problems` has one series per code of
KNOWN_PROBLEM_CODES plus `other`, whatever the host holds, and `ostreewatch_last_boot_outcome`
one per outcome. No per-entry or per-mount label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from . import runfiles
from .bootoutcome import OUTCOMES
from .model import PROBLEM_CODES, ProblemCode, Snapshot

FILE_NAME = "ostreewatch.prom"

# The codes the reader emits (model.PROBLEM_CODES, retired ones left out); a code not listed is
# counted under "other", so the series set never grows.
KNOWN_PROBLEM_CODES: tuple[str, ...] = tuple(sorted(PROBLEM_CODES))
OTHER_CODE = "other"
FALLBACK_CODE = ProblemCode.BOOT_FALLBACK.code

# A label value longer than this is cut: a version string is free text from the commit.
MAX_LABEL_LENGTH = 128


def escape_label_value(value: str) -> str:
    """A label value as the exposition format wants it: backslash, double quote and newline escaped."""
    if len(value) > MAX_LABEL_LENGTH:
        value = value[:MAX_LABEL_LENGTH]
    # Names read from disk may carry undecodable bytes (surrogates); the format is UTF-8 only.
    value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Iterable[tuple[str, str]], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")


def problem_counts(snapshot: Snapshot) -> dict[str, int]:
    """Problems per code: every known code (0 when absent) and `other`."""
    counts = {code: 0 for code in KNOWN_PROBLEM_CODES}
    counts[OTHER_CODE] = 0
    for problem in snapshot.Problems:
        code = problem.code if problem.code in counts else OTHER_CODE
        counts[code] += 1
    return counts


def update_pending(snapshot: Snapshot) -> bool:
    """The next boot changes the deployment: a staged one, or a default that is not the booted one."""
    if snapshot.StagedDeployment:
        return True
    return bool(
        snapshot.BootedDeployment
        and snapshot.DefaultDeployment
        and snapshot.BootedDeployment != snapshot.DefaultDeployment
    )


def _version_of(snapshot: Snapshot, deployment_id: str) -> str:
    for d in snapshot.Deployments:
        if d.id == deployment_id:
            return d.version
    return ""


def render(snapshot: Snapshot, generation: int, last_change: float) -> str:
    """The textfile for SNAPSHOT, published as GENERATION at LAST_CHANGE (Unix seconds)."""
    out = _Out()
    out.metric(
        "ostreewatch_info",
        "gauge",
        "The booted and default deployments, their versions and the boot loader (always 1).",
        [
            (
                (
                    ("booted_deployment", snapshot.BootedDeployment),
                    ("default_deployment", snapshot.DefaultDeployment),
                    ("booted_version", _version_of(snapshot, snapshot.BootedDeployment)),
                    ("default_version", _version_of(snapshot, snapshot.DefaultDeployment)),
                    ("bootloader", snapshot.Bootloader),
                ),
                1,
            )
        ],
    )
    out.metric(
        "ostreewatch_ostree_booted",
        "gauge",
        "1 when the host is booted into an ostree deployment (the run directory holds ostree-booted).",
        [((), snapshot.OstreeBooted)],
    )
    out.metric(
        "ostreewatch_deployments", "gauge", "Number of deployments, staged included.", [((), len(snapshot.Deployments))]
    )
    out.metric(
        "ostreewatch_update_pending",
        "gauge",
        "1 when the next boot changes the deployment: the default is not the booted one, or one is staged.",
        [((), update_pending(snapshot))],
    )
    counts = problem_counts(snapshot)
    out.metric(
        "ostreewatch_boot_fallback",
        "gauge",
        "1 when the default deployment was tried and not kept (problem code boot-fallback).",
        [((), counts[FALLBACK_CODE] > 0)],
    )
    out.metric(
        "ostreewatch_problems",
        "gauge",
        "Problems the daemon publishes, by code (docs/problems.md); unknown codes count as other.",
        [((("code", code),), count) for code, count in sorted(counts.items())],
    )
    last_outcome = dict(snapshot.LastBoot).get("outcome", "")
    out.metric(
        "ostreewatch_last_boot_outcome",
        "gauge",
        "1 for how this boot turned out (docs/boot-outcome.md), 0 for the other outcomes; all 0 with no record.",
        [((("outcome", o),), o == last_outcome) for o in OUTCOMES],
    )
    out.metric(
        "ostreewatch_boot_fallbacks",
        "gauge",
        "Boots in the recorded history (the last 32) whose outcome was fallback.",
        [((), sum(1 for b in snapshot.BootHistory if b.outcome == "fallback"))],
    )
    out.metric(
        "ostreewatch_generation",
        "gauge",
        "The daemon's Generation: 1 at start, one more at each published change.",
        [((), generation)],
    )
    out.metric(
        "ostreewatch_last_change_timestamp_seconds",
        "gauge",
        "When the daemon last published a change (its start counts as one), in Unix seconds.",
        [((), float(last_change))],
    )
    return "\n".join(out.lines) + "\n"


def write_textfile(directory: str, text: str, name: str = FILE_NAME) -> str:
    """Atomically replace DIRECTORY/NAME with TEXT (mode 0644); returns the path. Raises OSError."""
    # runfiles' temp name is a dot name ending in .tmp: node_exporter reads only *.prom.
    return runfiles.replace(directory, name, text.encode("utf-8"))


def remove_textfile(directory: str, name: str = FILE_NAME) -> bool:
    """Remove DIRECTORY/NAME, so a stopped daemon's metrics go absent; False when there was none."""
    return runfiles.remove(directory, name)
