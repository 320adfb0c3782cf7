"""Real boots (issue 17): the daemon installed with `make install` in an OSTree host booted by QEMU.

Each chain is one disk image (tests/vm/build-image.sh: the cached sid tree, ostree
2026.x, GRUB 2.14, systemd, this checkout laid in as the spec lays it out) and a
sequence of boots; each test is one step and needs the steps before it
(tests/fixtures/vm.py). Under TCG a boot takes 2-7 minutes on this shared 2-core machine
(docs/vm-rig.md); the whole file 20-27.5 minutes here under load, about 15 on idle cores; the
figures are in BENCHMARKS.md "Real boot". Oracles in the guest: /proc/cmdline,
`ostree admin status --json`, findmnt, /run/ostree-booted, systemd's unit timestamps.

- static-grub chain (bootupd's static grub.cfg, saved_entry and next_entry never read):
  a first boot, an update staged in the guest and finalized at shutdown, a rollback
  with SetDefaultDeployment, SetNextEntry refused.
- generated-grub chain (grub2-mkconfig's 00_header: saved_entry, next_entry), composefs
  root: SetDefaultEntry followed by GRUB, a SetNextEntry one-shot then the default
  again, a UEFI (OVMF) boot.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.fixtures import grub_configs
from tests.fixtures.vm import BootChain, make_chain, vm_work  # noqa: F401  (vm_work: a fixture)
from tests.vm import rig

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1800)]

MANAGER = "org.ostreewatch1.Manager"

# --- guest scripts (bash; $OUT is the boot's record dir, helpers from tests/vm/guest/owvm-guest) ---

# An update: a new commit of the booted ref (the same tree, a new checksum) staged the way
# rpm-ostree and bootc stage one; ostree-finalize-staged writes it at shutdown. What the
# daemon publishes is polled while ostree works, until the staged deployment is published
# (ostree's own end, not a fixed time, says when to stop).
STAGE_UPDATE = r"""
unshare -m sh -c 'mount -o remount,rw /sysroot && ostree commit --repo=/ostree/repo --branch=debian/vm \
    --tree=ref=debian/vm --subject=update-B --add-metadata-string=version=B' > commit.txt 2> commit.err
poll_problems() {
    while :; do
        busctl --json=short get-property org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager Problems
        sleep 0.2
    done
}
poll_problems > problems-during-stage.jsonl 2>&1 &
poller=$!
rec stage.txt ostree admin deploy --stage debian/vm
for _ in $(seq 300); do
    staged="$(busctl get-property org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager StagedDeployment)"
    [ "$staged" != 's ""' ] && break
    sleep 0.2
done
kill $poller
rec ostree-status-staged.json ostree admin status --json
props props-staged.json
"""


def call(method: str, arg: str, out: str) -> str:
    """A guest line: METHOD(ARG) through dbus-send; reply or named error into OUT (text), exit code beside it."""
    return (
        f"rec {out} dbus-send --system --print-reply --dest=org.ostreewatch1 /org/ostreewatch1 "
        f"{MANAGER}.{method} string:{arg}\n"
    )


# --- oracles read from the records ------------------------------------------------------------------


def deployments(result: rig.BootResult, name: str = "ostree-status.json") -> list[dict[str, Any]]:
    """`ostree admin status --json` of the guest: its deployments, default first."""
    data = result.json(name)
    return list(data["deployments"])


def dep_id(d: dict[str, Any]) -> str:
    """The daemon's deployment id for an `ostree admin status --json` deployment."""
    return f"{d['stateroot']}-{d['checksum']}.{d['serial']}"


def the(deps: list[dict[str, Any]], flag: str) -> str:
    """The id of the one deployment with FLAG set (booted, staged, rollback...), "" for none."""
    ids = [dep_id(d) for d in deps if d.get(flag)]
    assert len(ids) <= 1, (flag, ids)
    return ids[0] if ids else ""


def entries(result: rig.BootResult) -> dict[str, str]:
    """The BLS entries on /boot, by id (file name without .conf), as the options line."""
    out: dict[str, str] = {}
    for line in result.text("entries.txt").splitlines():
        path, _, text = line.partition(":")
        if text.startswith("options "):
            out[path.rsplit("/", 1)[1].removesuffix(".conf")] = text.removeprefix("options ")
    return out


