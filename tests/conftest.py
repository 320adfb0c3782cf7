"""Fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.sysroots",
    "tests.fixtures.bus",
    "tests.fixtures.journald",
    "tests.fixtures.daemon",
]
