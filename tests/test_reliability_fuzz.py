"""Reliability: every parser fuzzed with hypothesis; each may raise only its own ParseError subclass.

CI runs a fixed seed and a bounded number of examples per parser. A longer run for developers:

    OSTREEWATCH_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_reliability_fuzz.py -q --timeout 0

(OSTREEWATCH_FUZZ_SEED=N picks another seed.) The parser modules' own hypothesis tests check
properties of valid input; these check that hostile input never escapes the error hierarchy.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from ostreewatch import errors
from ostreewatch.parse import bls, cmdline, grubenv, gvariant, loaderconf, mountinfo, origin, osrelease, vercmp

EXAMPLES = int(os.environ.get("OSTREEWATCH_FUZZ_EXAMPLES", "150"))
SEED = int(os.environ.get("OSTREEWATCH_FUZZ_SEED", "20261127"))

fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Real-looking samples that mutations start from: bugs hide next to valid input.
BLS_SAMPLE = (
    b"title Red Hat Enterprise Linux CoreOS 410.84 (Ootpa) (ostree:0)\nversion 2\n"
    b"options random.trust_cpu=on console=tty0 ostree=/ostree/boot.0/rhcos/838c/0 rw\n"
    b"linux /ostree/rhcos-838c/vmlinuz-4.18.0\ninitrd /ostree/rhcos-838c/initramfs.img\n"
)
MOUNTINFO_SAMPLE = (
    b"102 1 252:4 /ostree/deploy/rhcos/deploy/b1df.0 / rw,relatime shared:1 - xfs /dev/vda4 rw\n"
    b"104 102 252:4 /ostree/deploy/rhcos/deploy/b1df.0/usr /usr ro,relatime shared:3 - xfs "
    b"/dev/vda4 rw\n"
    b"133 102 0:5 / /var/with\\040space rw master:4 propagate_from:2 - tmpfs tmpfs rw\n"
)
GRUBENV_SAMPLE = grubenv.create_grubenv() if hasattr(grubenv, "create_grubenv") else b""
LOADER_SAMPLE = "# comment\ntimeout 3\ndefault ostree-*\nconsole-mode keep\n"
CMDLINE_SAMPLE = 'BOOT_IMAGE=(hd0,gpt3)/vmlinuz root=UUID=0a0d rw "quoted arg=a b" ostree=/ostree/boot.1/fedora/abc/0\n'
ORIGIN_SAMPLE = "[origin]\nrefspec=fedora:fedora/x86_64/coreos/stable\n\n[libostree-transient]\npinned=true\n"
OSRELEASE_SAMPLE = (
    'NAME="Fedora Linux"\nVERSION="39.20231101.3.0 (CoreOS)"\nID=fedora\nPRETTY_NAME="Fedora CoreOS 39"\n'
)


def mutated(sample: bytes) -> st.SearchStrategy[bytes]:
    """The sample with a random slice replaced by random bytes, or cut, or repeated."""
    n = len(sample)

    @st.composite
    def build(draw: Any) -> bytes:
        a = draw(st.integers(0, n))
        b = draw(st.integers(a, n))
        junk = draw(st.binary(max_size=64))
        reps = draw(st.integers(1, 3))
        return (sample[:a] + junk + sample[b:]) * reps

    return build()


def any_bytes(sample: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=2048), mutated(sample))


def any_text(sample: str) -> st.SearchStrategy[str]:
    # surrogates too: a str read with errors="surrogateescape" can hold them
    return st.one_of(
        st.text(max_size=1024),
        mutated(sample.encode()).map(lambda b: b.decode("utf-8", "surrogateescape")),
        st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=256),
    )


def only(err: type[errors.ParseError], fn: Callable[..., Any], *args: Any) -> Any:
    """Call fn; its own error type is fine, anything else fails the test (with the input)."""
    try:
        return fn(*args)
    except err:
        return None


@seed(SEED)
@fuzz_settings
@given(
    name=st.one_of(
        st.text(max_size=80),
        st.just("ostree-1-rhcos.conf"),
        st.from_regex(r"[a-z0-9]{1,8}\+[0-9]{1,25}(-[0-9]{1,25})?\.conf", fullmatch=True),
    ),
    data=any_bytes(BLS_SAMPLE),
)
def test_bls(name: str, data: bytes) -> None:
    entry = only(errors.BlsError, bls.parse_entry, name, data)
    id_, left, done = bls.split_boot_counting(name)
    assert isinstance(id_, str)
    if entry is not None:
        # whatever parsed must also sort (sorting compares versions, sort keys, names)
        other = bls.parse_entry("ostree-1-x.conf", BLS_SAMPLE)
        assert len(bls.sort_entries([entry, other, entry])) == 3


@seed(SEED)
@fuzz_settings
@given(data=any_bytes(MOUNTINFO_SAMPLE), filtered=st.booleans())
def test_mountinfo(data: bytes, filtered: bool) -> None:
    # bad lines come back as errors, never raised
    mounts, errs = mountinfo.parse_mountinfo(data, ("/", "/usr", "/var with space") if filtered else None)
    assert all(isinstance(e, errors.MountinfoError) for e in errs)
    for m in mounts:
        assert isinstance(m.mount_point, str)


@seed(SEED)
@fuzz_settings
@given(
    data=st.one_of(any_bytes(GRUBENV_SAMPLE), mutated(GRUBENV_SAMPLE)),
    name=st.text(max_size=40),
    value=st.text(max_size=300),
)
def test_grubenv(data: bytes, name: str, value: str) -> None:
    only(errors.GrubenvError, grubenv.parse_grubenv, data)
    out = only(errors.GrubenvError, grubenv.update_grubenv, data, {name: value})
    if out is not None:
        assert len(out) == len(data)  # a write keeps the block size
        only(errors.GrubenvError, grubenv.parse_grubenv, out)


@seed(SEED)
@fuzz_settings
@given(
    text=any_text(LOADER_SAMPLE),
    value=st.one_of(st.none(), st.text(max_size=80)),
    files=st.lists(st.text(max_size=40), max_size=8),
)
def test_loader_conf(text: str, value: Any, files: list) -> None:
    only(errors.LoaderConfError, loaderconf.parse_loader_conf, text)
    new = only(errors.LoaderConfError, loaderconf.set_default, text, value)
    if new is not None:
        conf = loaderconf.parse_loader_conf(new)
        assert (conf.default or None) == (value or None)
    only(errors.LoaderConfError, loaderconf.match_default, value or "*", files)


@seed(SEED)
@fuzz_settings
@given(text=any_text(CMDLINE_SAMPLE))
def test_cmdline(text: str) -> None:
    only(errors.CmdlineError, cmdline.split_cmdline, text)
    only(errors.CmdlineError, cmdline.get_arg, text, "ostree")


@seed(SEED)
@fuzz_settings
@given(text=any_text(ORIGIN_SAMPLE))
def test_origin(text: str) -> None:
    only(errors.OriginError, origin.parse_origin, text)


@seed(SEED)
@fuzz_settings
@given(text=any_text(OSRELEASE_SAMPLE))
def test_os_release(text: str) -> None:
    only(errors.OsReleaseError, osrelease.parse_os_release, text)


@seed(SEED)
@fuzz_settings
@given(
    data=st.binary(max_size=512),
    type_string=st.one_of(
        st.sampled_from(["a{sv}", "(tt)", "as", "a{sa{sv}}", "(sa(sv))", "ay", "v", "mv", "(uuuu)", "aa{sv}"]),
        st.text(alphabet="abdhinoqstuvxgy(){}am", max_size=12),
    ),
)
def test_gvariant(data: bytes, type_string: str) -> None:
    only(errors.GVariantError, gvariant.parse_variant, data, type_string)
    only(errors.GVariantError, gvariant.parse_ostree_booted, data)
    only(errors.GVariantError, gvariant.parse_staged_deployment, data)


@seed(SEED)
@fuzz_settings
@given(a=st.one_of(st.none(), st.text(max_size=40)), b=st.one_of(st.none(), st.text(max_size=40)))
def test_vercmp(a: Any, b: Any) -> None:
    x, y = vercmp.strverscmp_improved(a, b), vercmp.strverscmp_improved(b, a)
    assert (x > 0) - (x < 0) == -((y > 0) - (y < 0))
    assert vercmp.strverscmp_improved(a, a) == 0


PRINTABLE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="\\"), max_size=60
)


def _printable(text: str) -> bool:
    return all(0x20 <= ord(c) <= 0x7E for c in text)


def listed_variables(listing: str) -> dict[str, str]:
    """`grub-editenv FILE list` as {name: value}. GRUB prints NAME=VALUE per variable, and a name
    may begin with newlines (an empty line before a variable is part of its name, for GRUB as for
    parse_grubenv): a line without "=" is the start of the next name, not a line to drop."""
    out: dict[str, str] = {}
    pending = ""
    for line in listing.split("\n")[:-1]:
        if "=" not in line:
            pending += line + "\n"
            continue
        name, value = line.split("=", 1)
        out[pending + name] = value
        pending = ""
    return out


@seed(SEED)
@settings(
    max_examples=max(20, EXAMPLES // 5),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(
    data=mutated(GRUBENV_SAMPLE.replace(b"#" * 40, b"saved_entry=ostree-1\nboot_success=1\n" + b"#" * 3, 1)),
    name=st.sampled_from(["saved_entry", "next_entry", "boot_success", "kernelopts"]),
    value=PRINTABLE,
)
def test_grubenv_against_grub_editenv(data: bytes, name: str, value: str, tmp_path_factory: Any) -> None:
    """grub-editenv is the oracle: what it lists the parser reads; what it writes update_grubenv writes."""
    import subprocess

    path = tmp_path_factory.mktemp("genv") / "grubenv"
    path.write_bytes(data)
    listed = subprocess.run(["grub-editenv", str(path), "list"], capture_output=True)
    ours = only(errors.GrubenvError, grubenv.parse_grubenv, data)
    if listed.returncode == 0 and ours is not None:
        theirs = listed_variables(listed.stdout.decode("latin-1"))
        for k, v in ours.items():
            if _printable(k) and _printable(v):
                assert theirs.get(k) == v, (k, v, theirs)
        text = data.decode("latin-1")
        for k, v in theirs.items():
            # Only a name at the start of a line of the block (not after an escaping backslash).
            if _printable(k) and _printable(v) and re.search(r"(?<!\\)\n" + re.escape(k) + "=", text):
                assert ours.get(k) == v, (k, v, ours)
    wrote = subprocess.run(["grub-editenv", str(path), "set", f"{name}={value}"], capture_output=True)
    mine = only(errors.GrubenvError, grubenv.update_grubenv, data, {name: value})
    if wrote.returncode == 0:
        assert mine == path.read_bytes()
    else:
        assert mine is None, f"grub-editenv refused ({wrote.stderr!r}) but update_grubenv wrote"