def ostree_karg(options: str) -> str:
    """The ostree= argument of a command line or an entry's options."""
    m = re.search(r"(?:^|\s)ostree=(\S+)", options)
    assert m, options
    return m.group(1)


def entry_of_cmdline(result: rig.BootResult) -> str:
    """The entry GRUB booted: the one whose ostree= is the one in /proc/cmdline."""
    want = ostree_karg(result.cmdline())
    ids = [i for i, opts in entries(result).items() if ostree_karg(opts) == want]
    assert len(ids) == 1, (want, entries(result))
    return ids[0]


def entry_of_deployment(props: dict[str, Any], deployment: str) -> str:
    """The id of the BootEntries entry the daemon says boots DEPLOYMENT."""
    ids = [e["id"] for e in props["BootEntries"] if e.get("deployment") == deployment]
    assert len(ids) == 1, (deployment, props["BootEntries"])
    return ids[0]


def journal(result: rig.BootResult, name: str = "journal-unit.json") -> list[dict[str, Any]]:
    """The daemon's journal records of the boot (or of the one before: journal-unit-prev.json)."""
    return [r for r in result.json_lines(name) if r.get("SYSLOG_IDENTIFIER") != "systemd"]


def problem_codes_seen(result: rig.BootResult, name: str) -> list[str]:
    """Every problem code seen in a poll of Problems (busctl get-property --json lines)."""
    codes = []
    for line in result.text(name).splitlines():
        if line.startswith("{"):
            codes += [p["code"] for p in rig.unwrap(json.loads(line))]
    return codes


