"""Names vulture cannot see used: a library calls or reads them (scripts/lint.sh passes this file to vulture).

Only names that D-Bus (dbus-next), GObject introspection, the standard library, pytest
or an oracle's documented record use belong here; anything else vulture finds is dead
code to remove. Each line says who uses the name.
"""

# ruff: noqa: B018, F821

# GObject introspection: OSTree.SysrootWriteDeploymentsOpts reads it (ostreewatch/_deployhelper.py).
_.do_postclean
# dbus-next: its ServiceInterface reads the handler's annotations, calls _marshall with
# negotiate_unix_fd and the aio writer's write_callback (ostreewatch/service.py).
_.__annotations__
negotiate_unix_fd
_.write_callback
# asyncio reads the loop's slow_callback_duration (ostreewatch/daemon.py, tests/test_watcher.py).
_.slow_callback_duration
# configparser calls optionxform (scripts/install-wheel.py, tests/test_infra.py).
_.optionxform
# systemd-boot's loader.conf keys (loader.conf(5)): LoaderConf keeps every documented key;
# these four nothing here reads yet (ostreewatch/parse/loaderconf.py).
auto_reboot
auto_poweroff
reboot_on_error
preferred_profile
# pytest: module-level marks and plugins; a fixture requested only for its side effect.
pytestmark
pytest_plugins
standin
# The grub-emu oracle's record (tests/fixtures/modern.py documents these fields).
highlighted
booted_linux
# ostreewatch/_record.py: what dataclasses' functions read (_field_type, __dataclass_fields__) and
# the frozen record's refusal to delete a field (__delattr__), all looked up by Python itself.
_._field_type
_.__delattr__
_.__dataclass_fields__
# ostreewatch/model.py: iterating ProblemCode (for code in model.ProblemCode) calls its metaclass' __iter__.
__iter__
