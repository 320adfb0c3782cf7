"""Who may call the Manager's methods: the one decision (uid 0, or polkit's CheckAuthorization).

As systemd-hostnamed and logind do: uid 0 may; anyone else only when polkit
says yes for the method's action. The service builds a Gate for every method
call (with an AskPolkit that asks polkitd over D-Bus for the caller's unique
name); whoever handles the call asks the gate once its arguments are
validated, so a polkit rule can trust the details, and the service refuses
to answer a call whose handler never asked. Standard library and errors only.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Callable

from . import errors, model

ACTION_SET_DEFAULT = "org.ostreewatch1.set-default"
ACTION_RELOAD = "org.ostreewatch1.reload"

# The one table of polkit actions: method -> action (units/org.ostreewatch1.policy declares them).
ACTIONS: dict[str, str] = {
    "SetDefaultEntry": ACTION_SET_DEFAULT,
    "SetNextEntry": ACTION_SET_DEFAULT,
    "SetDefaultDeployment": ACTION_SET_DEFAULT,
    "Reload": ACTION_RELOAD,
}

# Asks polkit whether the caller may do ACTION with DETAILS: None when it may, else why not.
AskPolkit = Callable[[str, dict[str, str]], Awaitable["str | None"]]


async def authorize(caller: model.Caller, method: str, details: dict[str, str], ask: AskPolkit | None) -> str:
    """How the caller was granted METHOD ("uid 0" or "polkit"); errors.NotAuthorized when not."""
    action = ACTIONS[method]
    if caller.uid == 0:
        return "uid 0"
    if caller.uid < 0 or not caller.bus_name.startswith(":"):
        why: str | None = "the bus could not say who called"
    elif ask is None:
        why = "no polkit authority to ask"
    else:
        why = await ask(action, details)
    if why is not None:
        raise errors.NotAuthorized.refusal(method, action, caller.uid, why)
    return "polkit"


class Gate:
    """One method call's authorization: built by the service for every call, asked once by its handler."""

    def __init__(self, caller: model.Caller, method: str, ask: AskPolkit | None = None) -> None:
        if method not in ACTIONS:
            raise KeyError(f"no polkit action for {method!r}")
        self.caller = caller
        self.method = method
        self._ask = ask
        self.granted_by: str | None = None  # "uid 0" or "polkit" once granted
        self.asked = False

    async def check(self, details: dict[str, str]) -> str:
        """Authorize the call with DETAILS (shown to polkit rules); how it was granted, or NotAuthorized."""
        self.asked = True
        self.granted_by = await authorize(self.caller, self.method, details, self._ask)
        return self.granted_by


def gate_for(who: Gate | model.Caller, method: str) -> Gate:
    """WHO as a Gate for METHOD: a Caller alone is a gate without polkit (uid 0 or refused)."""
    return who if isinstance(who, Gate) else Gate(who, method)