def grubenv_vars(text: str) -> dict[str, str]:
    """The variables of a grubenv block."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def entry_targets(result: rig.BootResult) -> dict[str, str]:
    """Entry id -> the deployment id its ostree= leads to, as the guest resolved it (record.d/entry-targets.sh)."""
    out = {}
    for line in result.text("entry-targets.txt").splitlines():
        entry, _, target = line.partition(" ")
        m = re.fullmatch(r"/sysroot/ostree/deploy/([^/]+)/deploy/([0-9a-f]{64}\.\d+)", target)
        assert m, line
        out[entry] = f"{m.group(1)}-{m.group(2)}"
    return out


def default_by_grub(result: rig.BootResult, reads_saved_entry: bool) -> str:
    """The deployment GRUB boots by default (a one-shot next_entry aside).

    A grub.cfg that reads saved_entry (grub2-mkconfig's 00_header) boots the entry it
    names; unset, or on a config that never reads it (bootupd's static one), the first
    entry, which is ostree's first deployment. A saved_entry naming no entry is not
    followed here: no step of these chains leaves one, so it fails.
    """
    first = dep_id(deployments(result)[0])
    if not reads_saved_entry:
        return first
    saved = grubenv_vars(result.text("grubenv.txt")).get("saved_entry", "")
    if not saved:
        return first
    targets = entry_targets(result)
    assert saved in targets, (saved, targets)
    return targets[saved]


def assert_agrees_with_ostree(result: rig.BootResult, reads_saved_entry: bool = False) -> dict[str, Any]:
    """Booted, Default, Rollback, Staged and BootedEntry as ostree, GRUB and the kernel say; the properties.

    READS_SAVED_ENTRY: the image's grub.cfg follows grubenv's saved_entry (the generated chain).
    """
    props = result.props()
    deps = deployments(result)
    assert props["OstreeBooted"] is True
    assert props["BootedDeployment"] == the(deps, "booted")
    assert props["DefaultDeployment"] == default_by_grub(result, reads_saved_entry)
    assert props["RollbackDeployment"] == the(deps, "rollback")
    assert props["StagedDeployment"] == the(deps, "staged")
    assert props["BootedEntry"] == entry_of_cmdline(result)
    return props


SECCOMP_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')
# clone3 (x86_64 syscall 435): systemd's RestrictNamespaces= (the unit's and journald's) answers it
# ENOSYS by design, so that glibc falls back to clone(2), whose flags a filter can inspect.
CLONE3 = "435"
# SYSTEMD_LOG_SECCOMP=1 logs every unit's filter: the programs of the image's other filtered
# services (systemd's own: logind answered openat2 with its filter's EPERM on the logind chain;
# polkit.service, polkit-agent-helper@.service, fstrim.service) are neither the daemon nor a child of it.
OTHER_SERVICES = ("/usr/lib/systemd/", "/lib/systemd/", "/usr/lib/polkit-1/", "/usr/sbin/fstrim")
# A sandbox refusal as the daemon, a helper or systemd setting up the unit words it.
REFUSED = re.compile(r"Permission denied|Operation not permitted|Read-only file system|\bE(?:PERM|ACCES|ROFS)\b")
# What the daemon reads (docs/ARCHITECTURE.md: the sysroot, /boot, ostree's run files) and what
# it writes (the boot default, ostree's lock and deployments, its records and status file).
NEEDS_READ = ("/sysroot/ostree/deploy", "/sysroot/ostree/repo", "/boot/loader", "/boot/grub", "/run/ostree-booted")
NEEDS_WRITE = ("/boot", "/sysroot/ostree", "/var/lib/ostreewatch", "/run/ostreewatch")


def seccomp_records(result: rig.BootResult, name: str) -> list[dict[str, str]]:
    """The kernel's audit SECCOMP records (type 1326) of the boot, as field dicts (pid, comm, exe, syscall...)."""
    out = []
    for line in result.text(name).splitlines():
        if "type=1326" in line:
            out.append({k: v.strip('"') for k, v in SECCOMP_FIELD.findall(line.split("): ", 1)[-1])})
    return out


def reached(mountinfo: str, path: str) -> tuple[str, bool] | None:
    """What PATH reaches in a mount table: ("MAJ:MIN:root-relative path", read-only); None when no mount covers it."""
    best: tuple[int, str, bool] | None = None
    for line in mountinfo.splitlines():
        f = line.split()
        if len(f) < 6:
            continue
        point = f[4].replace("\\040", " ")
        covers = path == point or path.startswith(point.rstrip("/") + "/")
        if covers and (best is None or len(point) >= best[0]):  # the longest; among equals the last (on top)
            rest = path[len(point.rstrip("/")) :]
            best = (len(point), f"{f[2]}:{f[3].rstrip('/')}{rest}", "ro" in f[5].split(","))
    return None if best is None else best[1:]


def mount_refusals(host: str, daemon: str) -> list[str]:
    """Paths the daemon needs that its mount namespace hides, replaces or makes read-only, against PID 1's."""
    out = []
    for path in NEEDS_READ + NEEDS_WRITE:
        h, d = reached(host, path), reached(daemon, path)
        if h is None:
            continue
        if d is None or d[0] != h[0]:
            out.append(f"mount: {path} is {d} in the unit, {h} on the host")
        elif path in NEEDS_WRITE and d[1] and not h[1]:
            out.append(f"mount: {path} is read-only in the unit, read-write on the host")
    return out


def sandbox_refusals(result: rig.BootResult) -> list[str]:
    """What the unit's sandbox refused the daemon and its helpers this boot (tests/vm/guest/record.d/sandbox.sh).

    Seccomp: the unit's filter answers EPERM, silently unless loaded with the log flag (the
    image has systemd load every filter so, with audit=1); then every denial is an audit
    record. Every record of the boot counts but those of the other filtered services
    (OTHER_SERVICES): a process of the unit may be a short-lived child (pyinotify's
    `ldconfig -p`) that nothing else names; clone3's ENOSYS is left out, and at least one
    must be there: proof that the denials of this boot were logged. Mounts log nothing:
    every path the daemon reads or writes must reach the same file in its mount namespace
    as in PID 1's, writable where PID 1's is. And no EPERM, EACCES or EROFS in the unit's
    journal.
    """
    assert "errno" in result.text("sandbox-actions-logged.txt").split(), result.text("sandbox-actions-logged.txt")
    cmdline = result.cmdline().split()
    assert "audit=1" in cmdline and "sysctl.kernel.printk_ratelimit=0" in cmdline, cmdline  # tests/vm/build-image.sh
    found = []
    for phase in ("", "-after"):
        if not (result.dir / f"sandbox-unit{phase}.json").exists():
            continue  # no "after" records: the guest script did not return
        records = seccomp_records(result, f"sandbox-seccomp{phase}.txt")
        assert any(r.get("syscall") == CLONE3 for r in records), f"no seccomp record logged at all{phase}: {records}"
        found += [
            f"seccomp: {r.get('comm')} ({r.get('exe')}, pid {r.get('pid')}) syscall {r.get('syscall')}"
            for r in records
            if r.get("syscall") != CLONE3 and not r.get("exe", "").startswith(OTHER_SERVICES)
        ]
        daemon_mounts = result.text(f"sandbox-mountinfo-daemon{phase}.txt")
        # After the script the daemon may be stopped (a step's own business): no table, nothing to compare.
        assert daemon_mounts or phase, result.text("sandbox-mountinfo-daemon.txt.err")
        if daemon_mounts:
            found += mount_refusals(result.text(f"sandbox-mountinfo-host{phase}.txt"), daemon_mounts)
        unit = result.json_lines(f"sandbox-unit{phase}.json")
        found += [f"journal: {m}" for m in rig.journal_messages(unit) if REFUSED.search(m)]
    return sorted(set(found))


def assert_healthy_boot(result: rig.BootResult) -> None:
    """The unit active and ordered as it says, no failed unit, no error record, no sandbox refusal, no problem."""
    units = result.units()
    assert units["ostreewatch.service"]["ActiveState"] == "active", units["ostreewatch.service"]
    ready = rig.monotonic_us(units, "ostreewatch.service", "ActiveEnterTimestampMonotonic")
    started = rig.monotonic_us(units, "ostreewatch.service", "ExecMainStartTimestampMonotonic")
    remount = rig.monotonic_us(units, "ostree-remount.service", "ActiveEnterTimestampMonotonic")
    assert 0 < remount <= started <= ready, (remount, started, ready)
    # Read before what marks the boot good (here Debian's grub2-common.service, after
    # boot-complete.target, unsets recordfail) and before ostree-boot-complete.service looks for
    # the finalize-failure stamp: the unit's Before=. Nothing else waits for it (issue 21).
    complete = rig.monotonic_us(units, "boot-complete.target", "ActiveEnterTimestampMonotonic")
    assert 0 < ready <= complete, (ready, complete)
    stamp_check = rig.monotonic_us(units, "ostree-boot-complete.service", "ConditionTimestampMonotonic")
    assert stamp_check == 0 or ready <= stamp_check, (ready, stamp_check)
    assert result.text("failed.txt").strip() == "", result.text("failed.txt")
    assert result.text("system-state.txt").strip() == "running", result.text("system-state.txt")
    errors = [r for r in journal(result) if int(r.get("PRIORITY", 6)) <= 3]
    assert errors == [], rig.journal_messages(errors)
    cycles = [m for m in rig.journal_messages(result.json_lines("journal-warnings.json")) if "ordering cycle" in m]
    assert cycles == []
    # The hardened unit's sandbox got in the daemon's way nowhere (scenario a).
    assert sandbox_refusals(result) == []
    assert result.props()["Problems"] == []
    assert result.text("version.txt").strip() == f"ostreewatch {rig.package_version()}"
    assert_status_file(result)


def assert_status_file(result: rig.BootResult) -> None:
    """/run/ostreewatch/status.json (issue 22): mode 0644, read by uid 65534, what the daemon answers.

    The guest reads it between two `ostreewatch status --json` answers (record.d/status-file.sh)
    and tries again while a change lands in between.
    """
    assert result.text("status-file.mode").strip() == "644", result.text("status-file.mode")
    assert result.rc("status-file.json") == 0, result.text("status-file.json.err")
    cli, again = result.json("status-file-cli.json"), result.json("status-file-cli2.json")
    assert cli == again, f"the state never held still for 10 tries: {result.text('status-file.tries')}"
    assert result.json("status-file.json") == cli
    assert cli["Generation"] >= 1 and cli["BootedDeployment"] == result.props()["BootedDeployment"]


# --- the static-grub chain ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_chain(vm_work) -> BootChain:  # noqa: F811
    """bootupd's static grub.cfg (Fedora CoreOS, RHCOS, bootc): the newest entry boots."""
    return make_chain(rig.ImageOptions(grub_configs.rig_static()), vm_work, "static")


def assert_last_boot(props: dict[str, Any], outcome: str, history: int) -> dict[str, Any]:
    """LastBoot (issue 18) as the daemon judged this real boot: OUTCOME, about the booted deployment, HISTORY boots."""
    last = props["LastBoot"]
    assert last["outcome"] == outcome, last
    assert last["booted_deployment"] == props["BootedDeployment"] and last["reason"], last
    assert last["finalize_failed"] is False, last
    assert len(props["BootHistory"]) == history and props["BootHistory"][0] == last
    return dict(last)


def test_static_a_first_boot(static_chain: BootChain) -> None:
    """First boot: published state right against ostree and /proc/cmdline; then an update is staged."""
    r = static_chain.boot("static-a", STAGE_UPDATE)
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r)
    assert props["RollbackDeployment"] == "" and props["StagedDeployment"] == ""
    assert_last_boot(props, "first-record", 1)
    assert props["Bootloader"] == "grub2"  # /boot/grub/grub.cfg, whatever ostree's sysroot.bootloader says
    started = [m for m in journal(r) if m.get("MESSAGE_ID") == "f3d48fa3fb0d4738b5bb70c685396c1f"]
    assert len(started) == 1 and props["BootedDeployment"] in json.dumps(started[0])
    # The staged update, as the guest left it before shutting down.
    assert r.rc("stage.txt") == 0, r.text("stage.txt.err")
    staged = r.props("props-staged.json")
    assert staged["StagedDeployment"] == the(deployments(r, "ostree-status-staged.json"), "staged") != ""


def test_static_a_nothing_false_while_ostree_stages(static_chain: BootChain) -> None:
    """While `ostree admin deploy --stage` works, Problems never names a problem that vanishes after."""
    r = static_chain.need("static-a")
    assert problem_codes_seen(r, "problems-during-stage.jsonl") == []


def test_static_b_staged_update_finalized(static_chain: BootChain) -> None:
    """ostree-finalize-staged wrote the update at shutdown: B boots, A is the rollback; then SetDefaultDeployment(A)."""
    a = static_chain.need("static-a")
    a_id = a.props()["BootedDeployment"]
    b_id = a.props("props-staged.json")["StagedDeployment"]
    script = call("SetDefaultDeployment", a_id, "set-default.txt")
    script += call("SetNextEntry", "ostree-1", "set-next.txt")
    script += "rec ostree-status-after.json ostree admin status --json\n"
    script += "rec grubenv-after.txt cat /boot/grub/grubenv\n"
    r = static_chain.boot("static-b", script)
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r)
    assert props["BootedDeployment"] == b_id
    assert props["RollbackDeployment"] == a_id
    # The staged update was finalized at shutdown and booted: what the previous boot expected.
    last = assert_last_boot(props, "staged", 2)
    assert last["expected_deployment"] == b_id and last["previous_boot_id"] == a.props()["LastBoot"]["boot_id"]


