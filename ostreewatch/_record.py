"""Frozen record classes without importing `dataclasses` (it imports inspect: ~12 ms before READY=1).

`@frozen` makes what `@dataclass(frozen=True)` makes for the project's records: `__init__` with
the annotated fields in order (a base record's first) and their class-level defaults, `__eq__`,
`__hash__`, `__repr__`, `__match_args__`, and no assignment. `dataclasses.fields()`,
`dataclasses.replace()` and `dataclasses.asdict()` still work on them: `__dataclass_fields__`
is built, importing `dataclasses`, only when something asks for it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar, dataclass_transform

    _T = TypeVar("_T")
else:

    def dataclass_transform(**kwargs):  # noqa: ANN003, ANN202 - runtime no-op of typing's marker
        return lambda decorated: decorated


class FrozenRecordError(AttributeError):
    """Assignment to a field of a frozen record (dataclasses.FrozenInstanceError is one too)."""


def fields(cls: type) -> tuple[str, ...]:
    """The field names of a record class, in __init__ order."""
    names: tuple[str, ...] = cls.__record_fields__  # type: ignore[attr-defined]
    return names


class _DataclassFields:
    """`__dataclass_fields__` on demand, so that the `dataclasses` functions accept the records."""

    def __init__(self) -> None:
        self._cache: dict[type, dict[str, Any]] = {}

    def __get__(self, obj: object, cls: type) -> dict[str, Any]:
        if cls not in self._cache:
            import dataclasses

            out = {}
            for name in fields(cls):
                default = cls.__record_defaults__.get(name, dataclasses.MISSING)  # type: ignore[attr-defined]
                f = dataclasses.field(default=default)
                f.name = name
                f.type = cls.__record_types__[name]  # type: ignore[attr-defined]
                f._field_type = dataclasses._FIELD  # type: ignore[attr-defined]  # what fields() filters on
                out[name] = f
            self._cache[cls] = out
        return self._cache[cls]


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenRecordError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenRecordError(f"cannot delete field {name!r}")


def _repr(self: object) -> str:
    args = ", ".join(f"{n}={getattr(self, n)!r}" for n in fields(type(self)))
    return f"{type(self).__qualname__}({args})"


@dataclass_transform(frozen_default=True)
def frozen(cls: type[_T]) -> type[_T]:
    """Make CLS a frozen record of its annotated fields (see the module docstring)."""
    names: list[str] = list(getattr(cls, "__record_fields__", ()))
    defaults: dict[str, object] = dict(getattr(cls, "__record_defaults__", {}))
    types: dict[str, object] = dict(getattr(cls, "__record_types__", {}))
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if name not in names:
            names.append(name)
        types[name] = annotation
        if name in cls.__dict__:
            defaults[name] = cls.__dict__[name]
    # Generated like dataclasses' own code, so construction and comparison cost what they did.
    params = ", ".join(f"{n}=__d[{n!r}]" if n in defaults else n for n in names)
    body = "".join(f"    __s(self, {n!r}, {n})\n" for n in names) or "    pass\n"
    own = "(" + "".join(f"self.{n}," for n in names) + ")"
    other = "(" + "".join(f"other.{n}," for n in names) + ")"
    source = (
        f"def __init__(self, {params}):\n{body}"
        f"def __eq__(self, other):\n"
        f"    if other.__class__ is self.__class__:\n        return {own} == {other}\n"
        f"    return NotImplemented\n"
        f"def __hash__(self):\n    return hash({own})\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, {"__d": defaults, "__s": object.__setattr__}, namespace)  # noqa: S102 - generated above
    target: Any = cls  # assigned the generated methods and tables (mypy cannot see them)
    for attr in ("__init__", "__eq__", "__hash__"):
        namespace[attr].__qualname__ = f"{cls.__qualname__}.{attr}"
        setattr(target, attr, namespace[attr])
    target.__setattr__ = _frozen_setattr
    target.__delattr__ = _frozen_delattr
    if "__repr__" not in cls.__dict__:
        target.__repr__ = _repr
    target.__record_fields__ = tuple(names)
    target.__record_defaults__ = defaults
    target.__record_types__ = types
    setattr(target, "__match_args__", tuple(names))  # noqa: B010 - mypy refuses the plain assignment
    if "__dataclass_fields__" not in cls.__dict__ and not hasattr(cls, "__record_fields_descriptor__"):
        target.__record_fields_descriptor__ = True
        target.__dataclass_fields__ = _DataclassFields()
    return cls


def replace(record: _T, **changes: Any) -> _T:
    """dataclasses.replace() for a @frozen record, without importing dataclasses (an unknown name: TypeError)."""
    values = {name: getattr(record, name) for name in fields(type(record))}
    values.update(changes)
    return type(record)(**values)
