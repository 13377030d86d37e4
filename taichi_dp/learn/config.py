"""Experiment configuration files: TOML presets, JSON run configurations and ``key=value`` overrides.

A configuration is a tree of plain dataclasses (sections such as ``data``, ``model``, ``train``, ``eval``);
this module reads one from a file and changes single fields by their dotted names, with every value checked
against the field's type:

- :func:`load_file`: a TOML file (a preset, a user's study) or a JSON file (a run folder's ``config.json``,
  verified against its ``.sha256`` sidecar when it has one) as a plain dict;
- :func:`from_dict`: that dict as a configuration; an unknown key is a ``ValueError`` naming the key and the
  valid keys of its section, a value of the wrong type names the key, the expected type and the value;
  missing keys keep the dataclass defaults;
- :func:`apply_overrides`: ``["train.seconds=300", "train.seeds=0,1,2"]`` (strings parsed by the field's
  type: ``int``, ``float``, ``bool`` as ``true``/``false``, ``str``, tuples as ``a,b,c`` or a TOML array
  ``[a, b, c]``, optional fields as ``none``) or ``{"train.seconds": 300.0}`` (typed values, checked);
- :func:`preset_file`: the preset ``NAME`` of an experiment, ``taichi_dp/presets/<experiment>_<NAME>.toml``.

Precedence (lowest first), as :meth:`taichi_dp.learn.experiment.Experiment.configure` applies it: the
dataclass defaults, then the preset or ``--config`` file, then the command-line flags (each one an override
of the key it documents), then the positional ``key=value`` overrides.

Keys that describe the machine rather than the experiment (:data:`RUNTIME_KEYS`: ``arch``, ``precision``)
and the ``experiment`` name are top-level entries of a ``config.json`` outside the dataclasses:
:func:`split_meta` separates them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from . import io

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the tomli backport (setup.cfg)
    import tomli as tomllib

T = TypeVar("T")

RUNTIME_KEYS = ("arch", "precision")
"""Top-level keys of a ``config.json`` that record the machine set-up (not dataclass fields)."""

META_KEYS = ("experiment", *RUNTIME_KEYS)
"""Top-level keys of a ``config.json`` outside the configuration dataclasses."""


# ----------------------------------------------------------------------------------------------- files


def load_file(path: str | Path) -> dict[str, Any]:
    """The configuration file ``path`` as a dict: TOML (``.toml``) or JSON (``.json``; a run folder's
    ``config.json`` is verified against its ``.sha256`` sidecar when there is one).

    Args:
        path: the file; its suffix selects the format.

    Raises:
        FileNotFoundError: naming the file when it is missing.
        ValueError: naming the file when it is not valid TOML/JSON, not a table/object, or of another format.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"config file {path} must be a .toml or .json file, got suffix {path.suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    if suffix == ".json":
        raw = io.read_json(path, unverified="ignore")  # a sidecar, when present, must match
    else:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"config file {path} is not valid TOML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path} must hold a table of sections, got {type(raw).__name__}")
    return raw


def preset_file(experiment: str, name: str) -> Path:
    """The shipped preset ``name`` of ``experiment`` (``taichi_dp/presets/<experiment>_<name>.toml``);
    ``ValueError`` naming the available presets when there is none."""
    folder = resources.files("taichi_dp") / "presets"
    path = Path(str(folder / f"{experiment}_{name}.toml"))
    if not path.is_file():
        raise ValueError(
            f"preset must be one of {', '.join(preset_names(experiment)) or '(none)'} for {experiment}, got {name!r}"
        )
    return path


def preset_names(experiment: str) -> list[str]:
    """The names of the shipped presets of ``experiment``, sorted."""
    folder = Path(str(resources.files("taichi_dp") / "presets"))
    prefix = f"{experiment}_"
    return sorted(p.stem[len(prefix) :] for p in folder.glob(f"{prefix}*.toml"))


