"""changes.diff: a pure function, tested with model objects built by hand."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ostreewatch.changes import Changes, diff
from ostreewatch.model import BootEntry, Deployment, Mount, Problem, Snapshot

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def dep(i: str, index: int = 0, **kw) -> Deployment:
    return Deployment(
        id=f"fedora-{i}.0",
        osname="fedora",
        checksum=i,
        serial=0,
        index=index,
        path=f"/ostree/deploy/fedora/deploy/{i}.0",
        **kw,
    )


def ent(i: str, **kw) -> BootEntry:
    return BootEntry(id=i, file=i + ".conf", **kw)


def mnt(point: str, mount_id: int = 1, options: str = "rw") -> Mount:
    return Mount(
        mount_point=point,
        mount_id=mount_id,
        parent_id=0,
        device="252:4",
        root="/",
        source="/dev/vda4",
        fstype="xfs",
        options=options,
        super_options="rw",
        read_only=options.startswith("ro"),
        propagation="shared:1",
    )


BASE = Snapshot(
    Bootloader="grub2",
    OstreeBooted=True,
    BootedDeployment="fedora-a.0",
    DefaultDeployment="fedora-a.0",
    DefaultEntry="ostree-2",
    BootedEntry="ostree-2",
    Deployments=(dep("a", 0, booted=True, default=True), dep("b", 1, rollback=True)),
    BootEntries=(ent("ostree-2", title="A", default=True), ent("ostree-1", title="B")),
    Mounts=(mnt("/"), mnt("/sysroot", 2, "ro"), mnt("/boot", 3)),
    Problems=(Problem("grubenv-missing", "no grubenv", "/boot/grub2/grubenv"),),
)


def test_equal_snapshots_give_empty_changes():
    c = diff(BASE, dataclasses.replace(BASE))
    assert c == Changes()
    assert c.empty
    assert diff(Snapshot(), Snapshot()).empty


def test_new_deployment_and_renumbered_entries():
    # A deploy: new deployment c at index 0, b pruned, entries renumbered.
    new = dataclasses.replace(
        BASE,
        DefaultDeployment="fedora-c.0",
        RollbackDeployment="fedora-a.0",
        DefaultEntry="ostree-2",
        Deployments=(dep("c", 0, default=True), dep("a", 1, booted=True, rollback=True)),
        BootEntries=(ent("ostree-2", title="C", default=True), ent("ostree-1", title="A")),
    )
    c = diff(BASE, new)
    assert not c.empty
    assert c.changed_properties == ("DefaultDeployment", "RollbackDeployment", "Deployments", "BootEntries")
    assert c.deployments_added == ("fedora-c.0",)
    assert c.deployments_removed == ("fedora-b.0",)
    assert c.entries_added == () and c.entries_removed == ()
    assert c.entries_modified == ("ostree-1", "ostree-2")
    assert c.default_entry is None  # same id, different content: not a DefaultEntry change
    assert c.mount_points_changed == ()
    assert c.problems_appeared == () and c.problems_cleared == ()


def test_default_entry_change():
    new = dataclasses.replace(BASE, DefaultEntry="ostree-1")
    c = diff(BASE, new)
    assert c.default_entry == ("ostree-2", "ostree-1")
    assert c.changed_properties == ("DefaultEntry",)
    assert diff(new, BASE).default_entry == ("ostree-1", "ostree-2")
    assert diff(BASE, dataclasses.replace(BASE, DefaultEntry="")).default_entry == ("ostree-2", "")


def test_entries_added_removed_modified():
    new = dataclasses.replace(BASE, BootEntries=(ent("ostree-2", title="A", default=True, tries_left=2), ent("hand")))
    c = diff(BASE, new)
    assert c.entries_added == ("hand",)
    assert c.entries_removed == ("ostree-1",)
    assert c.entries_modified == ("ostree-2",)
    assert c.changed_properties == ("BootEntries",)


def test_reordering_alone_changes_the_property_but_no_record():
    new = dataclasses.replace(BASE, BootEntries=tuple(reversed(BASE.BootEntries)))
    c = diff(BASE, new)
    assert c.changed_properties == ("BootEntries",)  # the published array differs
    assert (c.entries_added, c.entries_removed, c.entries_modified) == ((), (), ())


def test_mounts_added_removed_changed():
    new = dataclasses.replace(BASE, Mounts=(mnt("/", 1, "ro"), mnt("/sysroot", 2, "ro"), mnt("/usr", 9)))
    c = diff(BASE, new)
    assert c.mount_points_changed == ("/", "/boot", "/usr")
    assert c.changed_properties == ("Mounts",)
    # The same mount remounted (new id) is a change too.
    c2 = diff(BASE, dataclasses.replace(BASE, Mounts=(mnt("/"), mnt("/sysroot", 2, "ro"), mnt("/boot", 33))))
    assert c2.mount_points_changed == ("/boot",)


def test_problems_appeared_and_cleared():
    p_old = BASE.Problems[0]
    p_new = Problem("entry-malformed", "line 3: no key", "bad")
    p_new2 = Problem("entry-malformed", "line 1: no key", "worse")
    c = diff(BASE, dataclasses.replace(BASE, Problems=(p_new, p_new2)))
    assert c.problems_appeared == (p_new, p_new2)
    assert c.problems_cleared == (p_old,)
    # Same code, different subject: a different problem.
    c2 = diff(BASE, dataclasses.replace(BASE, Problems=(dataclasses.replace(p_old, subject="/x"),)))
    assert c2.problems_appeared[0].subject == "/x" and c2.problems_cleared == (p_old,)


def test_scalar_fields():
    new = dataclasses.replace(
        BASE, OstreeBooted=False, Bootloader="systemd-boot", StagedDeployment="fedora-d.0", NextEntry="ostree-1"
    )
    c = diff(BASE, new)
    assert c.changed_properties == ("Bootloader", "OstreeBooted", "StagedDeployment", "NextEntry")
    assert c.deployments_added == ()  # StagedDeployment alone; Deployments unchanged


def test_changes_is_frozen():
    c = diff(BASE, Snapshot())
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.deployments_added = ()  # type: ignore[misc]


_ids = st.sampled_from(["a", "b", "c", "d", "e"])
_deps = st.lists(
    st.builds(lambda i, ix, p: dep(i, ix, pinned=p), _ids, st.integers(0, 3), st.booleans()),
    max_size=5,
    unique_by=lambda d: d.id,
).map(tuple)
_ents = st.lists(
    st.builds(lambda i, t: ent(i, title=t), _ids, st.sampled_from(["x", "y"])), max_size=5, unique_by=lambda e: e.id
).map(tuple)
_mnts = st.lists(
    st.builds(mnt, st.sampled_from(["/", "/usr", "/boot", "/var"]), st.integers(1, 3)),
    max_size=4,
    unique_by=lambda m: m.mount_point,
).map(tuple)
_probs = st.lists(st.builds(Problem, st.sampled_from(["p1", "p2"]), st.just("m"), _ids), max_size=4, unique=True).map(
    tuple
)
_snaps = st.builds(
    Snapshot,
    DefaultEntry=st.sampled_from(["", "a", "b"]),
    Deployments=_deps,
    BootEntries=_ents,
    Mounts=_mnts,
    Problems=_probs,
)


@settings(max_examples=300, deadline=None)
@given(_snaps, _snaps)
def test_properties_of_diff(a, b):
    c, r = diff(a, b), diff(b, a)
    assert c.empty == (a == b)
    assert set(c.changed_properties) == {
        f.name for f in dataclasses.fields(Snapshot) if getattr(a, f.name) != getattr(b, f.name)
    }
    assert c.deployments_added == r.deployments_removed
    assert c.entries_added == r.entries_removed and c.entries_modified == r.entries_modified
    assert c.mount_points_changed == r.mount_points_changed
    assert set(c.problems_appeared) == set(r.problems_cleared)
    assert set(c.deployments_added) == {d.id for d in b.Deployments} - {d.id for d in a.Deployments}
    assert (c.default_entry is None) == (a.DefaultEntry == b.DefaultEntry)
    if "Deployments" not in c.changed_properties:
        assert c.deployments_added == c.deployments_removed == ()
