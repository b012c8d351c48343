"""The text side: encoders that map prompts to L2-normalised embeddings in a 2D model's space.

``synthetic`` is a seeded text space for the synthetic world (random-init CLIP towers give nearly
parallel prompt embeddings, so they make a poor target): each prompt gets a fixed Gaussian
direction derived from a hash of the prompt and the seed, so the same prompt always has the same
embedding in every process. Real CLIP text towers register here too: ``open_clip`` lives in
:mod:`openscene_ray.kernel.clip`, imported on first use so open_clip loads only when asked for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field, field_validator

from openscene_ray.kernel.config import Options, StrictModel
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.labels import LABEL_SETS, get_label_set
from openscene_ray.kernel.model_specs import DEFAULT_CLIP_ARCH
from openscene_ray.kernel.registry import Registry

__all__ = [
    "TEXT_ENCODERS",
    "SyntheticTextEncoder",
    "TextEncoder",
    "TextEncoderConfig",
    "TextSpace",
    "TextSpaceConfig",
    "build_text_encoder",
    "build_text_space",
    "check_text_model",
    "register_text_encoder",
    "text_encoder_names",
    "text_model_spec",
]


class TextEncoder(Protocol):
    """Maps prompts to float32 [K, dim] L2-normalised embeddings."""

    name: str
    dim: int

    def encode(self, prompts: Sequence[str]) -> np.ndarray: ...


def text_model_spec(encoder: str, options: dict[str, Any] | None = None) -> str:
    """The ``text_model`` string of features aligned with this encoder (extractors write it, shards
    and checkpoints carry it, evaluation and queries compare it), with the encoder's defaults made
    explicit, so the same model always compares equal: ``open_clip:<arch>``,
    ``synthetic:dim=<d>,seed=<s>``; a plugin encoder without ``space_id``: ``<kind>:k=v,...``."""
    options = dict(options or {})
    factory = TEXT_ENCODERS.get(encoder) if ":" not in encoder else None
    space_id = getattr(factory, "space_id", None)
    if space_id is not None:
        return space_id(**options)
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{encoder}:{opts}" if opts else encoder


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class SyntheticTextEncoder:
    """A deterministic text space: prompt -> unit Gaussian direction seeded by sha256(seed, prompt)."""

    def __init__(self, dim: int = 768, seed: int = 0):
        """``dim``: embedding width; ``seed``: which space (same seed, same embeddings)."""
        if dim < 2:
            raise ValueError(f"synthetic text space: dim must be >= 2, got {dim}")
        self.dim = dim
        self.seed = seed
        self.name = self.space_id(dim, seed)

    @staticmethod
    def space_id(dim: int = 768, seed: int = 0, **_unused) -> str:
        """The text-model identity of this space (see :func:`text_model_spec`)."""
        return f"synthetic:dim={dim},seed={seed}"

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        rows = []
        for prompt in prompts:
            digest = hashlib.sha256(f"{self.seed}\x00{prompt}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            rows.append(rng.standard_normal(self.dim))
        return l2_normalize(np.asarray(rows, dtype=np.float64).reshape(len(rows), self.dim))


# open_clip registers itself when its module is first imported (open_clip loads only when asked for).
TEXT_ENCODERS: Registry[Callable[..., TextEncoder]] = Registry(
    "text encoder", lazy_modules={"open_clip": "openscene_ray.kernel.clip"}
)
register_text_encoder = TEXT_ENCODERS.register
text_encoder_names = TEXT_ENCODERS.names


def build_text_encoder(kind: str, **kwargs) -> TextEncoder:
    """Build a registered text encoder, e.g. ``build_text_encoder("synthetic", dim=64, seed=0)``."""
    return TEXT_ENCODERS.get(kind)(**kwargs)


register_text_encoder("synthetic", SyntheticTextEncoder)


class TextEncoderConfig(StrictModel):
    """A text encoder and its options (``text:`` of the segment stage, which embeds a dictionary's
    phrases); :class:`TextSpaceConfig` adds the label set."""

    encoder: str = Field("open_clip", description="text encoder kind: open_clip, synthetic, ...")
    options: Options = Field(
        default_factory=lambda: {"arch": DEFAULT_CLIP_ARCH, "checkpoint": "openai"},
        description="encoder options, e.g. {arch, checkpoint} or {dim, seed}",
    )
    on_mismatch: Literal["warn", "error"] = Field(
        "warn", description="when the features' text_model differs from this encoder's"
    )

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, kind: str) -> str:
        if kind not in TEXT_ENCODERS:
            raise ValueError(str(TEXT_ENCODERS.missing(kind)))
        return kind

    def spec(self) -> str:
        """This encoder's ``text_model`` string (see :func:`text_model_spec`)."""
        return text_model_spec(self.encoder, self.options)


class TextSpaceConfig(TextEncoderConfig):
    """The label set's prompts and the text encoder that embeds them: the one shape of the text
    config in every stage that scores features against text (``text:`` in distill, evaluate,
    query and the viewer)."""

    label_set: str = "scannet20"

    @field_validator("label_set")
    @classmethod
    def _known_label_set(cls, name: str) -> str:
        if name not in LABEL_SETS:
            raise ValueError(str(LABEL_SETS.missing(name)))
        return name


def check_text_model(found: str | None, config: TextSpaceConfig, what: str) -> str:
    """``""`` when ``found`` matches the configured encoder; otherwise a warning, or an error raised."""
    expected = config.spec()
    if found is None or found == expected:
        return ""
    message = (
        f"{what} was made for text model {found!r} but the configured text encoder is {expected!r}: "
        "its features and these text embeddings live in different spaces, so scores are meaningless "
        "unless the two are the same model"
    )
    if config.on_mismatch == "error":
        raise InputError(message + " (set text.on_mismatch=warn to go on anyway)")
    return message


@dataclass(frozen=True)
class TextSpace:
    """The prompts of a label set embedded by one text encoder."""

    label_set: str
    prompts: tuple[str, ...]
    embeddings: np.ndarray  # float32 [P, C], L2-normalised
    prompt_to_class: tuple[int, ...]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_text_space(config: TextSpaceConfig, openscene_compat: bool = False) -> TextSpace:
    """Embed the label set's prompts (the reference's "other" substitution only under compat)."""
    labels = get_label_set(config.label_set)
    prompts = labels.prompts(openscene_compat=openscene_compat)
    embeddings = build_text_encoder(config.encoder, **config.options).encode(prompts)
    return TextSpace(config.label_set, tuple(prompts), embeddings, tuple(labels.prompt_to_class()), labels.class_names)

