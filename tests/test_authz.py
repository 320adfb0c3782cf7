"""ostreewatch.authz: the one authorization decision, the one table of polkit actions, the one refusal.

Calls go over a real dbus-daemon (tests/fixtures/bus.py) with a relaxed policy,
so that the daemon's own decision is what refuses uid 65534 (setpriv), not the bus.
"""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from ostreewatch import authz, cli, errors, model, service
from tests.fixtures.published import GDBUS_CALL, SNAP1, M, run, setpriv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY = os.path.join(REPO, "packaging", "org.ostreewatch1.policy")
NOBODY = setpriv(65534)
ROOT = model.Caller(uid=0, pid=1, bus_name=":1.1")
USER = model.Caller(uid=1000, pid=2, bus_name=":1.2")


def test_every_method_has_an_action_and_every_action_is_declared() -> None:
    assert set(authz.ACTIONS) == set(service.HANDLERS)
    declared = {a.get("id") for a in ET.parse(POLICY).getroot().iter("action")}
    assert set(authz.ACTIONS.values()) == declared


def test_the_cli_has_no_list_of_actions_of_its_own() -> None:
    with open(os.path.join(REPO, "ostreewatch", "cli.py")) as f:
        source = f.read()
    assert "org.ostreewatch1.set-default" not in source and "org.ostreewatch1.reload" not in source
    assert '"reload"' not in source  # there is no reload command


def test_authorize() -> None:
    async def said(answer: str | None) -> authz.AskPolkit:
        async def ask(action: str, details: dict[str, str]) -> str | None:
            assert action == authz.ACTION_SET_DEFAULT and details == {"entry": "e"}
            return answer

        return ask

    async def main() -> None:
        assert await authz.authorize(ROOT, "SetNextEntry", {"entry": "e"}, None) == "uid 0"
        assert await authz.authorize(USER, "SetNextEntry", {"entry": "e"}, await said(None)) == "polkit"
        with pytest.raises(errors.NotAuthorized) as refused:
            await authz.authorize(USER, "SetNextEntry", {"entry": "e"}, await said("polkit said no"))
        assert str(refused.value) == (
            "SetNextEntry needs root or the polkit action org.ostreewatch1.set-default"
            " (caller uid 1000: polkit said no)"
        )
        with pytest.raises(errors.NotAuthorized, match="no polkit authority to ask"):
            await authz.authorize(USER, "Reload", {}, None)
        with pytest.raises(errors.NotAuthorized, match="the bus could not say who called"):
            await authz.authorize(model.Caller(), "Reload", {}, await said(None))

    asyncio.run(main())


def test_the_refusal_is_recognized_by_class_not_text() -> None:
    refusal = errors.NotAuthorized.refusal("Reload", authz.ACTION_RELOAD, 65534, "polkit said no")
    assert isinstance(refusal, errors.AccessDenied) and refusal.dbus_name == errors.AccessDenied.dbus_name
    name = errors.AccessDenied.dbus_name
    got = errors.from_dbus(name, str(refusal))
    assert type(got) is errors.NotAuthorized
    # dbus-daemon's own refusal (its policy) is an AccessDenied, not the daemon's refusal
    policy = errors.from_dbus(name, 'Rejected send message, 2 matched rules; type="method_call", sender=":1.9"')
    assert type(policy) is errors.AccessDenied
    # a text that merely contains the words is not the sentence
    assert type(errors.from_dbus(name, "someone said it needs root or the polkit action x")) is errors.AccessDenied
    assert cli.bus_error_sentence(got, "set-next", "system") == str(refusal)
    assert cli.bus_error_sentence(policy, "set-next", "system") == (
        "needs root or the polkit action org.ostreewatch1.set-default (--debug shows the bus's answer)"
    )


class Hooks:
    """The Manager's hooks: Reload asks its gate unless told to forget."""

    def __init__(self) -> None:
        self.forget = False
        self.reloads = 0

    async def reload(self, gate: authz.Gate) -> int:
        if not self.forget:
            await gate.check({})
        self.reloads += 1
        return 7


def test_the_manager_asks_the_gate_of_every_call(make_bus: Any) -> None:
    bus = make_bus(relaxed_policy=True)
    hooks = Hooks()

    async def main() -> None:
        manager = service.Manager(SNAP1, 7, "9.9.9", reload=hooks.reload)
        conn = await service.connect(bus.address)
        try:
            manager.attach(conn)
            assert await service.own_name(conn)
            env = bus.env()
            rc, out, err = await run([*GDBUS_CALL, M[2] + ".Reload"], env)
            assert rc == 0 and "7" in out, err
            rc, out, err = await run(NOBODY + [*GDBUS_CALL, M[2] + ".Reload"], env)
            assert rc != 0 and "org.freedesktop.DBus.Error.AccessDenied" in err, err
            assert "Reload needs root or the polkit action org.ostreewatch1.reload (caller uid 65534" in err, err
            # a handler that never asks its gate gets no answer through: a named internal error
            hooks.forget = True
            rc, out, err = await run(NOBODY + [*GDBUS_CALL, M[2] + ".Reload"], env)
            assert rc != 0 and "org.ostreewatch1.Error.Failed" in err and "internal error in Reload" in err, err
        finally:
            service.close_bus(conn)

    asyncio.run(main())
    assert hooks.reloads == 2
