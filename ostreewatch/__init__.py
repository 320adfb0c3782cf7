"""ostreewatch: watch an OSTree host's boot state and publish it on D-Bus."""

from importlib import metadata as _metadata


def _read_version() -> str:
    try:
        return _metadata.version("ostreewatch")
    except _metadata.PackageNotFoundError:  # running from a plain checkout
        import configparser
        import pathlib

        cfg = configparser.ConfigParser()
        cfg.read(pathlib.Path(__file__).resolve().parent.parent / "setup.cfg")
        return cfg.get("metadata", "version", fallback="0+unknown")


__version__ = _read_version()