def test_static_b_set_default_deployment_reorders(static_chain: BootChain) -> None:
    """SetDefaultDeployment(A) in the booted host: ostree's order changes, the daemon publishes it."""
    r = static_chain.need("static-b")
    a_id = static_chain.need("static-a").props()["BootedDeployment"]
    # The rollback: SetDefaultDeployment reorders the deployments (what GRUB's static config follows).
    assert r.rc("set-default.txt") == 0, r.text("set-default.txt.err")
    assert dep_id(deployments(r, "ostree-status-after.json")[0]) == a_id
    after = r.props("props-after.json")
    assert after["DefaultDeployment"] == a_id


def test_static_d_set_next_entry_refused(static_chain: BootChain) -> None:
    """SetNextEntry on a static grub.cfg: the named error, nothing written (GRUB would not read it)."""
    r = static_chain.need("static-b")
    assert r.rc("set-next.txt") != 0
    assert "org.ostreewatch1.Error.NotSupported" in r.text("set-next.txt.err"), r.text("set-next.txt.err")
    assert r.rc("grubenv-after.txt") == 0 and "next_entry" not in r.text("grubenv-after.txt")


def test_static_b_shutdown_that_finalized_was_quiet(static_chain: BootChain) -> None:
    """The previous boot's records (persistent journal): no problem and no warning while finalizing at shutdown."""
    r = static_chain.need("static-b")
    prev = journal(r, "journal-unit-prev.json")
    assert prev, "no records of the previous boot"
    assert [m for m in prev if int(m.get("PRIORITY", 6)) <= 4] == []
    assert [m for m in prev if m.get("MESSAGE_ID") == "9bfbe0e2a307441eaf788b4dc8daa70c"] == []


