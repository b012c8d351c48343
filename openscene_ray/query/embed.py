"""Query embeddings: texts through the configured text encoder, images through the image tower of
the same open_clip model (arch and checkpoint) as the text side, so an image query is CLIP
image-to-3D retrieval. Random CLIP weights are used only with ``random_init: true``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from openscene_ray.kernel import storage
from openscene_ray.kernel.model_specs import DEFAULT_CLIP_ARCH
from openscene_ray.query.config import QueryConfig, check_template

__all__ = ["embed_images", "embed_queries", "embed_texts", "query_names"]


def embed_texts(texts: Sequence[str], encoder: str, options: dict[str, Any] | None = None,
                template: str | None = None) -> np.ndarray:
    """float32 ``[Q, C]`` L2-normalised text embeddings (``template.format(text)`` when given)."""
    from openscene_ray.kernel.text import build_text_encoder

    if template is not None:
        check_template(template)
    prompts = [template.format(t) if template else t for t in texts]
    return build_text_encoder(encoder, **(options or {})).encode(prompts)


def _pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    return Image.open(io.BytesIO(storage.read_bytes(str(image)))).convert("RGB")


def embed_images(images: Sequence, options: dict[str, Any], device: str = "cpu") -> np.ndarray:
    """float32 ``[Q, C]`` L2-normalised CLIP image embeddings of ``images`` (URIs, PIL images or
    uint8 arrays) from the open_clip model that ``options`` (the ``open_clip`` text encoder's:
    arch, checkpoint or random_init, seed, quick_gelu, model_cache) names."""
    import open_clip
    import torch

    from openscene_ray.kernel.clip import load_clip_model, resolve_clip_weights

    weights = resolve_clip_weights(
        options.get("arch", DEFAULT_CLIP_ARCH), options.get("checkpoint"), bool(options.get("random_init", False)),
        int(options.get("seed", 0)), options.get("quick_gelu"), options.get("model_cache"),
    )  # fmt: skip
    model = load_clip_model(weights, device)
    cfg = open_clip.get_model_preprocess_cfg(model)
    preprocess = open_clip.image_transform(
        cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"], resize_mode=cfg.get("resize_mode"),
        interpolation=cfg.get("interpolation"), fill_color=cfg.get("fill_color", 0),
    )  # fmt: skip
    batch = torch.stack([preprocess(_pil(image)) for image in images]).to(device)
    with torch.inference_mode():
        embeddings = torch.nn.functional.normalize(model.encode_image(batch).float(), dim=-1)
    return embeddings.cpu().numpy().astype(np.float32)


def query_names(texts: Sequence[str], images: Sequence[str]) -> list[str]:
    """Display names: the texts, then ``image:<file name>`` per image."""
    return [*texts, *(f"image:{str(i).rstrip('/').rsplit('/', 1)[-1]}" for i in images)]


def embed_queries(config: QueryConfig) -> np.ndarray:
    """``[Q, C]``: the texts, then the images."""
    parts = []
    if config.texts:
        parts.append(embed_texts(config.texts, config.text.encoder, config.text.options, config.template))
    if config.images:
        parts.append(embed_images(config.images, config.text.options, config.device))
    return np.concatenate(parts).astype(np.float32)
