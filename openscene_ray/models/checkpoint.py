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

import hashlib
import json
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from openscene_ray import __version__
from openscene_ray.kernel import storage
from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.errors import OpenSceneError, describe_error
from openscene_ray.kernel.train_runtime import unwrap
from openscene_ray.models.minkunet import MinkUNet, MinkUNetConfig
from openscene_ray.models.zoo import MODELS, config_for_kind, model_kind

__all__ = ["CheckpointError", "CheckpointMetadata", "load_checkpoint", "read_checkpoint_metadata", "save_checkpoint"]

FORMAT = "openscene-ray/minkunet"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "checkpoint.json"


class CheckpointError(OpenSceneError, ValueError):
    """A checkpoint folder is incomplete, of another format, or inconsistent."""


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
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in bare.state_dict().items()}
    weights = save_safetensors(state, metadata={"format": FORMAT})
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "code_version": __version__,
        "model": model_kind(config),
        "model_config": config.model_dump(mode="json"),
        "metadata": metadata.model_dump(mode="json"),
        "weights": {"name": WEIGHTS_NAME, "sha256": hashlib.sha256(weights).hexdigest(), "bytes": len(weights)},
    }
    storage.write_bytes(storage.join(uri, WEIGHTS_NAME), weights)
    storage.write_bytes(storage.join(uri, CONFIG_NAME), json.dumps(document, indent=2, sort_keys=True).encode())
    return uri


def _read_document(uri: str) -> dict:
    """The checkpoint's ``CONFIG_NAME`` document, checked for format and version."""
    config_uri = storage.join(uri, CONFIG_NAME)
    try:
        document = json.loads(storage.read_bytes(config_uri))
    except storage.ObjectNotFound:
        raise CheckpointError(
            f"{uri}: no {CONFIG_NAME}; not a checkpoint folder (or the export did not finish)"
        ) from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_uri}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{config_uri}: expected a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT:
        raise CheckpointError(f"{config_uri}: format {document.get('format')!r}, expected {FORMAT!r}")
    if document.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_uri}: format version {document.get('format_version')!r}; this code reads {FORMAT_VERSION}"
        )
    return document


def read_checkpoint_metadata(uri: str) -> CheckpointMetadata:
    """The metadata saved with the checkpoint under ``uri``, without reading its weights."""
    try:
        return CheckpointMetadata.model_validate(_read_document(uri)["metadata"])
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
    document = _read_document(uri)
    try:
        kind = str(document.get("model", "minkunet18a"))
        config = config_for_kind(kind, document["model_config"])
        metadata = CheckpointMetadata.model_validate(document["metadata"])
        weights_name, digest = document["weights"]["name"], document["weights"]["sha256"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{uri}: {CONFIG_NAME} is malformed ({describe_error(exc)})") from None
    if weights_name != WEIGHTS_NAME:  # never follow a name out of the folder ("../x.pt")
        raise CheckpointError(f"{uri}: {CONFIG_NAME} names weights {weights_name!r}; expected {WEIGHTS_NAME!r}")
    weights = storage.read_bytes(storage.join(uri, WEIGHTS_NAME))
    if hashlib.sha256(weights).hexdigest() != digest:
        raise CheckpointError(f"{uri}: the weights do not match the digest in {CONFIG_NAME} (mixed or corrupt export)")
    model = MODELS.get(kind).build(config)
    try:
        model.load_state_dict(load_safetensors(weights), strict=True)
    except Exception as exc:  # noqa: BLE001 - safetensors and torch raise their own types
        raise CheckpointError(f"{storage.join(uri, WEIGHTS_NAME)}: unreadable weights ({describe_error(exc)})") from None
    return model.to(device).eval(), config, metadata
