"""What GRUB will boot: upstream GRUB 2.14 (grub-emu of the sid tree, blsuki's blscfg) as the oracle.

Each case is a sysroot written by ostree 2026.4 (on its own tmpfs), a grub.cfg of
tests/fixtures/grub_configs.py (rig_config) in boot/grub/, and a grubenv written by grub-editenv.
grub-emu loads the same grub.cfg, grubenv and entries (tests/fixtures/modern.py,
grub_emu); its menu order and the entry Enter boots are compared with BootEntries,
DefaultEntry and NextEntry.

Where Fedora's grub2 differs from upstream (its own blscfg; the increment/decrement
commands greenboot uses), the case says so; no firmware or kernel runs (grub-emu only
prints the kexec it would do).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from ostreewatch import model, state
from ostreewatch.parse import cmdline
from tests.fixtures import grub_configs as cfgs
from tests.fixtures.modern import GrubMenu, ModernSysroot, grub_emu, modern_sysroot
from tests.fixtures.sysroots import write_grub

config = cfgs.rig_config  # the rig's grub.cfg by name: "bootupd-static.cfg" or "generated.cfg"


def run_case(sr: ModernSysroot, cfg: str, env: dict[str, str]) -> tuple[GrubMenu, model.Snapshot, str]:
    """Write grub.cfg + grubenv into SR's boot/grub, run GRUB and the reader; (menu, snapshot, booted entry id)."""
    grubenv = write_grub(sr.path, cfg, directory="boot/grub")
    for k, v in env.items():
        subprocess.run(["grub-editenv", grubenv, "set", f"{k}={v}"], check=True, timeout=30)
    menu = grub_emu(os.path.join(sr.path, "boot"), cfg)
    snap = state.read_snapshot(sr.paths())
    assert menu.booted_cmdline, f"GRUB booted nothing: {menu.raw[-1500:]!r}"
    booted_arg = cmdline.get_arg(menu.booted_cmdline, "ostree")
    booted = [e.id for e in snap.BootEntries if e.ostree == booted_arg]
    assert len(booted) == 1, (booted_arg, [e.ostree for e in snap.BootEntries])
    return menu, snap, booted[0]


def assert_same_menu(menu: GrubMenu, snap: model.Snapshot) -> None:
    assert menu.titles == [e.title for e in snap.BootEntries]


def _built(modern_sysroot, n: int = 3, tries: int | None = None) -> ModernSysroot:
    sr: ModernSysroot = modern_sysroot("2026.4")
    sr.init("fedora")
    if tries is not None:
        sr.config_set("sysroot.boot-counting-tries", str(tries))
    sr.build(n)
    return sr


def _entry_ids(snap: model.Snapshot) -> list[str]:
    return [e.id for e in snap.BootEntries]


# --- bootupd's static grub.cfg (FCOS, RHCOS, bootc, Atomic desktops) -------------------


def test_static_config_boots_the_first_entry(modern_sysroot) -> None:
    sr = _built(modern_sysroot)
    menu, snap, booted = run_case(sr, config("bootupd-static.cfg"), {})
    assert menu.default_var == ""
    assert_same_menu(menu, snap)
    assert booted == snap.DefaultEntry == _entry_ids(snap)[0]
    assert snap.NextEntry == ""
    assert snap.Problems == ()


def test_static_config_ignores_saved_entry(modern_sysroot) -> None:
    """grub2-set-default on a CoreOS host: GRUB still boots the first entry (fails before issue 9's reader)."""
    sr = _built(modern_sysroot)
    ids0 = _entry_ids(state.read_snapshot(sr.paths()))
    menu, snap, booted = run_case(sr, config("bootupd-static.cfg"), {"saved_entry": ids0[2], "next_entry": ids0[1]})
    assert menu.default_var == ""  # load_env alone never sets $default
    assert booted == ids0[0]
    assert snap.DefaultEntry == booted
    assert snap.NextEntry == ""
    # One problem per ignored variable is fine; nothing else.
    assert {p.code for p in snap.Problems} == {"saved-entry-ignored"}


