"""ostreewatch: watch an OSTree host's boot state and publish it on D-Bus."""

# The version's one home: setup.cfg reads it (version = attr:), packaging/rpm.spec's
# Version: is checked against it (tests/test_rpm.py), and an installed copy needs no
# metadata lookup to know it.
__version__ = "0.1.0"
