"""Typed configs: pydantic models loaded from YAML with ``key.sub=value`` command-line overrides.

Every stage defines its config as a :class:`StrictModel`. :func:`load_config` merges, in order,
the model's defaults, a YAML file and ``--set`` overrides, and turns validation failures into a
:class:`ConfigError` whose message names each offending field by its dotted path.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    model_validator,
)

from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import OpenSceneError

__all__ = [
    "ConfigError",
    "Options",
    "Uri",
    "absolutize_local_paths",
    "StrictModel",
    "add_config_arguments",
    "add_renamed_flags",
    "apply_overrides",
    "config_from_args",
    "dump_config",
    "load_config",
]


def _absolute(value: str) -> str:
    return storage.absolute_uri(value)


Uri = Annotated[str, AfterValidator(_absolute)]
"""A storage URI field: local paths are made absolute when the config is built (on the driver)."""


def absolutize_local_paths(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (free-form model or encoder options) with every string that names an existing
    relative local path made absolute, recursively: Ray workers would resolve it elsewhere."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            value = absolutize_local_paths(value)
        elif isinstance(value, str) and value and "://" not in value and not os.path.isabs(value) and os.path.exists(value):
            value = os.path.abspath(value)
        out[key] = value
    return out


Options = Annotated[dict[str, Any], AfterValidator(absolutize_local_paths)]
"""Free-form options (of a model, an encoder): existing relative local paths in them are made absolute."""


class ConfigError(OpenSceneError, ValueError):
    """A config file or override is invalid. The message names the field and the source."""


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, assignments are validated, and a key listed in
    ``renamed_fields`` (old name -> new name) is refused with a message that names the new key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
    renamed_fields: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in cls.renamed_fields.items():
                if old in data:
                    raise ValueError(f"{old!r} was renamed: use {new!r} instead")
        return data


ModelT = TypeVar("ModelT", bound=BaseModel)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict; values are parsed as YAML scalars/lists."""
    result = _deep_copy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, for example fusion.cut_bound=5")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: empty field name")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from None
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  field {field}: {err['msg']}")
    return "\n".join(lines)


def load_config(
    model: type[ModelT],
    paths: str | list[str] | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> ModelT:
    """Build ``model`` from ``base`` ← each YAML in ``paths`` (any storage URIs, later ones win,
    e.g. a dataset config then a resource profile) ← ``key=value`` ``overrides``."""
    data: dict[str, Any] = _deep_copy(base or {})
    sources = ["defaults"]
    for path in [paths] if isinstance(paths, str) else list(paths or []):
        sources.append(path)
        try:
            loaded = yaml.safe_load(storage.read_bytes(path).decode("utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
        data = _merge(data, loaded)
    if overrides:
        data = apply_overrides(data, overrides)
        sources.append("overrides")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, " + ".join(sources))) from None


def add_config_arguments(parser: argparse.ArgumentParser, set_example: str) -> None:
    """Add the ``--config`` (repeatable, layered) and ``--set KEY=VALUE`` options every stage shares."""
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file (any storage URI); repeat to layer, e.g. a dataset config "
                        "then a resource profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config field, e.g. --set {set_example} (repeatable)")


class _RenamedFlag(argparse.Action):
    """A flag that was renamed: using it is an error that names the new flag."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed: use {self.new_flag} instead")


def add_renamed_flags(parser: argparse.ArgumentParser, renamed: Mapping[str, str]) -> None:
    """Refuse each old flag in ``renamed`` (old -> new) with a message that names the new one."""
    for old, new in renamed.items():
        parser.add_argument(old, action=_RenamedFlag, new_flag=new, dest=f"_renamed_{old.lstrip('-')}")


def config_from_args(
    model: type[ModelT], args: argparse.Namespace, flags: Mapping[str, Any] | None = None
) -> ModelT:
    """Build ``model`` from ``args.config`` files ← ``args.overrides`` (``--set``) ← ``flags``.

    ``flags`` maps config fields to the values of dedicated command-line flags; a value of None
    means the flag was not given. Values travel as JSON, which YAML reads back unchanged, so paths
    and URIs with colons or spaces stay strings.
    """
    overrides = list(args.overrides)
    overrides += [f"{key}={json.dumps(value)}" for key, value in (flags or {}).items() if value is not None]
    return load_config(model, args.config, overrides)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = _deep_copy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_config(config: BaseModel) -> str:
    """The config as YAML (secrets masked), for run folders and reports."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
