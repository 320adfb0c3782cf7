"""parse.grubcfg: what the grub.cfg of real ostree hosts does with the grubenv.

The configs are reproduced from upstream (tests/fixtures/grub_configs.py names
each source); grub-script-check (GRUB's own parser, Debian grub-common) checks
that each one is valid GRUB script, so the evaluator is fed what GRUB accepts.
What GRUB 2.14 itself boots for these configs is checked with grub-emu in the
rig's tests (tests/test_grub_emu*.py on branch issue9-rig).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ostreewatch.parse import grubcfg
from ostreewatch.parse.grubcfg import evaluate
from tests.fixtures import grub_configs as cfgs

STATIC = cfgs.bootupd_static()
STATIC_GREENBOOT = cfgs.bootupd_static(greenboot=True)
GENERATED = cfgs.generated()
ENV_FILE = {"grubenv": ""}  # the grubenv exists (its variables are the env argument)


@pytest.mark.parametrize(
    "name,text",
    [
        ("static", STATIC),
        ("static-greenboot", STATIC_GREENBOOT),
        ("generated", GENERATED),
        ("generated-0", cfgs.generated(default="0")),
    ],
)
def test_fixtures_are_valid_grub_script(tmp_path: Path, name: str, text: str) -> None:
    f = tmp_path / f"{name}.cfg"
    f.write_text(text)
    p = subprocess.run(["grub-script-check", str(f)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    # And a broken one is refused, so the check above can fail.
    f.write_text(text + "\nif [ x ]; then\n")
    assert subprocess.run(["grub-script-check", str(f)], capture_output=True, timeout=30).returncode != 0


# --- bootupd's static config ---------------------------------------------------------


@pytest.mark.unit
def test_static_config_ignores_saved_and_next_entry() -> None:
    r = evaluate(STATIC, ENV_FILE, {"saved_entry": "ostree-1", "next_entry": "ostree-1"})
    assert r.default == "" and r.default_from == grubcfg.FROM_UNSET and not r.boot_once
    assert r.loads_env and r.blscfg
    assert not r.reads_saved_entry and not r.reads_next_entry and not r.greenboot
    assert r.unknown == ()


@pytest.mark.unit
def test_static_config_honours_a_default_stored_in_the_grubenv() -> None:
    # load_env loads every variable, `default` too: GRUB then boots it.
    r = evaluate(STATIC, ENV_FILE, {"default": "ostree-1"})
    assert (r.default, r.default_from) == ("ostree-1", grubcfg.FROM_ENV)
    # Without a grubenv file, nothing is loaded.
    assert evaluate(STATIC, {}, {"default": "ostree-1"}).default == ""


@pytest.mark.parametrize("file", ["user.cfg", "custom.cfg"])
@pytest.mark.unit
def test_static_config_with_an_admin_snippet_reading_saved_entry(file: str) -> None:
    files = dict(ENV_FILE, **{file: 'set default="${saved_entry}"\n'})
    r = evaluate(STATIC, files, {"saved_entry": "ostree-1"})
    assert (r.default, r.default_from) == ("ostree-1", grubcfg.FROM_SAVED)
    assert r.reads_saved_entry and not r.reads_next_entry
    # The snippet is only sourced when it exists (`if [ -f $prefix/custom.cfg ]`).
    assert evaluate(STATIC, ENV_FILE, {"saved_entry": "ostree-1"}).default == ""


@pytest.mark.unit
def test_static_config_with_a_fixed_default_in_custom_cfg() -> None:
    r = evaluate(STATIC, dict(ENV_FILE, **{"custom.cfg": "set default=ostree-2\n"}), {})
    assert (r.default, r.default_from) == ("ostree-2", grubcfg.FROM_LITERAL)


@pytest.mark.parametrize(
    "env,fired,default",
    [
        ({"boot_counter": "0", "boot_success": "0"}, True, "1"),
        ({"boot_counter": "-1", "boot_success": "0"}, True, "1"),
        ({"boot_counter": "2", "boot_success": "0"}, False, ""),  # counting down: decremented, default untouched
        ({"boot_counter": "0", "boot_success": "1"}, False, ""),  # a healthy boot was reported
        ({"boot_success": "0"}, False, ""),  # no counter: greenboot not armed
        ({}, False, ""),
    ],
)
@pytest.mark.unit
def test_greenboot_fallback(env: dict[str, str], fired: bool, default: str) -> None:
    r = evaluate(STATIC_GREENBOOT, ENV_FILE, env)
    assert r.greenboot  # the config has the logic, whatever the environment
    assert r.greenboot_fired == fired
    assert r.default == default
    assert r.default_from == (grubcfg.FROM_GREENBOOT if fired else grubcfg.FROM_UNSET)
    # Without greenboot's snippet the same environment changes nothing.
    plain = evaluate(STATIC, ENV_FILE, env)
    assert not plain.greenboot and not plain.greenboot_fired and plain.default == ""


# --- generated (grub2-mkconfig) configs ----------------------------------------------


@pytest.mark.unit
def test_generated_config_reads_next_then_saved_entry() -> None:
    r = evaluate(GENERATED, ENV_FILE, {"saved_entry": "ostree-1", "next_entry": "ostree-2"})
    assert (r.default, r.default_from, r.boot_once) == ("ostree-2", grubcfg.FROM_NEXT, True)
    assert r.reads_saved_entry and r.reads_next_entry and r.greenboot
    r = evaluate(GENERATED, ENV_FILE, {"saved_entry": "ostree-1"})
    assert (r.default, r.default_from, r.boot_once) == ("ostree-1", grubcfg.FROM_SAVED, False)
    r = evaluate(GENERATED, ENV_FILE, {})
    assert (r.default, r.default_from) == ("", grubcfg.FROM_UNSET)


@pytest.mark.unit
def test_generated_config_without_grubenv_reads_nothing() -> None:
    r = evaluate(GENERATED, {}, {"saved_entry": "ostree-1"})
    assert not r.loads_env and r.default == ""


@pytest.mark.unit
def test_generated_config_with_grub_default_0() -> None:
    # GRUB_DEFAULT=0: 00_header writes `set default="0"`; next_entry still wins.
    gen0 = cfgs.generated(default="0")
    r = evaluate(gen0, ENV_FILE, {"saved_entry": "ostree-1"})
    assert (r.default, r.default_from) == ("0", grubcfg.FROM_LITERAL)
    assert not r.reads_saved_entry and r.reads_next_entry
    assert evaluate(gen0, ENV_FILE, {"next_entry": "ostree-1"}).default == "ostree-1"


@pytest.mark.unit
def test_fallback_counting_overrides_saved_and_next_entry() -> None:
    # 08_fallback_counting runs after 00_header: its `set default=1` is the last word.
    r = evaluate(
        GENERATED,
        ENV_FILE,
        {"saved_entry": "ostree-2", "next_entry": "ostree-3", "boot_counter": "0", "boot_success": "0"},
    )
    assert (r.default, r.default_from, r.greenboot_fired) == ("1", grubcfg.FROM_GREENBOOT, True)


@pytest.mark.unit
def test_load_env_whitelist() -> None:
    cfg = 'load_env saved_entry\nset default="${saved_entry}"\nblscfg\n'
    r = evaluate(cfg, ENV_FILE, {"saved_entry": "a", "default": "b", "next_entry": "c"})
    assert (r.default, r.default_from) == ("a", grubcfg.FROM_SAVED)
    r = evaluate("load_env next_entry\nblscfg\n", ENV_FILE, {"default": "b"})
    assert r.default == ""  # `default` was not in the list


@pytest.mark.unit
def test_menuentries_before_blscfg_are_counted() -> None:
    cfg = "menuentry 'Rescue' {\n  linux /vmlinuz\n}\nset default=1\nblscfg\nmenuentry 'After' { true\n}\n"
    r = evaluate(cfg, {}, {})
    assert r.menuentries_before_blscfg == 1 and r.default == "1"


# --- conservative on what cannot be told ---------------------------------------------


@pytest.mark.parametrize(
    "snippet,why,cls",
    [
        ("while cmostest 1; do set default=2; done\n", "loop", grubcfg.UNKNOWN_LOOP),
        ("search --set=root x\nfor x in $root; do set default=$x; done\n", "loop", grubcfg.UNKNOWN_LOOP),
        ("if cmostest 1; then set default=2; fi\n", "cmostest", grubcfg.UNKNOWN_CONDITION),
        ('eval "set default=2"\n', "eval", grubcfg.UNKNOWN_COMMAND),
        ("search --no-floppy --set=default --label x\n", "search", grubcfg.UNKNOWN_COMMAND),
        ("if [ -d (hd0)/boot ]; then set default=2; fi\n", "(hd0)", grubcfg.UNKNOWN_CONDITION),
        ("function f { set default=$1; return; }\nf 2\n", "f", grubcfg.UNKNOWN_FUNCTION),
    ],
)
@pytest.mark.unit
def test_unknown_constructs_give_an_unknown_default(snippet: str, why: str, cls: str) -> None:
    """In a sourced file too (issue 19): never a guess, and the class is named."""
    r = evaluate(STATIC, dict(ENV_FILE, **{"custom.cfg": snippet}), {})
    assert r.default is None and r.default_from == grubcfg.FROM_UNKNOWN
    assert any(why in u for u in r.unknown), r.unknown
    assert r.unknown_classes == (cls,)


@pytest.mark.parametrize(
    "snippet,default",
    [
        ("for x in a b; do set default=$x; done\n", "b"),
        ("for x in 1 2 3; do if [ $x = 2 ]; then set default=$x; fi; done\n", "2"),
        ("function pick {\n  set default=$2\n}\npick ostree-1 ostree-2\n", "ostree-2"),
        ('function pick { set default="$1"; }\npick 3\n', "3"),
        ("n=0\nwhile [ $n != 3 ]; do n=$n$n; if [ $n = 00 ]; then n=3; fi; set default=$n; done\n", "3"),
        ('set default="${chosen}"\n', ""),
        ('set default="${pinned}"\n', "ostree-9"),
    ],
)
def test_loops_functions_and_variables_are_followed(snippet: str, default: str) -> None:
    r = evaluate(STATIC, dict(ENV_FILE, **{"custom.cfg": snippet}), {"pinned": "ostree-9"})
    assert (r.default, r.unknown) == (default, ())


@pytest.mark.unit
def test_unknown_conditions_that_do_not_touch_default_are_harmless() -> None:
    # grub-static-pre.cfg's RAID test and 30_uefi-firmware's platform test cannot be decided here.
    r = evaluate(STATIC, ENV_FILE, {"saved_entry": "x"})
    assert r.default == "" and r.unknown == ()


@pytest.mark.unit
def test_a_value_known_in_both_branches_stays_known() -> None:
    cfg = "if cmostest 1; then set default=2; else set default=2; fi\n"
    assert evaluate(cfg, {}, {}).default == "2"


@pytest.mark.unit
def test_sourcing_does_not_loop() -> None:
    files = {"user.cfg": "source $prefix/custom.cfg\n", "custom.cfg": "source $prefix/user.cfg\nset default=3\n"}
    r = evaluate("source $prefix/user.cfg\n", files, {})
    assert r.default == "3"


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("if[]\"'${}();\n\\ #=-anoset default")), max_size=300),
    env=st.dictionaries(
        st.sampled_from(["saved_entry", "next_entry", "boot_counter", "boot_success", "default"]),
        st.text(max_size=5),
        max_size=5,
    ),
)
@pytest.mark.unit
def test_never_raises(text: str, env: dict[str, str]) -> None:
    r = evaluate(text, {"grubenv": "", "user.cfg": text}, env)
    assert r.default is None or isinstance(r.default, str)
    assert r.default_from in (
        grubcfg.FROM_SAVED,
        grubcfg.FROM_NEXT,
        grubcfg.FROM_ENV,
        grubcfg.FROM_GREENBOOT,
        grubcfg.FROM_LITERAL,
        grubcfg.FROM_VARIABLE,
        grubcfg.FROM_UNSET,
        grubcfg.FROM_UNKNOWN,
    )


@pytest.mark.unit
def test_deep_nesting_and_huge_input() -> None:
    deep = "if [ a ]; then\n" * 5000 + "set default=1\n" + "fi\n" * 5000
    r = evaluate(deep, {}, {})
    assert r.default in ("1", None)
    many = "set x=1\n" * 200_000
    assert evaluate(many, {}, {}).default in ("", None)


# --- GRUB's menu lookup (grub-core/normal/menu.c get_entry_number; issue 19 class 1) -----------------

MENU = [("ostree-3", "Fedora 3"), ("ostree-2", "1 two"), ("ostree-1", "x>y")]


@pytest.mark.parametrize(
    "value,index",
    [
        ("1", 1),
        ("1abc", 1),  # trailing text after the number is ignored
        (" 2", 2),  # leading white space skipped
        ("0x2", 2),
        ("0x", 0),  # no hex digit: "unrecognized number", then no title or id matches
        ("010", 0),  # octal 8: out of range
        ("07", 0),
        ("02", 2),
        ("3", 0),  # out of range: entry 0
        ("-1", 0),  # no sign: not a number, no such title
        ("ostree-2", 1),
        ("1 two", 1),  # a title that starts with a digit is an index
        ("Fedora 3", 0),
        ("x>>y", 2),  # `>>` is a literal `>`
        ("ostree-2>sub", 1),  # `>` ends the name (a submenu path)
        ("4294967297", 1),  # (int) keeps the low 32 bits
        ("99999999999999999999999", 0),  # overflow
        ("", 0),
    ],
)
def test_menu_index_is_grubs(value: str, index: int) -> None:
    assert grubcfg.menu_index(value, MENU) == index


def test_another_environment_block_makes_what_it_may_set_unknown() -> None:
    """sid's 00_header: `load_env -f "${env_block}"` (a block elsewhere) may set anything it mentions."""
    cfg = (
        "load_env\n"
        'if [ "${env_block}" ] ; then\n  set env_block="(${root})${env_block}"\n  load_env -f "${env_block}"\nfi\n'
        'set default="${saved_entry}"\n'
    )
    r = evaluate(cfg, ENV_FILE, {"env_block": "/boot/other.env", "saved_entry": "a"})
    assert r.default is None and r.unknown_classes == (grubcfg.UNKNOWN_COMMAND,)
    assert evaluate(cfg, ENV_FILE, {"saved_entry": "a"}).default == "a"
    assert evaluate('load_env\nset default="${saved_entry}"\n', {}, {"saved_entry": "a"}).default == ""  # no file
