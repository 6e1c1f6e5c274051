"""Frozen dataclasses <-> plain dicts and JSON, with errors that name the field.

Shared by every spec in the project (the trainer's TrainSpec here, the architecture specs in
``space``), so that one set of rules decides what a valid spec file looks like.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypeVar

from .errors import SpecError

T = TypeVar("T")


def to_dict(obj: Any, compact: bool = False) -> Any:
    """A dataclass as plain JSON-ready values (tuples become lists); ``compact`` leaves out the
    fields that hold their default, which ``from_dict`` fills in again."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name), compact) for f in dataclasses.fields(obj)
                if not (compact and _is_default(f, getattr(obj, f.name)))}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v, compact) for v in obj]
    return obj


def _is_default(f: dataclasses.Field, value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        return value == f.default
    if f.default_factory is not dataclasses.MISSING:
        return value == f.default_factory()
    return False


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build ``cls`` from a dict, refusing unknown fields; nested errors carry their path."""
    where = path or cls.__name__
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r} (valid fields: {', '.join(names)})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, _join(path, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except SpecError as e:
        raise SpecError(f"{_join(path, '') if path else ''}{e}") from None
    except TypeError as e:  # a required field is missing
        raise SpecError(f"{where}: {e}") from None


def _join(path: str, name: str) -> str:
    if not name:
        return f"{path}." if path else ""
    return f"{path}.{name}" if path else name


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{path}: expected a list, got {type(value).__name__}")
        return tuple(_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(value))
    return value


def to_json(obj: Any, compact: bool = False) -> str:
    """Indented with every field (for files people read), or ``compact``: one line without spaces,
    defaults left out (where a spec is stored beside many others, as a trial's attribute: a table
    cell then holds it on one line rather than wrapping it into a column of many lines)."""
    if compact:
        return json.dumps(to_dict(obj, compact=True), separators=(",", ":"))
    return json.dumps(to_dict(obj), indent=2, sort_keys=False)


MAX_JSON_CHARS = 1 << 20  # a spec is a few kB; a file this large is not one


def from_json(cls: type[T], text: str) -> T:
    if len(text) > MAX_JSON_CHARS:
        raise SpecError(f"{len(text):,} characters; a spec holds at most {MAX_JSON_CHARS:,}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"not valid JSON: {e}") from None
    except RecursionError:
        raise SpecError("not a spec: nested too deeply") from None
    return from_dict(cls, data)


# Field checks used in __post_init__: each raises SpecError naming the field.

def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name}: expected an integer, got {value!r}")
    if lo is not None and value < lo:
        raise SpecError(f"{name}: must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise SpecError(f"{name}: must be <= {hi}, got {value}")


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise SpecError(f"{name}: expected a number, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise SpecError(f"{name}: must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise SpecError(f"{name}: must be <= {hi}, got {value}")


def check_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise SpecError(f"{name}: must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SpecError(f"{name}: expected true or false, got {value!r}")
