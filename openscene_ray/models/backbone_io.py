"""Backbone weights in and out: :func:`build_backbone` (any registered backbone, original or
fine-tuned) and the fine-tuned export written by ``fit3d-finetune`` and read as ``<backbone>-fit3d``.

A folder with ``model.safetensors`` (the timm model's state dict) and ``fit3d.json`` (format and
version, the original backbone's name and timm options, the original's weights as a
:class:`~openscene_ray.models.backbones.BackboneConfig` so that ``concat_original`` can rebuild it,
training metrics, and the SHA-256 of the weights). The weights are written first and the JSON
last, each atomically: a reader that finds the JSON finds the weights it describes.
"""

from __future__ import annotations

from typing import Any

import torch

from openscene_ray.kernel.export_folder import ExportFormat, cpu_state
from openscene_ray.models.backbones import (
    BACKBONES,
    EXPORT_NAME,
    Backbone,
    BackboneConfig,
    BackboneEntry,
    BackboneError,
    ConcatBackbone,
    TimmBackbone,
    build_original,
    load_state_file,
    load_timm_state,
)

__all__ = ["EXPORT", "build_backbone", "is_backbone_export", "load_fine_tuned", "read_backbone_export",
           "save_backbone_export"]  # fmt: skip

EXPORT = ExportFormat("openscene-ray/fit3d-backbone", 1, EXPORT_NAME, BackboneError, "a fit3d-finetune export")


def is_backbone_export(uri: str) -> bool:
    """True when ``uri`` is a folder written by :func:`save_backbone_export`."""
    return EXPORT.exists(uri)


def save_backbone_export(uri: str, backbone, original: BackboneConfig, extra: dict[str, Any] | None = None) -> str:
    """Write the fine-tuned ``backbone`` (fine-tuned from ``original``) under ``uri``; returns ``uri``."""
    if not isinstance(backbone, TimmBackbone):
        raise BackboneError(f"cannot export a {type(backbone).__name__}; export the fine-tuned backbone itself")
    fields = {
        "backbone": original.name,
        "family": "timm",
        "feature_dim": backbone.feature_dim,
        "options": dict(original.options),
        "original": original.model_dump(mode="json"),
        "extra": dict(extra or {}),
    }
    return EXPORT.write(uri, cpu_state(backbone.model), fields)


def read_backbone_export(uri: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(document, state dict)`` of an export folder, checked for format, version and digest."""
    document = EXPORT.read_document(uri)
    return document, EXPORT.read_weights(uri, document)


def _from_export(config: BackboneConfig, entry: BackboneEntry):
    document, state = read_backbone_export(config.checkpoint)
    if document["backbone"] != entry.base:
        raise BackboneError(f"{config.checkpoint}: a fine-tuned {document['backbone']!r}, not {entry.base!r} "
                            f"(load it as {document['backbone']}-fit3d)")  # fmt: skip
    if config.options and dict(config.options) != document["options"]:
        raise BackboneError(f"{config.checkpoint}: exported with options {document['options']}, not {dict(config.options)}")
    if document["family"] != entry.family:
        raise BackboneError(f"{config.checkpoint}: a {document['family']!r} export, not a {entry.family!r} backbone")
    backbone = TimmBackbone(entry.base, entry.timm_name, document["options"])
    load_timm_state(backbone, state, config.checkpoint)
    return backbone, BackboneConfig.model_validate(document["original"])


def load_fine_tuned(config: BackboneConfig, entry: BackboneEntry):
    """``(fine-tuned backbone named entry.name, the original's config or None)`` from
    ``config.checkpoint``: an export folder, or a plain state-dict file (FiT3D's released
    ``<backbone>_finetuned.pth``)."""
    if is_backbone_export(config.checkpoint):
        backbone, original = _from_export(config, entry)
    else:
        backbone, original = TimmBackbone(entry.base, entry.timm_name, dict(config.options)), None
        load_timm_state(backbone, load_state_file(config.checkpoint, config.model_cache), config.checkpoint)
    backbone.name = entry.name
    return backbone, original


def build_backbone(config: BackboneConfig | dict[str, Any]) -> Backbone:
    """The backbone ``config`` names, with its weights, in train mode on the CPU."""
    config = BackboneConfig.model_validate(config) if isinstance(config, dict) else config
    entry = BACKBONES.get(config.name)
    if not entry.fine_tuned:
        return build_original(config)
    fine_tuned, original = load_fine_tuned(config, entry)
    if not config.concat_original:
        return fine_tuned
    original_config = config.original or original
    if original_config is None:
        raise BackboneError(f"{config.checkpoint}: the original's weights are not recorded; set backbone.original")
    return ConcatBackbone(build_original(original_config), fine_tuned)
