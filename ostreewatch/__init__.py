"""ostreewatch: watch an OSTree host's boot state and publish it on D-Bus."""

import os
import sys


def _read_version() -> str:
    """The version from setup.cfg, its one home, as installed or as in a checkout.

    Read from the installed METADATA by hand rather than importlib.metadata, which
    pulls in the email package: about 35 ms of the daemon's time to READY=1.
    """
    checkout_cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.cfg")
    if os.path.isfile(checkout_cfg):  # a checkout (plain or editable install)
        import configparser

        cfg = configparser.ConfigParser()
        cfg.read(checkout_cfg)
        if cfg.has_option("metadata", "version"):
            return cfg.get("metadata", "version")
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("ostreewatch-") and name.endswith((".dist-info", ".egg-info")):
                for meta in ("METADATA", "PKG-INFO"):
                    try:
                        with open(os.path.join(entry, name, meta), encoding="utf-8") as f:
                            for line in f:
                                if line.startswith("Version:"):
                                    return line.split(":", 1)[1].strip()
                                if not line.strip():
                                    break
                    except OSError:
                        continue
    return "0+unknown"


__version__ = _read_version()
