"""Recipe files: TOML tables loaded into frozen dataclasses, `section.key=value` overrides, bases.

Shared by the data pipeline (`pipeline/config.py`) and the trainer (`training/`), so both read
recipes the same way. Pure Python: no Spark, no torch.

    raw = read_toml(Path("recipe.toml"))                # follows `base = "other.toml"`
    apply_override(raw, "extract.fast=true")
    config = build(ExtractConfig, raw["extract"], "extract")   # unknown keys / wrong types raise
    recipe = Recipe.load("train.toml", {"optim": OptimConfig, "train": TrainConfig}, ["optim.lr=1e-3"])
    recipe.optim.lr, recipe.to_dict()

Every mistake is a `ConfigError` (a `common.errors.UserError`: one line, exit status 2) naming the file,
key or value: a missing, unreadable, non-UTF-8 or malformed file, a top-level value that is not a table,
an unknown key, a wrong type, a value out of its range (checked by the dataclass's `__post_init__`
with `require`). A `base` is looked up only inside the recipe's own folder, then by file name in the
caller's recipe folders (`recipe_dirs`): a recipe cannot make the loader read files elsewhere.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from common.errors import UserError


class ConfigError(UserError, ValueError):
    """A recipe or override that does not match the registered dataclasses."""


def read_toml(path: Path, depth: int = 0, recipe_dirs: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Reads a recipe; a top-level `base = "other.toml"` is loaded first and overlaid (see the module
    docstring for where a base may be)."""
    raw = _parse(Path(path))
    base = raw.pop("base", None)
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: '{section}' must be a [{section}] table, got {values!r}")
    if base is None:
        return raw
    if depth > 8:
        raise ConfigError(f"{path}: recipe bases nest too deeply")
    merged = read_toml(base_path(Path(path), base, recipe_dirs), depth + 1, recipe_dirs)
    for section, values in raw.items():
        merged.setdefault(section, {}).update(values)
    return merged


def _parse(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"recipe not found: {path}")
    if not path.is_file():
        raise ConfigError(f"recipe {path} is not a file")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"recipe {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"recipe {path} is not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"recipe {path} cannot be read: {err.strerror or err}") from None


def base_path(path: Path, base: Any, recipe_dirs: tuple[Path, ...] = ()) -> Path:
    """The file a `base = ...` names: inside the recipe's folder, else that file name in `recipe_dirs`."""
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base must be a recipe file name, got {base!r}")
    folder = path.resolve().parent
    local = (folder / base).resolve()
    if local.is_relative_to(folder) and local.is_file():
        return local
    for known in recipe_dirs:
        candidate = (Path(known) / base).resolve()
        if candidate.parent == Path(known).resolve() and candidate.is_file():
            return candidate
    places = ", ".join(str(p) for p in (folder, *recipe_dirs))
    raise ConfigError(f"{path}: base {base!r} is not a recipe in {places}")


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Applies one `section.key=value` to the parsed TOML dict."""
    dotted, sep, text = item.partition("=")
    section, dot, key = dotted.strip().partition(".")
    if not (sep and dot and section and key.strip()):
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    table = raw.setdefault(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"--set {item!r}: '{section}' is not a table in the recipe")
    table[key.strip()] = parse_value(text.strip())


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A loaded recipe: one frozen dataclass per table, by name (`recipe.train` or `recipe.section("train")`).
    The one recipe type of the project: pipeline jobs (`pipeline/config.py`) and training phases
    (`training/cli.py`) differ only in the tables they register."""
    path: str
    sections: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None, schema: dict[str, type], overrides: list[str] = (),
             recipe_dirs: tuple[Path, ...] = ()) -> "Recipe":
        """Reads `path` (nothing when None), applies the overrides and builds every table registered in
        `schema` (name -> dataclass; defaults for absent tables). An unregistered table is an error."""
        raw = read_toml(Path(path), recipe_dirs=recipe_dirs) if path else {}
        for item in overrides:
            apply_override(raw, item)
        unknown = sorted(set(raw) - set(schema))
        if unknown:
            raise ConfigError(f"unknown recipe section [{unknown[0]}] in {path or 'the overrides'} "
                              f"(known: {', '.join(schema)})")
        return cls(str(path or ""), {name: build(kind, raw.get(name, {}), name) for name, kind in schema.items()})

    def section(self, name: str) -> Any:
        return self.sections[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self, *names: str) -> dict[str, dict[str, Any]]:
        """The resolved values of the named tables (all when none are named), for `_config.json` / `recipe.json`."""
        return {n: dataclasses.asdict(self.sections[n]) for n in names or self.sections}


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
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # a `require` in __post_init__, or the dataclass's own check
        message = str(err)
        raise ConfigError(message if message.startswith(f"{section}.") else f"{section}.{message}") from None


def require(ok: bool, key: str, value: Any, what: str) -> None:
    """For a config's `__post_init__`: `require(self.seq_len > 0, "seq_len", self.seq_len, "> 0")`
    raises "seq_len must be > 0, got 0" (`build` adds the section)."""
    if not ok:
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def require_positive(config: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        require(value > 0, key, value, "> 0")


def require_fraction(config: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        require(0.0 <= value <= 1.0, key, value, "between 0 and 1")


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
