"""Recipe files: TOML tables loaded into frozen dataclasses, `section.key=value` overrides, bases.

Shared by the data pipeline (`pipeline/config.py`) and the trainer (`training/`), so both read
recipes the same way. Pure Python: no Spark, no torch.

    raw = read_toml(Path("recipe.toml"))                # follows `base = "other.toml"`
    apply_override(raw, "extract.fast=true")
    config = build(ExtractConfig, raw["extract"], "extract")   # unknown keys / wrong types raise
    tables = load_sections("train.toml", {"optim": OptimConfig, "train": TrainConfig}, ["optim.lr=1e-3"])
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A recipe or override that does not match the registered dataclasses."""


def read_toml(path: Path, depth: int = 0) -> dict[str, Any]:
    """Reads a recipe; a top-level `base = "other.toml"` (relative to it) is loaded first and overlaid."""
    raw = tomllib.loads(path.read_text())
    base = raw.pop("base", None)
    if base is None:
        return raw
    if depth > 8:
        raise ConfigError(f"recipe bases nest too deeply at {path}")
    merged = read_toml((path.parent / base).resolve(), depth + 1)
    for section, values in raw.items():
        merged.setdefault(section, {}).update(values)
    return merged


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Applies one `section.key=value` to the parsed TOML dict."""
    dotted, sep, text = item.partition("=")
    section, dot, key = dotted.strip().partition(".")
    if not (sep and dot and section and key):
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    raw.setdefault(section, {})[key.strip()] = parse_value(text.strip())


def load_sections(path: str | Path | None, sections: dict[str, type], overrides: list[str] = ()) -> dict[str, Any]:
    """A whole recipe whose tables are all registered in `sections` (name -> dataclass): reads it (or
    nothing when `path` is None), applies the overrides and builds every table (defaults for absent ones)."""
    raw = read_toml(Path(path)) if path else {}
    for item in overrides:
        apply_override(raw, item)
    unknown = set(raw) - set(sections)
    if unknown:
        raise ConfigError(f"unknown recipe table(s) {sorted(unknown)} (known: {', '.join(sections)})")
    return {name: build(cls, raw.get(name, {}), name) for name, cls in sections.items()}


def parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def build(cls: type, values: dict[str, Any], section: str) -> Any:
    """Builds the frozen dataclass `cls` from a TOML table, checking names and types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{section}.{key}' (known: {', '.join(fields)})")
        kwargs[key] = coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, name: str) -> Any:
    """Checks `value` against a simple annotation: str, int, float, bool, tuple[X, ...], X | None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or value == "none":
            return None
        return coerce(value, next(a for a in args if a is not type(None)), name)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} expects a list, got {value!r}")
        return tuple(coerce(v, args[0], name) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} expects a table, got {value!r}")
        return {k: coerce(v, args[1], name) for k, v in value.items()}
    return _scalar(value, hint, name)


def _scalar(value: Any, hint: type, name: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{name} expects {hint.__name__}, got {value!r}")
