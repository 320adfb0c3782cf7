"""What changed between two snapshots, in the shape signals and journal records need.

Pure: no I/O, no clock. Records are compared by their identity (deployment id,
entry id, mount point, problem value), never by position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from ostreewatch.model import Problem, Snapshot

_R = TypeVar("_R")


@dataclass(frozen=True)
class Changes:
    """The difference old -> new; every tuple is sorted (problems keep snapshot order)."""

    changed_properties: tuple[str, ...] = ()
    deployments_added: tuple[str, ...] = ()
    deployments_removed: tuple[str, ...] = ()
    entries_added: tuple[str, ...] = ()
    entries_removed: tuple[str, ...] = ()
    entries_modified: tuple[str, ...] = ()
    default_entry: tuple[str, str] | None = None  # (previous, current)
    mount_points_changed: tuple[str, ...] = ()
    problems_appeared: tuple[Problem, ...] = ()
    problems_cleared: tuple[Problem, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the two snapshots are equal (nothing to publish)."""
        return not self.changed_properties


def _by_key(records: Iterable[_R], key: str) -> dict[str, _R]:
    # A later duplicate id (should not happen, but input is the host's) wins;
    # the diff stays defined either way.
    return {getattr(r, key): r for r in records}


def _keyed_diff(
    old: Iterable[_R], new: Iterable[_R], key: str
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(added, removed, modified) identities of two record sequences."""
    a, b = _by_key(old, key), _by_key(new, key)
    added = tuple(sorted(k for k in b if k not in a))
    removed = tuple(sorted(k for k in a if k not in b))
    modified = tuple(sorted(k for k in b if k in a and a[k] != b[k]))
    return added, removed, modified


def _problem_diff(
    old: tuple[Problem, ...], new: tuple[Problem, ...]
) -> tuple[tuple[Problem, ...], tuple[Problem, ...]]:
    """(appeared, cleared): a problem is its whole value (code, message, subject)."""
    old_set, new_set = set(old), set(new)
    appeared = tuple(dict.fromkeys(p for p in new if p not in old_set))
    cleared = tuple(dict.fromkeys(p for p in old if p not in new_set))
    return appeared, cleared


def diff(old: Snapshot, new: Snapshot) -> Changes:
    """Compare two snapshots field by field."""
    if old == new:
        return Changes()
    changed = tuple(f.name for f in dataclasses.fields(Snapshot) if getattr(old, f.name) != getattr(new, f.name))
    dep_added, dep_removed, _ = _keyed_diff(old.Deployments, new.Deployments, "id")
    ent_added, ent_removed, ent_modified = _keyed_diff(old.BootEntries, new.BootEntries, "id")
    m_added, m_removed, m_modified = _keyed_diff(old.Mounts, new.Mounts, "mount_point")
    appeared, cleared = _problem_diff(old.Problems, new.Problems)
    default_entry = (old.DefaultEntry, new.DefaultEntry) if old.DefaultEntry != new.DefaultEntry else None
    return Changes(
        changed_properties=changed,
        deployments_added=dep_added,
        deployments_removed=dep_removed,
        entries_added=ent_added,
        entries_removed=ent_removed,
        entries_modified=ent_modified,
        default_entry=default_entry,
        mount_points_changed=tuple(sorted(set(m_added) | set(m_removed) | set(m_modified))),
        problems_appeared=appeared,
        problems_cleared=cleared,
    )