def test_greenboot_fallback_boots_the_rollback(modern_sysroot) -> None:
    """greenboot's counter ran out (boot_counter=0, boot_success=0): `set default=1`, the rollback entry.

    Upstream GRUB evaluates this branch as Fedora's grub2 does (no increment/decrement
    needed, see grub_configs.rig_static). Fails before issue 9's reader.
    """
    sr = _built(modern_sysroot)
    menu, snap, booted = run_case(
        sr, config("bootupd-static.cfg", greenboot=True), {"boot_counter": "0", "boot_success": "0"}
    )
    assert menu.default_var == "1"
    assert booted == _entry_ids(snap)[1]
    assert snap.DefaultEntry == booted
    assert snap.DefaultEntrySource == "greenboot-fallback"
    assert "boot-fallback" in [p.code for p in snap.Problems]


def test_greenboot_counting_down_keeps_the_default(modern_sysroot) -> None:
    """boot_counter=2: Fedora's grub2 decrements it (upstream cannot: no `decrement`); either way entry 0 boots."""
    sr = _built(modern_sysroot)
    menu, snap, booted = run_case(
        sr, config("bootupd-static.cfg", greenboot=True), {"boot_counter": "2", "boot_success": "0"}
    )
    assert menu.default_var == ""
    assert booted == _entry_ids(snap)[0] == snap.DefaultEntry
    assert "boot-fallback" not in [p.code for p in snap.Problems]


@pytest.mark.parametrize("counter, after, entry", [("0", "-1", 1), ("-1", "-1", 1), ("1", "0", 0), ("3", "2", 0)])
def test_greenboot_upstream_countdown(modern_sysroot, counter: str, after: str, entry: int) -> None:
    """greenboot's drop-in counting down in upstream GRUB script (tests/test_vm_fallback.py boots it).

    GRUB 2.14 runs the if-chain: the counter goes down by one (printed after the config ran);
    when it ran out the rollback entry boots, and the reader says the same.
    """
    sr = _built(modern_sysroot)
    cfg = cfgs.rig_static_greenboot_upstream() + 'echo "OW-COUNTER=[${boot_counter}]"\n'
    menu, snap, booted = run_case(sr, cfg, {"boot_counter": counter, "boot_success": "0"})
    assert f"OW-COUNTER=[{after}]" in menu.raw
    assert booted == _entry_ids(snap)[entry] == snap.DefaultEntry
    assert ("boot-fallback" in [p.code for p in snap.Problems]) == (entry == 1)


# --- a generated grub2-mkconfig grub.cfg (Silverblue and older hosts) ------------------


def test_generated_config_honours_saved_entry(modern_sysroot) -> None:
    sr = _built(modern_sysroot)
    ids0 = _entry_ids(state.read_snapshot(sr.paths()))
    menu, snap, booted = run_case(sr, config("generated.cfg"), {"saved_entry": ids0[1]})
    assert menu.default_var == ids0[1]
    assert_same_menu(menu, snap)
    assert booted == ids0[1] == snap.DefaultEntry
    assert snap.NextEntry == ""
    assert snap.Problems == ()


def test_generated_config_next_entry_wins_once(modern_sysroot) -> None:
    """next_entry is what GRUB boots next: NextEntry, and DefaultEntry (what boots next) too."""
    sr = _built(modern_sysroot)
    ids0 = _entry_ids(state.read_snapshot(sr.paths()))
    menu, snap, booted = run_case(sr, config("generated.cfg"), {"saved_entry": ids0[1], "next_entry": ids0[2]})
    assert menu.default_var == ids0[2]
    assert menu.next_var == ""  # 00_header clears it (and save_env's it) before booting
    assert booted == ids0[2] == snap.NextEntry == snap.DefaultEntry


def test_generated_config_saved_entry_naming_nothing(modern_sysroot) -> None:
    """A saved_entry that names no entry: GRUB silently boots entry 0; the reader says so with a problem."""
    sr = _built(modern_sysroot)
    menu, snap, booted = run_case(sr, config("generated.cfg"), {"saved_entry": "ostree-99"})
    assert menu.default_var == "ostree-99"
    assert booted == _entry_ids(snap)[0] == snap.DefaultEntry
    assert [p.code for p in snap.Problems] == ["saved-entry-missing"]


# --- order ------------------------------------------------------------------------------


