"""Pure parsers of the files ostree and the boot loaders write; each raises its own OstreewatchError."""

from __future__ import annotations

from ..errors import OstreewatchError


def checked_text(text: object, what: str, error: type[OstreewatchError], nul_in: str = "") -> str:
    """TEXT when it is a str without NUL; else ERROR naming WHAT (and NUL_IN, default WHAT, for the NUL)."""
    if not isinstance(text, str):
        raise error(f"{what} must be text")
    if "\0" in text:
        raise error(f"NUL character in {nul_in or what}")
    return text