def test_static_c_rollback_booted(static_chain: BootChain) -> None:
    """After SetDefaultDeployment(A) and a reboot, A is booted; the refused SetNextEntry changed nothing."""
    a_id = static_chain.need("static-a").props()["BootedDeployment"]
    r = static_chain.boot("static-c")
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r)
    assert props["BootedDeployment"] == a_id == props["DefaultDeployment"]
    # SetDefaultDeployment(A) was the expectation the previous boot left: A booted as expected.
    assert assert_last_boot(props, "default", 3)["expected_deployment"] == a_id


# --- the generated-grub chain ------------------------------------------------------------------------

# ENTRY_OF DEPLOYMENT: the entry id the daemon publishes for a deployment (in the guest).
ENTRY_OF = r"""
entry_of() {
    busctl --json=short get-property org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager BootEntries |
        python3 -c 'import json, sys
print(*[e["id"]["data"] for e in json.load(sys.stdin)["data"] if e["deployment"]["data"] == sys.argv[1]])' "$1"
}
"""


def set_entry_script(method: str, deployment: str, out: str) -> str:
    """A guest script: METHOD(the entry of DEPLOYMENT), the entry id into OUT.id, the grubenv after into OUT.grubenv."""
    return (
        ENTRY_OF
        + f'entry="$(entry_of {deployment})"\necho "$entry" > {out}.id\n'
        + f"rec {out} dbus-send --system --print-reply --dest=org.ostreewatch1 /org/ostreewatch1 "
        + f'{MANAGER}.{method} "string:$entry"\n'
        + f"rec {out}.grubenv cat /boot/grub/grubenv\n"
    )