@pytest.mark.slow
def test_ten_entries_order_ostree_10_before_9(modern_sysroot) -> None:
    """blscfg sorts by file name, version-aware: ostree-10 first, then ostree-9 ... ostree-1."""
    sr = _built(modern_sysroot, n=10)
    menu, snap, booted = run_case(sr, config("bootupd-static.cfg"), {})
    assert_same_menu(menu, snap)
    assert _entry_ids(snap)[:2] == ["ostree-10", "ostree-9"]
    assert booted == "ostree-10" == snap.DefaultEntry


def test_boot_counting_entries_order_and_default(modern_sysroot) -> None:
    """ostree 2026.4 with sysroot.boot-counting-tries: GRUB's menu and default against the reader."""
    sr = _built(modern_sysroot, tries=3)
    menu, snap, booted = run_case(sr, config("bootupd-static.cfg"), {})
    assert all("+" in e.file for e in snap.BootEntries)
    assert_same_menu(menu, snap)
    assert booted == snap.DefaultEntry == _entry_ids(snap)[0]


@pytest.mark.parametrize("spelling", ["grub-menu-id", "contract-id"])
def test_boot_counting_saved_entry_spellings(modern_sysroot, spelling: str) -> None:
    """GRUB 2.14's menu id keeps the counter (ostree-2+3-0); the contract's entry id drops it (ostree-2).

    saved_entry=ostree-2+3-0 is honoured by GRUB; saved_entry=ostree-2 matches no menu id,
    and GRUB silently boots entry 0. DefaultEntry must be what GRUB boots in both cases.
    """
    sr = _built(modern_sysroot, tries=3)
    second = state.read_snapshot(sr.paths()).BootEntries[1]
    saved = second.file[: -len(".conf")] if spelling == "grub-menu-id" else second.id
    menu, snap, booted = run_case(sr, config("generated.cfg"), {"saved_entry": saved})
    assert menu.default_var == saved
    assert booted == (second.id if spelling == "grub-menu-id" else snap.BootEntries[0].id)
    assert snap.DefaultEntry == booted


# --- an entry with no tries left ------------------------------------------------------------


def _exhaust_first_entry(sr: ModernSysroot) -> str:
    """Rename the default entry NAME+3.conf to NAME+0-3.conf: its tries ran out.

    Not done by a real boot loader here: systemd-boot renames the file itself at each
    try (systemd src/boot/boot.c, the boot counting of the Boot Loader Specification);
    upstream GRUB 2.14 never does. The test does the rename that three failed boots leave.
    """
    first = sorted(sr.entry_files(), key=lambda f: int(f.split("-")[1].split("+")[0]))[-1]
    name, _ = first.split("+", 1)
    exhausted = f"{name}+0-3.conf"
    os.rename(os.path.join(sr.entries_dir(), first), os.path.join(sr.entries_dir(), exhausted))
    return exhausted


def test_no_tries_left_grub_order(modern_sysroot) -> None:
    """GRUB 2.14 does not demote an entry with no tries left: it stays first and boots.

    BootEntries must be in the boot loader's order on a GRUB host (issue 9 C: fails while
    the reader sorts every host as systemd-boot does).
    """
    sr = _built(modern_sysroot, tries=3)
    exhausted = _exhaust_first_entry(sr)
    menu, snap, booted = run_case(sr, config("bootupd-static.cfg"), {})
    assert booted == exhausted.split("+")[0]
    assert_same_menu(menu, snap)
    assert snap.DefaultEntry == booted


def test_no_tries_left_systemd_boot_order(modern_sysroot, tmp_path) -> None:
    """systemd-boot sorts an entry with no tries left last (bootctl as the oracle) and boots the next one."""
    from tests.fixtures.oracles import bootctl_list

    sr = _built(modern_sysroot, tries=3)
    exhausted = _exhaust_first_entry(sr)
    with open(os.path.join(sr.path, "boot", "loader", "loader.conf"), "w") as f:
        f.write("timeout 3\n")
    entries, default_id = bootctl_list(os.path.join(sr.path, "boot"))
    snap = state.read_snapshot(sr.paths())
    assert snap.Bootloader == "systemd-boot"
    # bootctl's ids drop the counter but keep ".conf" (systemd src/shared/bootspec.c).
    assert [e.id + ".conf" for e in snap.BootEntries] == [e["id"] for e in entries]
    assert snap.BootEntries[-1].file == exhausted
    assert default_id is not None and snap.DefaultEntry + ".conf" == default_id


