"""FiT3D's 2D feature backbones (seed-systems facts §2.1) behind one interface, and their registry.

A :class:`Backbone` maps uint8 images ``[B, H, W, 3]`` to features at its token resolution:
:meth:`Backbone.preprocess` resizes (bilinear) to the largest multiple of the input multiple that
fits, ``(floor(H/p)*p, floor(W/p)*p)``, and normalises; :meth:`Backbone.forward` takes the
normalised batch and returns ``[B, D, h, w]``.

* timm backbones (``dinov2_small``, ``dinov2_base``, ``dinov2_reg_small``, ``clip_base``,
  ``mae_base``, ``deit3_base``): ``timm.create_model(<FiT3D's timm name>, num_classes=0,
  dynamic_img_size=True, dynamic_img_pad=False)``; the feature is the **last block's** output with
  the model's final norm, prefix tokens (class, registers) dropped, reshaped to the patch grid
  (``get_intermediate_layers(n=1, reshape=True, norm=True)``). ImageNet mean/std for all of them,
  CLIP included, as FiT3D does.
* ``<backbone>-fit3d``: the same architecture with fine-tuned weights, from a ``fit3d-finetune``
  export folder (:mod:`openscene_ray.models.backbone_io`, whose ``build_backbone`` builds any entry)
  or a plain state-dict file such as FiT3D's released ``<backbone>_finetuned.pth``. ``concat_original`` gives
  FiT3D's evaluation features: ``[original, fine-tuned]`` concatenated on the channel axis.

Weights never come from a hub: ``checkpoint`` names a local or remote file (``.safetensors``, or a
``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``), copied once per node;
random weights only with ``random_init: true`` (and ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from openscene_ray.kernel import storage
from openscene_ray.kernel.config import Options, StrictModel
from openscene_ray.kernel.errors import OpenSceneError
from openscene_ray.kernel.model_specs import model_spec
from openscene_ray.kernel.registry import Registry

__all__ = [
    "BACKBONES",
    "EXPORT_NAME",
    "FIT3D_SUFFIX",
    "Backbone",
    "BackboneConfig",
    "BackboneEntry",
    "BackboneError",
    "build_original",
    "load_state_file",
    "load_timm_state",
]

FIT3D_SUFFIX = "-fit3d"
EXPORT_NAME = "fit3d.json"  # the fine-tuned export's description (models.backbone_io)


class BackboneError(OpenSceneError, ValueError):
    """A backbone that cannot be built: an unknown name, missing or mismatched weights."""


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: its family, FiT3D's timm name, and the backbone it fine-tunes."""

    name: str
    family: str  # "timm" (the only family here; others may register their own)
    timm_name: str | None = None
    base: str | None = None  # for <name>-fit3d: the original backbone's name

    @property
    def fine_tuned(self) -> bool:
        return self.base is not None


BACKBONES: Registry[BackboneEntry] = Registry("backbone")

for _name, _timm in (
    ("dinov2_small", "vit_small_patch14_dinov2.lvd142m"),
    ("dinov2_base", "vit_base_patch14_dinov2.lvd142m"),
    ("dinov2_reg_small", "vit_small_patch14_reg4_dinov2.lvd142m"),
    ("clip_base", "vit_base_patch16_clip_384.laion2b_ft_in12k_in1k"),
    ("mae_base", "vit_base_patch16_224.mae"),
    ("deit3_base", "deit3_base_patch16_224.fb_in1k"),
):
    BACKBONES.register(_name, BackboneEntry(_name, "timm", _timm))
    BACKBONES.register(_name + FIT3D_SUFFIX, BackboneEntry(_name + FIT3D_SUFFIX, "timm", _timm, base=_name))


class BackboneConfig(StrictModel):
    """Which backbone, with which weights (``backbone:`` in the fit3d configs, and the options of
    the backbone extractors)."""

    name: str = Field(..., description="a registered backbone: dinov2_small, ..., deit3_base, or <name>-fit3d")
    checkpoint: str | None = Field(None, description="weights: a file (.safetensors/.pth) or a fit3d-finetune export folder")
    random_init: bool = Field(False, description="random weights (tests, the synthetic world); needs no checkpoint")
    seed: int = Field(0, description="seed of the random weights")
    options: Options = Field(default_factory=dict, description="timm kwargs (depth, embed_dim, ...), e.g. a tiny ViT for tests")
    concat_original: bool = Field(False, description="<name>-fit3d: features = [original, fine-tuned] (FiT3D's evaluation)")
    original: BackboneConfig | None = Field(None, description="<name>-fit3d: the original's weights (default: the export's)")
    model_cache: str | None = Field(None, description="local folder for copies of remote weights")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in BACKBONES:
            raise ValueError(str(BACKBONES.missing(name)))
        return name

    @field_validator("checkpoint")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else storage.absolute_uri(value)

    @model_validator(mode="after")
    def _weights_named(self) -> BackboneConfig:
        entry = BACKBONES.get(self.name)
        if entry.fine_tuned and self.checkpoint is None:
            raise ValueError(f"backbone {self.name}: a fine-tuned backbone needs a checkpoint (a fit3d-finetune "
                             "export folder or a state-dict file)")  # fmt: skip
        if not entry.fine_tuned and self.checkpoint is None and not self.random_init:
            raise ValueError(f"backbone {self.name}: no checkpoint given; name the weights with checkpoint=<file>, "
                             "or set random_init: true to use random weights explicitly")  # fmt: skip
        if self.checkpoint is not None and self.random_init:
            raise ValueError(f"backbone {self.name}: checkpoint and random_init exclude each other")
        if (self.concat_original or self.original is not None) and not entry.fine_tuned:
            raise ValueError(f"backbone {self.name}: concat_original/original apply to <name>{FIT3D_SUFFIX} only")
        return self