@pytest.fixture(scope="module")
def generated_chain(vm_work) -> BootChain:  # noqa: F811
    """grub2-mkconfig's config (reads saved_entry, next_entry), a composefs root, two deployments from the start."""
    options = rig.ImageOptions(grub_configs.rig_generated(), kargs=("ostree.prepare-root.composefs=1",), deployments=2)
    return make_chain(options, vm_work, "generated")


def test_generated_e_composefs_first_boot(generated_chain: BootChain) -> None:
    """composefs root from a real initramfs; state right; SetDefaultEntry(the rollback's entry) writes saved_entry."""
    first = generated_chain.image  # the script needs the rollback's id: read it in the guest
    assert first.options.deployments == 2
    script = ENTRY_OF + (
        'rollback="$(busctl get-property org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager '
        "RollbackDeployment | cut -d'\"' -f2)\"\n"
    )
    script += set_entry_script("SetDefaultEntry", "$rollback", "set-default-entry")
    r = generated_chain.boot("gen-a", script)
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r, reads_saved_entry=True)
    assert props["RollbackDeployment"] != ""
    assert_last_boot(props, "first-record", 1)
    root = rig.unwrap(r.json("findmnt.json"))["filesystems"][0]
    assert (root["target"], root["fstype"]) == ("/", "overlay"), root
    assert "composefs" in root["source"] or "composefs" in root["options"], root
    assert props["BootedRoot"]["composefs"] is True
    assert r.cmdline().split().count("ostree.prepare-root.composefs=1") == 1
    assert b"composefs" in __import__("base64").b64decode(r.text("ostree-booted.b64"))
    assert props["DefaultEntrySource"] == "saved_entry" or props["DefaultEntrySource"] == "first-entry"
    # SetDefaultEntry on a grub.cfg that reads saved_entry: saved_entry names the rollback's entry.
    assert r.rc("set-default-entry") == 0, r.text("set-default-entry.err")
    entry = r.text("set-default-entry.id").strip()
    assert entry == entry_of_deployment(props, props["RollbackDeployment"])
    assert grubenv_vars(r.text("set-default-entry.grubenv")).get("saved_entry") == entry
    after = r.props("props-after.json")
    assert (after["DefaultEntry"], after["DefaultEntrySource"]) == (entry, "saved_entry")