def test_no_tries_left_is_a_boot_fallback(modern_sysroot) -> None:
    """An entry with no tries left is evidence the default was tried and not kept (issue 9 E; fails before it)."""
    sr = _built(modern_sysroot, tries=3)
    _exhaust_first_entry(sr)
    with open(os.path.join(sr.path, "boot", "loader", "loader.conf"), "w") as f:
        f.write("timeout 3\n")
    snap = state.read_snapshot(sr.paths())
    assert "boot-fallback" in [p.code for p in snap.Problems]


@pytest.mark.parametrize(
    "cfg,env,source",
    [
        ("bootupd-static.cfg", {}, "first-entry"),
        ("bootupd-static.cfg", {"saved_entry": 2}, "first-entry"),
        ("generated.cfg", {}, "first-entry"),
        ("generated.cfg", {"saved_entry": 1}, "saved_entry"),
        ("generated.cfg", {"saved_entry": 1, "next_entry": 2}, "next_entry"),
        ("bootupd-static.cfg+greenboot", {"boot_counter": "0", "boot_success": "0"}, "greenboot-fallback"),
    ],
    ids=["static", "static-saved", "generated", "generated-saved", "generated-next", "greenboot"],
)
def test_default_entry_source(modern_sysroot, cfg: str, env: dict[str, object], source: str) -> None:
    """DefaultEntrySource (issue 9 contract) says why DefaultEntry is what GRUB boots (fails before the reader change).

    Integers in ENV are positions in the entry order, turned into entry ids.
    """
    sr = _built(modern_sysroot)
    ids0 = _entry_ids(state.read_snapshot(sr.paths()))
    values = {k: ids0[v] if isinstance(v, int) else str(v) for k, v in env.items()}
    name, _, extra = cfg.partition("+")
    menu, snap, booted = run_case(sr, config(name, greenboot=extra == "greenboot"), values)
    assert snap.DefaultEntry == booted
    assert snap.DefaultEntrySource == source


@pytest.mark.parametrize(
    "loader_conf,source",
    [("timeout 3\n", "first-entry"), ("timeout 3\ndefault ostree-2*\n", "loader.conf")],
    ids=["no-default", "default-glob"],
)
def test_systemd_boot_default_and_source(modern_sysroot, loader_conf: str, source: str) -> None:
    """systemd-boot host: bootctl's default against DefaultEntry, and DefaultEntrySource (issue 9 contract).

    No EFI variables exist here (no firmware): LoaderEntryDefault/OneShot are unset, as on
    a host where nobody ran `bootctl set-default`.
    """
    from tests.fixtures.oracles import bootctl_list

    sr = _built(modern_sysroot)
    with open(os.path.join(sr.path, "boot", "loader", "loader.conf"), "w") as f:
        f.write(loader_conf)
    entries, default_id = bootctl_list(os.path.join(sr.path, "boot"))
    snap = state.read_snapshot(sr.paths())
    assert [e.id + ".conf" for e in snap.BootEntries] == [e["id"] for e in entries]
    assert default_id is not None and snap.DefaultEntry + ".conf" == default_id
    assert snap.DefaultEntrySource == source


@pytest.mark.parametrize("form", ["title", "index"])
def test_generated_config_saved_entry_by_title_or_index(modern_sysroot, form: str) -> None:
    """GRUB's `default` also matches an entry's exact title or its menu index (grub-core/normal/menu.c).

    grub2-set-default accepts both; DefaultEntry must be the entry GRUB boots.
    """
    sr = _built(modern_sysroot)
    snap0 = state.read_snapshot(sr.paths())
    saved = snap0.BootEntries[1].title if form == "title" else "1"
    menu, snap, booted = run_case(sr, config("generated.cfg"), {"saved_entry": saved})
    assert menu.default_var == saved
    assert booted == snap0.BootEntries[1].id
    assert snap.DefaultEntry == booted
