"""Model facts in one place: what a 2D model's name implies.

Each :class:`ModelSpec` gives the width of the features a model produces, its patch size and
input size, the image normalisation it was trained with and the open_clip architecture of the
text tower its features are aligned with. Extractors, text encoders, the demo and the configs
read these facts here instead of repeating them (or guessing a width from a name).

Sources: open_clip's model configs (CLIP embed dims, patch and image sizes, OpenAI mean/std);
OpenScene facts §3 (OpenSeg: 768-d, CLIP ViT-L/14@336px text space; LSeg: 512-d, ViT-B/32 text
space, mean = std = 0.5); the seed-systems facts §2.1 for timm backbones.
"""

from __future__ import annotations

from dataclasses import dataclass

from openscene_ray.kernel.registry import Registry

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_CLIP_ARCH",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_SPECS",
    "ModelSpec",
    "model_spec",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """What a 2D model's name implies (``None``: not applicable to this model)."""

    name: str
    feature_dim: int  # width of its (text-aligned) features
    patch_size: int | None
    input_size: int | None  # the square input it was trained at
    mean: tuple[float, float, float] | None  # image normalisation (None: the model normalises itself)
    std: tuple[float, float, float] | None
    text_arch: str | None  # open_clip architecture of the aligned text tower


MODEL_SPECS: Registry[ModelSpec] = Registry("model")


def _add(spec: ModelSpec) -> None:
    MODEL_SPECS.register(spec.name, spec)


for _arch, _dim, _patch, _size in (
    ("ViT-B-32", 512, 32, 224),
    ("ViT-B-16", 512, 16, 224),
    ("ViT-L-14", 768, 14, 224),
    ("ViT-L-14-336", 768, 14, 336),
):
    _add(ModelSpec(_arch, _dim, _patch, _size, CLIP_MEAN, CLIP_STD, text_arch=_arch))
_add(ModelSpec("openseg", 768, None, 640, None, None, text_arch="ViT-L-14-336"))
_add(ModelSpec("lseg-vitl16-384", 512, 16, 384, HALF, HALF, text_arch="ViT-B-32"))
# FiT3D's 2D backbones (seed-systems facts §2.1): the last block's normed patch tokens; every one
# is fed ImageNet-normalised images (CLIP included), resized to a multiple of its patch.
for _name, _dim, _patch, _size in (
    ("dinov2_small", 384, 14, 518),
    ("dinov2_base", 768, 14, 518),
    ("dinov2_reg_small", 384, 14, 518),
    ("clip_base", 768, 16, 384),
    ("mae_base", 768, 16, 224),
    ("deit3_base", 768, 16, 224),
):
    _add(ModelSpec(_name, _dim, _patch, _size, IMAGENET_MEAN, IMAGENET_STD, text_arch=None))

DEFAULT_CLIP_ARCH = MODEL_SPECS.get("openseg").text_arch  # OpenScene's main text space


def model_spec(name: str) -> ModelSpec:
    """The facts of model ``name``; KeyError naming the known models."""
    return MODEL_SPECS.get(name)