class Backbone(nn.Module):
    """Preprocessing plus a dense forward (see the module docstring)."""

    def __init__(self, name: str, feature_dim: int, stride: int, multiple: int, mean, std, text_model: str = "none"):
        super().__init__()
        self.name = name
        self.feature_dim = int(feature_dim)
        self.stride = int(stride)  # input pixels per output cell
        self.multiple = int(multiple)  # input sides are multiples of this
        self.text_model = text_model  # "none": features aligned with no text space
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The network's input size for an ``height x width`` image: ``floor(side / m) * m``."""
        size = (height // self.multiple * self.multiple, width // self.multiple * self.multiple)
        if min(size) == 0:
            raise ValueError(f"backbone {self.name}: a {width}x{height} image is smaller than one {self.multiple}-pixel patch")
        return size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` -> normalised float ``[B, 3, h, w]`` at a multiple of the patch."""
        x = images.to(self.mean.device).permute(0, 3, 1, 2).float().div_(255.0)
        size = self.input_size(*x.shape[-2:])
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``forward(preprocess(images))``: ``[B, D, h, w]``."""
        return self(self.preprocess(images))


class TimmBackbone(Backbone):
    """A timm ViT; features = the last block's normed patch tokens on the patch grid."""

    def __init__(self, name: str, timm_name: str, options: dict[str, Any]):
        import timm

        spec = model_spec(name)
        model = timm.create_model(timm_name, pretrained=False, num_classes=0, dynamic_img_size=True,
                                  dynamic_img_pad=False, **options)  # fmt: skip
        super().__init__(name, model.embed_dim, spec.patch_size, spec.patch_size, spec.mean, spec.std)
        self.model = model
        patch = tuple(model.patch_embed.patch_size)
        if patch != (spec.patch_size, spec.patch_size):
            raise BackboneError(f"backbone {name}: {timm_name} has patch {patch}, the facts say {spec.patch_size}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.get_intermediate_layers(x, n=1, reshape=True, norm=True)[0]


class ConcatBackbone(Backbone):
    """FiT3D's evaluation features: the original's and the fine-tuned's, concatenated (channels)."""

    def __init__(self, original: Backbone, fine_tuned: Backbone):
        if (original.stride, original.multiple) != (fine_tuned.stride, fine_tuned.multiple):
            raise BackboneError(f"backbone {fine_tuned.name}: the original has another patch grid")
        super().__init__(fine_tuned.name + "+original", original.feature_dim + fine_tuned.feature_dim,
                         fine_tuned.stride, fine_tuned.multiple, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # fmt: skip
        self.mean, self.std = fine_tuned.mean, fine_tuned.std
        self.original, self.fine_tuned = original, fine_tuned

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.original(x), self.fine_tuned(x)], dim=1)


def load_state_file(uri: str, cache_dir: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a weights file: ``.safetensors``, or a torch file loaded weights-only
    (a bare state dict, or one under ``model``/``state_dict``/``module``; a DDP ``module.`` prefix is
    removed). Raises :class:`BackboneError` naming the file."""
    from safetensors.torch import load_file

    from openscene_ray.kernel.clip import model_cache_dir

    local = storage.local_copy(uri, model_cache_dir(cache_dir))
    try:
        loaded = load_file(local) if local.endswith(".safetensors") else torch.load(local, map_location="cpu",
                                                                                   weights_only=True)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any reader failure is this file's problem
        raise BackboneError(f"{uri}: cannot read weights ({type(exc).__name__}: {exc})") from None
    for key in ("model", "state_dict", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded or not all(torch.is_tensor(v) for v in loaded.values()):
        raise BackboneError(f"{uri}: not a state dict of tensors")
    if all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module.") :]: v for k, v in loaded.items()}
    return loaded


def load_timm_state(backbone: TimmBackbone, state: dict[str, torch.Tensor], source: str) -> TimmBackbone:
    """Load ``state`` strictly into the timm model; a classifier head the model lacks is dropped."""
    model_keys = set(backbone.model.state_dict())
    state = {k: v for k, v in state.items() if k in model_keys or not k.startswith("head.")}
    missing = sorted(model_keys - set(state))
    unexpected = sorted(set(state) - model_keys)
    if missing or unexpected:
        raise BackboneError(f"{source}: does not fit backbone {backbone.name}: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}")  # fmt: skip
    try:
        backbone.model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"{source}: does not fit backbone {backbone.name}: {exc}") from None
    return backbone


def _seeded(build, random_init: bool, seed: int):
    if not random_init:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_original(config: BackboneConfig) -> Backbone:
    """The original (not fine-tuned) backbone named by ``config``."""
    entry = BACKBONES.get(config.name)
    if entry.fine_tuned:
        raise BackboneError(f"backbone {config.name}: fine-tuned; build it with backbone_io.build_backbone")
    timm_name = entry.timm_name
    backbone = _seeded(lambda: TimmBackbone(entry.name, timm_name, dict(config.options)), config.random_init, config.seed)
    if config.checkpoint is not None:
        if storage.exists(storage.join(config.checkpoint, EXPORT_NAME)):
            raise BackboneError(f"{config.checkpoint}: a fit3d-finetune export; load it as {entry.name}{FIT3D_SUFFIX}")
        load_timm_state(backbone, load_state_file(config.checkpoint, config.model_cache), config.checkpoint)
    return backbone