def test_generated_e_set_default_entry_followed(generated_chain: BootChain) -> None:
    """GRUB boots the entry SetDefaultEntry chose; then SetNextEntry(the other one) writes next_entry."""
    a = generated_chain.need("gen-a")
    chosen = a.props()["RollbackDeployment"]
    other = a.props()["BootedDeployment"]
    r = generated_chain.boot("gen-b", set_entry_script("SetNextEntry", other, "set-next-entry"))
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r, reads_saved_entry=True)
    # saved_entry makes GRUB's default another deployment than ostree's first: the oracle follows it.
    assert props["DefaultDeployment"] == chosen != dep_id(deployments(r)[0])
    assert props["BootedDeployment"] == chosen == the(deployments(r), "booted")
    assert props["BootedEntry"] == entry_of_cmdline(r) == a.text("set-default-entry.id").strip()
    assert assert_last_boot(props, "default", 2)["expected_entry"] == props["BootedEntry"]
    assert r.rc("set-next-entry") == 0, r.text("set-next-entry.err")
    env = grubenv_vars(r.text("set-next-entry.grubenv"))
    assert env.get("next_entry") == r.text("set-next-entry.id").strip() != ""
    assert r.props("props-after.json")["NextEntry"] == env["next_entry"]


def test_generated_g_ovmf_one_shot_booted(generated_chain: BootChain) -> None:
    """UEFI (OVMF + GRUB EFI): the one-shot entry boots once; EFI facts; SetNextEntry stays on grubenv there."""
    a, b = generated_chain.need("gen-a"), generated_chain.need("gen-b")
    one_shot = a.props()["BootedDeployment"]
    script = set_entry_script("SetNextEntry", one_shot, "set-next-entry")
    script += "rec efivars-after.txt ls /sys/firmware/efi/efivars\n"
    script += call("SetNextEntry", "", "clear-next.txt")
    r = generated_chain.boot("gen-c", script, firmware="ovmf")
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r, reads_saved_entry=True)
    assert props["BootedDeployment"] == one_shot
    assert props["BootedEntry"] == entry_of_cmdline(r) == b.text("set-next-entry.id").strip()
    # GRUB's 00_header cleared next_entry as it booted it (save_env), and the default is back.
    assert (
        "next_entry" not in grubenv_vars(r.text("grubenv.txt"))
        or grubenv_vars(r.text("grubenv.txt"))["next_entry"] == ""
    )
    assert props["NextEntry"] == ""
    # The one-shot the previous boot left pending is what booted.
    assert assert_last_boot(props, "next-entry", 3)["expected_entry"] == props["BootedEntry"]
    # EFI: efivarfs is there, GRUB sets no systemd-boot Loader* variables.
    efivars = r.text("efivars.txt").split()
    assert any(v.startswith("BootCurrent-") for v in efivars), efivars
    assert [v for v in efivars if v.startswith("Loader")] == []
    # SetNextEntry on GRUB under UEFI writes grubenv's next_entry, no EFI variable.
    assert r.rc("set-next-entry") == 0, r.text("set-next-entry.err")
    assert grubenv_vars(r.text("set-next-entry.grubenv")).get("next_entry") == r.text("set-next-entry.id").strip()
    assert [v for v in r.text("efivars-after.txt").split() if v.startswith("LoaderEntryOneShot")] == []
    assert r.rc("clear-next.txt") == 0, r.text("clear-next.txt.err")


def test_generated_d_default_again_after_the_one_shot(generated_chain: BootChain) -> None:
    """The boot after the one-shot: saved_entry's entry again (BIOS)."""
    a = generated_chain.need("gen-a")
    r = generated_chain.boot("gen-d")
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r, reads_saved_entry=True)
    assert props["BootedDeployment"] == a.props()["RollbackDeployment"]
    assert props["BootedEntry"] == entry_of_cmdline(r) == a.text("set-default-entry.id").strip()
    assert props["DefaultEntrySource"] == "saved_entry"
    assert_last_boot(props, "default", 4)