def split_meta(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(configuration keys, meta keys)`` of a loaded file: the meta keys are :data:`META_KEYS`."""
    return {k: v for k, v in raw.items() if k not in META_KEYS}, {k: v for k, v in raw.items() if k in META_KEYS}


# ----------------------------------------------------------------------------------------------- types


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, Any]:
    """``{field name: resolved type}`` of the dataclass ``cls`` (declaration order)."""
    hints = _hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _optional(tp: Any) -> Any | None:
    """``X`` for ``X | None`` / ``Optional[X]``, else ``None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and type(None) in typing.get_args(tp):
            return args[0]
    return None


def _tuple_item(tp: Any) -> Any | None:
    """``X`` for ``tuple[X, ...]``, else ``None``."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def type_name(tp: Any) -> str:
    """A readable name of a field type: ``int``, ``float``, ``tuple of float``, ``int or none``..."""
    inner = _optional(tp)
    if inner is not None:
        return f"{type_name(inner)} or none"
    item = _tuple_item(tp)
    if item is not None:
        return f"list of {type_name(item)}"
    return getattr(tp, "__name__", str(tp))


def _bad(key: str, tp: Any, value: Any) -> ValueError:
    return ValueError(f"{key}: expected {type_name(tp)}, got {value!r}")


def coerce(key: str, tp: Any, value: Any) -> Any:
    """``value`` (from a TOML/JSON file or a typed override) checked against the field type ``tp``;
    lists become tuples, an integer is accepted for a float. ``ValueError`` naming ``key``, the expected
    type and the value otherwise."""
    inner = _optional(tp)
    if inner is not None:
        return None if value is None else coerce(key, inner, value)
    item = _tuple_item(tp)
    if item is not None:
        if not isinstance(value, (list, tuple)):
            raise _bad(key, tp, value)
        return tuple(coerce(key, item, v) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(key, tp, value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(key, tp, value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(key, tp, value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _bad(key, tp, value)
        return value
    raise TypeError(f"{key}: unsupported field type {tp!r} in a configuration dataclass")


def parse_value(key: str, tp: Any, text: str) -> Any:
    """The command-line text ``text`` of field ``key`` parsed by its type ``tp`` (see the module docstring);
    ``ValueError`` naming the key, the expected type and the text otherwise."""
    inner = _optional(tp)
    if inner is not None:
        if text.strip().lower() in ("none", "null"):
            return None
        try:
            return parse_value(key, inner, text)
        except ValueError:
            raise _bad(key, tp, text) from None
    item = _tuple_item(tp)
    if item is not None:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                values = tomllib.loads(f"v = {stripped}")["v"]
            except tomllib.TOMLDecodeError:
                raise _bad(key, tp, text) from None
            return coerce(key, tp, values)
        parts = [p.strip() for p in stripped.split(",") if p.strip()]
        try:
            return tuple(parse_value(key, item, p) for p in parts)
        except ValueError:
            raise _bad(key, tp, text) from None
    text = text.strip()
    if tp is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise _bad(key, tp, text)
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise _bad(key, tp, text) from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise _bad(key, tp, text) from None
    if tp is str:
        return text
    raise TypeError(f"{key}: unsupported field type {tp!r} in a configuration dataclass")


# ----------------------------------------------------------------------------------------------- building


def _unknown(key: str, section: str, valid: Sequence[str]) -> ValueError:
    where = f"section [{section}]" if section else "the top level"
    return ValueError(f"unknown configuration key {key!r} in {where}; valid keys: {', '.join(valid)}")


def from_dict(cls: type[T], data: Mapping[str, Any], *, section: str = "") -> T:
    """The configuration dataclass ``cls`` from the nested dict ``data`` (missing keys: the defaults).

    Args:
        cls: a dataclass whose fields are plain values or further dataclasses (sections).
        data: ``{field: value or {sub-field: ...}}``, e.g. a loaded TOML/JSON file without its meta keys.
        section: the dotted name of ``cls`` in the whole configuration (for error messages).

    Raises:
        ValueError: naming an unknown key (with the valid keys of its section) or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{section or 'configuration'}: expected a table of keys, got {data!r}")
    fields = _fields(cls)
    for key in data:
        if key not in fields:
            raise _unknown(str(key), section, list(fields))
    kwargs = {}
    for name, tp in fields.items():
        if name not in data:
            continue
        dotted = f"{section}.{name}" if section else name
        if _is_section(tp):
            kwargs[name] = from_dict(tp, data[name], section=dotted)
        else:
            kwargs[name] = coerce(dotted, tp, data[name])
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The configuration ``cfg`` as a JSON-ready nested dict (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def field_type(cls: type, key: str) -> Any:
    """The type of the dotted field ``key`` of the configuration class ``cls``; ``ValueError`` naming the
    key and the valid keys of its section when it does not exist, or when it names a whole section."""
    parts = key.split(".")
    tp: Any = cls
    for i, part in enumerate(parts):
        section = ".".join(parts[:i])
        fields = _fields(tp)
        if part not in fields:
            raise _unknown(part if not section else key, section, list(fields))
        tp = fields[part]
        if i < len(parts) - 1 and not _is_section(tp):
            raise ValueError(f"{'.'.join(parts[: i + 1])} is a value, not a section: {key!r} does not exist")
    if _is_section(tp):
        keys = ", ".join(f"{key}.{k}" for k in _fields(tp))
        raise ValueError(f"{key} is a section, not a value: set its keys ({keys})")
    return tp


def parse_override(text: str) -> tuple[str, str]:
    """``("a.b", "value")`` of a command-line override ``"a.b=value"``; ``ValueError`` otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
        raise ValueError(f"override must be KEY=VALUE with a dotted KEY (e.g. train.seconds=300), got {text!r}")
    return key.strip(), value


def apply_overrides(cfg: T, overrides: Sequence[str] | Mapping[str, Any]) -> T:
    """A copy of the configuration ``cfg`` with the overrides applied in order.

    Args:
        cfg: a configuration dataclass (not modified).
        overrides: ``"key=value"`` strings (parsed by the field type) or ``{key: typed value}`` (checked).

    Raises:
        ValueError: naming an unknown key (and the valid keys of its section) or a bad value (the key,
            the expected type and the value).
    """
    cls = type(cfg)
    data = to_dict(cfg)
    items = overrides.items() if isinstance(overrides, Mapping) else [parse_override(o) for o in overrides]
    for key, value in items:
        tp = field_type(cls, key)
        value = parse_value(key, tp, value) if isinstance(value, str) and tp is not str else coerce(key, tp, value)
        node = data
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = list(value) if isinstance(value, tuple) else value
    return from_dict(cls, data)
