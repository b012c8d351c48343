"""SAM automatic masks (the ``segment-anything`` package) into the original on-disk hierarchy format.

The original runs SAM ViT-H's automatic mask generator on every training image and writes one
binary PNG per mask, then relates the masks by the inside/same rules (:mod:`.masks`); this module
does both for one scene's views. Weights come from a user-provided state dict, loaded with
``torch.load(..., weights_only=True)``; nothing is downloaded. ``model_type: tiny`` builds a
miniature SAM (the same modules, a few thousand parameters) for tests and smoke runs, with random
weights only where ``random_init`` allows them.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import torch

from openscene_ray.hierarchy.config import SamConfig
from openscene_ray.hierarchy.masks import MaskError, hierarchy_uri, write_view_masks
from openscene_ray.kernel import storage
from openscene_ray.kernel.clip import model_cache_dir
from openscene_ray.kernel.scene import Scene

__all__ = ["build_mask_generator", "build_sam", "generate_masks", "tiny_sam", "write_scene_masks"]

log = logging.getLogger(__name__)


def tiny_sam():
    """A miniature SAM: one 32-wide ViT block on 64-pixel inputs, 32-wide prompt encoder and decoder."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    width, image_size, patch = 32, 64, 16
    encoder = ImageEncoderViT(
        img_size=image_size, patch_size=patch, embed_dim=width, depth=1, num_heads=2, mlp_ratio=2.0,
        out_chans=width, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=False,
        window_size=0, global_attn_indexes=(),
    )  # fmt: skip
    prompt = PromptEncoder(
        embed_dim=width, image_embedding_size=(image_size // patch,) * 2, input_image_size=(image_size,) * 2,
        mask_in_chans=4,
    )  # fmt: skip
    decoder = MaskDecoder(
        transformer_dim=width, transformer=TwoWayTransformer(depth=1, embedding_dim=width, mlp_dim=32, num_heads=2),
        num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=16,
    )  # fmt: skip
    return Sam(encoder, prompt, decoder, pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def _load_state(model, uri: str) -> None:
    """Load a SAM state dict from ``uri`` (weights only: no pickled code runs)."""
    local = storage.local_copy(uri, model_cache_dir())
    try:
        state = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a pickle with code, or a truncated file
        raise MaskError(uri, f"not a weights-only SAM checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise MaskError(uri, f"expected a state dict, got {type(state).__name__}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:500]
        raise MaskError(uri, f"does not fit SAM ({model.image_encoder.img_size}-pixel encoder): {detail}") from None


def build_sam(config: SamConfig, device: torch.device):
    """The SAM model of ``config`` in eval mode on ``device``."""
    from segment_anything import sam_model_registry

    model = tiny_sam() if config.model_type == "tiny" else sam_model_registry[config.model_type](checkpoint=None)
    if config.checkpoint is not None:
        _load_state(model, config.checkpoint)
    elif not config.random_init:
        raise ValueError("sam.checkpoint is required unless sam.random_init is true")
    return model.to(device).eval()


def build_mask_generator(config: SamConfig, device: torch.device):
    """SAM's automatic mask generator (binary masks; small-region cleanup is ``min_area`` here)."""
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(
        build_sam(config, device), points_per_side=config.points_per_side, points_per_batch=config.points_per_batch,
        pred_iou_thresh=config.pred_iou_thresh, stability_score_thresh=config.stability_score_thresh,
        box_nms_thresh=config.box_nms_thresh, min_mask_region_area=0, output_mode="binary_mask",
    )  # fmt: skip


@torch.no_grad()
def generate_masks(generator, color: np.ndarray, min_area: int) -> np.ndarray:
    """bool [M, H, W] masks of an RGB image, in SAM's output order, those under ``min_area`` dropped."""
    records = generator.generate(np.ascontiguousarray(color))
    masks = [np.asarray(r["segmentation"], dtype=bool) for r in records]
    masks = [m for m in masks if m.sum() >= max(min_area, 1)]
    return np.stack(masks) if masks else np.zeros((0, *color.shape[:2]), dtype=bool)


def write_scene_masks(generator, scene: Scene, root: str, min_area: int, overwrite: bool) -> tuple[int, int]:
    """SAM masks of every view of ``scene`` in the on-disk format; (views written, views kept as they were)."""
    written = kept = 0
    for view in scene.views:
        if not overwrite and storage.exists(hierarchy_uri(root, scene.scene_id, view.frame_id, "same")):
            kept += 1
            continue
        masks = generate_masks(generator, view.color, min_area)
        write_view_masks(root, scene.scene_id, view.frame_id, masks)
        log.debug("%s/%s: %d SAM masks", scene.scene_id, view.frame_id, len(masks))
        written += 1
    return written, kept
