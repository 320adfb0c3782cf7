"""One error hierarchy: every error the project raises on purpose is an OstreewatchError, and
the client turns a D-Bus error name back into the class that declares it."""

from __future__ import annotations

import asyncio
import importlib
import os
import re
from typing import Any

import pytest

from ostreewatch import errors, model, service
from ostreewatch.client import Client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules_declaring_exceptions() -> list[str]:
    """Modules of the package with a class statement whose base is named *Error or *Exception."""
    out = []
    for dirpath, _, files in os.walk(os.path.join(REPO, "ostreewatch")):
        for name in files:
            path = os.path.join(dirpath, name)
            if name.endswith(".py"):
                with open(path) as f:
                    if re.search(r"^class \w+\([\w.]*(?:Error|Exception)\)", f.read(), re.M):
                        rel = os.path.relpath(path, REPO)[:-3]
                        out.append(rel.replace(os.sep, ".").removesuffix(".__init__"))
    return out


def _all_error_classes() -> list[type[errors.OstreewatchError]]:
    for module in _modules_declaring_exceptions():
        importlib.import_module(module)
    out: list[type[errors.OstreewatchError]] = []
    todo = [errors.OstreewatchError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


@pytest.mark.unit
def test_every_exception_class_of_the_package_is_an_ostreewatch_error() -> None:
    stray = []
    for dirpath, _, files in os.walk(os.path.join(REPO, "ostreewatch")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name)) as f:
                    for match in re.finditer(r"^class (\w+)\(([\w.]*(?:Exception|Error))\)", f.read(), re.M):
                        if match.group(2) in ("Exception", "BaseException") and match.group(1) != "OstreewatchError":
                            stray.append(f"{name}: {match.group(1)}")
    assert stray == []
    from ostreewatch._deployhelper import HelperError
    from ostreewatch._writehelper import ContentChanged
    from ostreewatch.sysroot import ReadRefused

    for cls in (ReadRefused, ContentChanged, HelperError):
        assert issubclass(cls, errors.OstreewatchError)


@pytest.mark.unit
def test_every_declared_dbus_name_maps_back_to_its_class() -> None:
    declared = [cls for cls in _all_error_classes() if "dbus_name" in cls.__dict__]
    assert errors.ParseError in declared and errors.NoSuchDeployment in declared
    for cls in declared:
        assert errors.by_dbus_name(cls.dbus_name) is cls
    assert len({cls.dbus_name for cls in declared}) == len(declared)
    assert errors.by_dbus_name("org.example.Error.Unknown") is errors.OstreewatchError
    assert errors.by_dbus_name("org.freedesktop.DBus.Error.ServiceUnknown") is errors.OstreewatchError


@pytest.mark.unit
def test_a_second_class_cannot_take_a_declared_name() -> None:
    with pytest.raises(TypeError):
        type("Twin", (errors.OstreewatchError,), {"dbus_name": errors.Busy.dbus_name})


@pytest.mark.parametrize("raised", [errors.ParseError, errors.NoSuchDeployment, errors.Busy, errors.GrubenvError])
def test_the_client_raises_the_class_of_the_name_on_the_bus(
    system_bus: Any, raised: type[errors.OstreewatchError]
) -> None:
    """A Reload hook's error crosses a real bus and comes back as the class declaring its name."""

    async def reload(gate: Any) -> int:
        raise raised("on purpose")

    async def main() -> None:
        manager = service.Manager(model.Snapshot(), 1, "9.9.9", reload=reload)
        bus = await service.connect(system_bus.address)
        manager.attach(bus)
        assert await service.own_name(bus)
        client = await Client.connect(system_bus.address)
        try:
            with pytest.raises(errors.OstreewatchError) as e:
                await client.reload()
        finally:
            client.close()
            service.close_bus(bus)
        # a subclass that only inherits a name comes back as the class declaring it
        declaring = next(c for c in raised.__mro__ if "dbus_name" in c.__dict__)
        assert type(e.value) is declaring
        assert str(e.value) == f"{raised.dbus_name}: on purpose"

    asyncio.run(main())
