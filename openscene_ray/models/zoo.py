"""The one registry of 3D networks: MinkUNet18A (OpenScene distillation) and Res16UNet34C (SSOV).

Each entry names its typed config and its builder. :func:`build_model` takes a config of any
registered kind (a plain :class:`MinkUNetConfig` still builds a MinkUNet), and checkpoints record
the kind (:func:`model_kind`) so :func:`config_for_kind` rebuilds the right config on load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.registry import Registry
from openscene_ray.models.minkunet import MinkUNet, MinkUNetConfig
from openscene_ray.models.res16unet import Res16UNet, Res16UNetConfig

__all__ = ["MODELS", "ModelEntry", "build_model", "config_for_kind", "model_kind", "model_names"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered 3D network: its config class and its builder (config -> module)."""

    name: str
    config: type[StrictModel]
    build: Callable[[Any], nn.Module]


MODELS: Registry[ModelEntry] = Registry("3D model")
model_names = MODELS.names

MODELS.register("minkunet18a", ModelEntry("minkunet18a", MinkUNetConfig, MinkUNet), aliases=("minkunet",))
MODELS.register("res16unet34c", ModelEntry("res16unet34c", Res16UNetConfig, Res16UNet), aliases=("res16unet",))


def model_kind(config: StrictModel) -> str:
    """The registered name of ``config``'s network (by exact config class)."""
    for entry in MODELS.values():
        if type(config) is entry.config:
            return entry.name
    raise TypeError(f"{type(config).__name__} is not the config of a registered 3D model ({model_names()})")


def config_for_kind(kind: str, data: dict[str, Any]) -> StrictModel:
    """The config of network ``kind`` validated from ``data`` (errors name the field)."""
    return MODELS.get(kind).config.model_validate(data)


def build_model(config: StrictModel | None = None) -> nn.Module:
    """A freshly initialised network for ``config`` (MinkUNet18A with a 768-d head by default)."""
    config = config or MinkUNetConfig()
    return MODELS.get(model_kind(config)).build(config)
