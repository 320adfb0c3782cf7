"""The interface has one source, dbus/org.ostreewatch1.Manager.xml: every table is derived from it.

scripts/gen-interface.py writes ostreewatch/_interface.py from the XML;
service.py and model.py take their tables from that module. The check below
compares values, not text, so that a formatter may restyle the generated file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from ostreewatch import _interface, busnames, model, service

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_interface", os.path.join(REPO, "scripts", "gen-interface.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_module_matches_the_xml() -> None:
    xml = _generator().parse()
    stale = "ostreewatch/_interface.py is stale: run scripts/gen-interface.py"
    assert xml.name == _interface.INTERFACE, stale
    assert xml.methods == _interface.METHODS, stale
    assert list(_interface.METHODS) == list(xml.methods), stale
    assert xml.signals == _interface.SIGNALS, stale
    assert list(_interface.PROPERTIES.items()) == list(xml.properties.items()), stale
    assert xml.emits_changed == _interface.EMITS_CHANGED, stale


def test_the_service_and_the_model_take_the_generated_tables() -> None:
    assert service.METHODS is _interface.METHODS
    assert service.SIGNALS is _interface.SIGNALS
    assert service.PROPERTIES is _interface.PROPERTIES
    assert service.EMITS_CHANGED is _interface.EMITS_CHANGED
    assert list(model.PROPERTY_SIGNATURES) + ["Generation", "Version"] == list(_interface.PROPERTIES)
    assert all(model.PROPERTY_SIGNATURES[n] == _interface.PROPERTIES[n] for n in model.PROPERTY_SIGNATURES)
    # the snapshot holds exactly the properties the model publishes, in the XML's order
    assert [f.name for f in dataclasses.fields(model.Snapshot)] == list(model.PROPERTY_SIGNATURES)


def test_the_names_are_defined_once() -> None:
    assert (service.BUS_NAME, service.OBJECT_PATH, service.INTERFACE) == (
        busnames.BUS_NAME,
        busnames.OBJECT_PATH,
        busnames.INTERFACE,
    )
    assert busnames.INTERFACE == _interface.INTERFACE == "org.ostreewatch1.Manager"


def test_busnames_and_model_do_not_import_dbus_next() -> None:
    code = (
        "import sys; import ostreewatch.busnames, ostreewatch.model; "
        "sys.exit('dbus_next' in sys.modules or 'xml.etree.ElementTree' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_only_the_service_its_workarounds_and_the_client_import_dbus_next() -> None:
    importers = []
    for dirpath, _, files in os.walk(os.path.join(REPO, "ostreewatch")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    if any(line.lstrip().startswith(("import dbus_next", "from dbus_next")) for line in f):
                        importers.append(os.path.relpath(path, REPO))
    assert sorted(importers) == ["ostreewatch/_dbusnext.py", "ostreewatch/client.py", "ostreewatch/service.py"]


def test_the_generator_check_passes_and_catches_a_stale_module(tmp_path: Any) -> None:
    script = os.path.join(REPO, "scripts", "gen-interface.py")
    assert subprocess.run([sys.executable, script, "--check"]).returncode == 0
    gen = _generator()
    stale = tmp_path / "_interface.py"
    stale.write_text(gen.render(gen.parse()).replace('"Version": "s"', '"Version": "u"'))
    gen.MODULE = str(stale)  # type: ignore[attr-defined]
    assert gen.main(["gen-interface.py", "--check"]) == 1
