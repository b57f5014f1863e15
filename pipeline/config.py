"""TOML recipes loaded into frozen dataclasses, with `--set section.key=value` overrides.

A recipe (`pipeline/recipes/*.toml`) has one table per stage, and may start with
`base = "default.toml"` to change only some values of another recipe. Every table and key is checked
against the dataclass registered for it in `SECTIONS`: a typo is an error that names the key, never a
silently ignored setting. Values given with `--set` are parsed as TOML values (`3`, `0.5`, `true`,
`["en", "zh"]`), and as plain strings when they are not valid TOML.

    recipe = Recipe.load("pipeline/recipes/default.toml", ["extract.favor_precision=true"])
    config = recipe.section("extract")          # an ExtractConfig
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.spark import SparkConfig
from stages.dedup import DedupConfig
from stages.extract import ExtractConfig
from stages.language import LanguageConfig
from stages.packing import TokenizeConfig
from stages.warc import IngestConfig

SECTIONS: dict[str, type] = {
    "spark": SparkConfig,
    "ingest": IngestConfig,
    "extract": ExtractConfig,
    "langid": LanguageConfig,
    "dedup": DedupConfig,
    "tokenize": TokenizeConfig,
}

DEFAULT_RECIPE = Path(__file__).parent / "recipes" / "default.toml"


class ConfigError(ValueError):
    """A recipe or override that does not match the registered dataclasses."""


@dataclass(frozen=True)
class Recipe:
    path: str
    sections: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
        path = Path(path or DEFAULT_RECIPE)
        if not path.exists():
            raise ConfigError(f"recipe not found: {path}")
        raw = read_toml(path)
        for item in overrides or []:
            apply_override(raw, item)
        sections = {name: build(SECTIONS[name], raw.get(name, {}), name) for name in SECTIONS}
        unknown = sorted(set(raw) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown recipe section [{unknown[0]}] in {path} (known: {', '.join(SECTIONS)})")
        return cls(str(path), sections)

    def section(self, name: str) -> Any:
        return self.sections[name]

    def as_dict(self, *names: str) -> dict[str, dict[str, Any]]:
        """The resolved values of the named sections (all when none are named), for `_config.json`."""
        return {n: dataclasses.asdict(self.sections[n]) for n in names or self.sections}


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
