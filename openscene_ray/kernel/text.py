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
from typing import Any, Protocol

import numpy as np

from openscene_ray.kernel.registry import Registry

__all__ = [
    "TEXT_ENCODERS",
    "SyntheticTextEncoder",
    "TextEncoder",
    "build_text_encoder",
    "register_text_encoder",
    "text_encoder_names",
    "text_model_spec",
]


class TextEncoder(Protocol):
    """Maps prompts to float32 [K, dim] L2-normalised embeddings."""

    name: str
    dim: int

    def encode(self, prompts: Sequence[str]) -> np.ndarray: ...


def text_model_spec(encoder: str, options: dict[str, Any]) -> str:
    """The ``text_model`` string of features aligned with this encoder (extractors write it, shards
    and checkpoints carry it, evaluation and queries compare it): ``open_clip:<arch>``, or
    ``<kind>:k=v,...`` over the sorted options."""
    if encoder == "open_clip":
        return f"open_clip:{options.get('arch', 'ViT-L-14-336')}"
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{encoder}:{opts}" if opts else encoder


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class SyntheticTextEncoder:
    """A deterministic text space: prompt -> unit Gaussian direction seeded by sha256(seed, prompt)."""

    def __init__(self, dim: int = 768, seed: int = 0):
        if dim < 2:
            raise ValueError(f"synthetic text space: dim must be >= 2, got {dim}")
        self.dim = dim
        self.seed = seed
        self.name = f"synthetic-{dim}-s{seed}"

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
