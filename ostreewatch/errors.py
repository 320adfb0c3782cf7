"""The project's one error hierarchy.

Every error that can cross the bus carries its D-Bus error name; the service
maps exceptions to named errors at the edge and nowhere else, and the client
maps names back to classes through by_dbus_name(). Standard library only: the
helper processes (_writehelper, _deployhelper) import it too.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` is not imported before READY=1; mypy takes any TYPE_CHECKING as true
if TYPE_CHECKING:
    from typing import Any


ERROR_PREFIX = "org.ostreewatch1.Error."

# dbus_name -> the class that declares it (subclasses that only inherit a name are not listed).
_BY_DBUS_NAME: dict[str, type[OstreewatchError]] = {}


class OstreewatchError(Exception):
    """Base of every error this project raises on purpose."""

    dbus_name: str = ERROR_PREFIX + "Failed"

    def __init_subclass__(cls, dbus_name: str | None = None, **kwargs: Any) -> None:
        """A subclass declares its own D-Bus name as `class X(OstreewatchError, dbus_name=...)`."""
        super().__init_subclass__(**kwargs)
        if dbus_name is None and "dbus_name" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: declare the D-Bus name as a class keyword, dbus_name=...")
        if dbus_name is not None:
            cls.dbus_name = dbus_name
            if cls.dbus_name in _BY_DBUS_NAME:
                raise TypeError(
                    f"{cls.__name__}: {cls.dbus_name} is already {_BY_DBUS_NAME[cls.dbus_name].__name__}'s D-Bus name"
                )
            _BY_DBUS_NAME[cls.dbus_name] = cls


_BY_DBUS_NAME[OstreewatchError.dbus_name] = OstreewatchError


def by_dbus_name(name: str) -> type[OstreewatchError]:
    """The class that declares the D-Bus error NAME; OstreewatchError for a name of no class here."""
    return _BY_DBUS_NAME.get(name, OstreewatchError)


def from_dbus(name: str, text: str) -> OstreewatchError:
    """The error a D-Bus error reply stands for, carrying "NAME: TEXT" (the daemon's refusal as NotAuthorized)."""
    cls = by_dbus_name(name)
    if cls is AccessDenied and NotAuthorized.is_refusal(text):
        cls = NotAuthorized
    return cls(f"{name}: {text}")


# --- parsers: each parser raises only its own subclass ----------------------


class ParseError(OstreewatchError, dbus_name=ERROR_PREFIX + "ParseError"):
    """Input text or bytes that a parser cannot make sense of."""


class BlsError(ParseError):
    """A Boot Loader Specification entry that cannot be parsed."""


class MountinfoError(ParseError):
    """A mountinfo line that does not have the kernel's format."""


class GrubenvError(ParseError):
    """A grub environment block that is malformed, or would overflow."""


class LoaderConfError(ParseError):
    """A systemd-boot loader.conf that cannot be parsed or rewritten."""


class CmdlineError(ParseError):
    """A kernel command line that cannot be split."""


class OriginError(ParseError):
    """A deployment .origin key file that cannot be parsed."""


class OsReleaseError(ParseError):
    """An os-release file that cannot be parsed."""


class GVariantError(ParseError):
    """A serialized GVariant that does not match the expected type."""


class BusAddressError(ParseError):
    """A D-Bus server address that does not have the specification's form."""


# --- reading a sysroot --------------------------------------------------------


class SysrootError(OstreewatchError, dbus_name=ERROR_PREFIX + "NotOstree"):
    """The directory given as sysroot is unreadable or is not an ostree sysroot."""


# --- errors that D-Bus callers see -------------------------------------------


class AccessDenied(OstreewatchError, dbus_name="org.freedesktop.DBus.Error.AccessDenied"):
    """The caller may not do this (uid 0 or polkit said no, or could not be asked)."""


class NotAuthorized(AccessDenied):
    """The daemon's own refusal: the caller is not root and polkit did not authorize the method's action.

    Its D-Bus name is AccessDenied's (what D-Bus callers expect); its text is the one
    sentence built by refusal(), which from_dbus() recognizes on the client's side.
    """

    # `re` is not imported at module level: this module is imported before READY=1 (ostreewatch/daemon.py).
    _SENTENCE = r"(\w+) needs root or the polkit action ([\w.-]+) \(caller uid (-?\d+)(: .*)?\)"

    @classmethod
    def refusal(cls, method: str, action: str, uid: int, why: str = "") -> NotAuthorized:
        """The one refusal sentence (the CLI shows it as is)."""
        return cls(
            f"{method} needs root or the polkit action {action} (caller uid {uid}" + (f": {why}" if why else "") + ")"
        )

    @classmethod
    def is_refusal(cls, text: str) -> bool:
        """Whether TEXT is a sentence refusal() builds."""
        import re

        return re.fullmatch(cls._SENTENCE, text, re.S) is not None


class InvalidArgs(OstreewatchError, dbus_name="org.freedesktop.DBus.Error.InvalidArgs"):
    """A call's arguments have the wrong signature or an unusable value."""


class NoSuchEntry(OstreewatchError, dbus_name=ERROR_PREFIX + "NoSuchEntry"):
    """A call named a boot entry the sysroot does not have."""


class NotSupported(OstreewatchError, dbus_name=ERROR_PREFIX + "NotSupported"):
    """The boot loader setup (or this daemon) cannot do what was asked."""


class Busy(OstreewatchError, dbus_name=ERROR_PREFIX + "Busy"):
    """The ostree sysroot lock is held (or keeps being replaced): nothing was written."""


class WriteFailed(OstreewatchError, dbus_name=ERROR_PREFIX + "WriteFailed"):
    """A boot file could not be written; it is left as it was."""


class DaemonUnavailable(OstreewatchError, dbus_name=ERROR_PREFIX + "Unavailable"):
    """The CLI found no daemon on the bus."""


class NoSuchDeployment(OstreewatchError, dbus_name=ERROR_PREFIX + "NoSuchDeployment"):
    """SetDefaultDeployment named a deployment the sysroot does not have."""
