"""Export of a trained 3D network as a plain checkpoint, loadable without Ray.

A checkpoint is a folder (any storage URI) with two objects:

* ``model.safetensors``: the state dict (weights and BatchNorm statistics);
* ``checkpoint.json``: the format version, the network's kind in the model registry
  (:mod:`~openscene_ray.models.zoo`; absent = ``minkunet18a``) and its config, the
  :class:`CheckpointMetadata` (voxel size, text model, label set), the code version and the
  SHA-256 of the weights.

The weights are written first and the JSON last, each atomically, so a reader that finds the JSON
finds the weights it describes; the recorded digest catches a folder mixed from two exports.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.errors import OpenSceneError, describe_error
from openscene_ray.kernel.export_folder import WEIGHTS_NAME, ExportFormat, cpu_state
from openscene_ray.kernel.train_runtime import unwrap
from openscene_ray.models.minkunet import MinkUNet, MinkUNetConfig
from openscene_ray.models.zoo import MODELS, config_for_kind, model_kind

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CheckpointError", "CheckpointMetadata", "load_checkpoint",
           "read_checkpoint_metadata", "save_checkpoint"]  # fmt: skip

CONFIG_NAME = "checkpoint.json"


class CheckpointError(OpenSceneError, ValueError):
    """A checkpoint folder is incomplete, of another format, or inconsistent."""


EXPORT = ExportFormat("openscene-ray/minkunet", 1, CONFIG_NAME, CheckpointError, "a checkpoint folder")


class CheckpointMetadata(StrictModel):
    """What a consumer needs besides the weights to use the network's features."""

    voxel_size: float
    text_model: str
    feature_dim: int
    label_set: str | None = None
    labels: list[str] | None = None
    extra: dict[str, Any] = {}


def save_checkpoint(
    uri: str, model: nn.Module, config: MinkUNetConfig, metadata: CheckpointMetadata | dict[str, Any]
) -> str:
    """Write ``model`` (its state dict), ``config`` and ``metadata`` under ``uri``; returns ``uri``."""
    metadata = CheckpointMetadata.model_validate(metadata)
    bare = unwrap(model)
    if isinstance(bare, MinkUNet) and bare.config != config:
        raise CheckpointError(f"the model was built from {bare.config!r}, not from the config being saved")
    if metadata.feature_dim != config.out_channels:
        raise CheckpointError(
            f"metadata.feature_dim={metadata.feature_dim} but the network outputs {config.out_channels} channels"
        )
    fields = {"model": model_kind(config), "model_config": config.model_dump(mode="json"),
              "metadata": metadata.model_dump(mode="json")}  # fmt: skip
    return EXPORT.write(uri, cpu_state(bare), fields)


def read_checkpoint_metadata(uri: str) -> CheckpointMetadata:
    """The metadata saved with the checkpoint under ``uri``, without reading its weights."""
    try:
        return CheckpointMetadata.model_validate(EXPORT.read_document(uri)["metadata"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{uri}: {CONFIG_NAME} has no valid metadata ({describe_error(exc)})") from None


def load_checkpoint(
    uri: str, device: str | torch.device = "cpu"
) -> tuple[MinkUNet, MinkUNetConfig, CheckpointMetadata]:
    """Rebuild the network saved under ``uri``: ``(model in eval mode on device, config, metadata)``.

    Every problem (an incomplete or foreign folder, a weights file named outside the folder, a
    corrupt or mismatched state dict) is a :class:`CheckpointError` naming the checkpoint."""
    document = EXPORT.read_document(uri)
    try:
        kind = str(document.get("model", "minkunet18a"))
        config = config_for_kind(kind, document["model_config"])
        metadata = CheckpointMetadata.model_validate(document["metadata"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{uri}: {CONFIG_NAME} is malformed ({describe_error(exc)})") from None
    model = MODELS.get(kind).build(config)
    try:
        model.load_state_dict(EXPORT.read_weights(uri, document), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{uri}: the weights do not fit {kind} ({describe_error(exc)})") from None
    return model.to(device).eval(), config, metadata
