"""LSeg weights: the released PyTorch Lightning checkpoint and this project's own export.

* Lightning (``demo_e200.ckpt``): a torch zip archive read with the restricted unpickler of
  :mod:`openscene_ray.kernel.safe_load` (nothing is ever unpickled unrestricted: checkpoints in
  shared storage are untrusted). Only ``state_dict`` is kept; its ``net.`` prefix is stripped and
  the weights are loaded strictly into the named configuration (default ``lseg-vitl16-384``).
  The text side is the checkpoint's own CLIP tower (``open_clip`` of the config's ``clip_arch``).
* Export (written by ``train-2d``): a folder with ``model.safetensors`` (the state dict) and
  ``checkpoint.json`` (format, :class:`~openscene_ray.models.lseg.LSegConfig`, the text encoder the
  features were trained against, label set, training metrics, SHA-256 of the weights). The
  weights are written first and the JSON last, each atomically, so a reader that finds the JSON
  finds the weights it describes.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from openscene_ray.kernel import storage
from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.errors import OpenSceneError, describe_error
from openscene_ray.kernel.export_folder import ExportFormat, cpu_state
from openscene_ray.kernel.safe_load import load_torch_checkpoint
from openscene_ray.kernel.text import text_model_spec
from openscene_ray.models.lseg import LSegConfig, LSegNet, build_lseg, lseg_config

__all__ = [
    "LSegCheckpointError",
    "LSegInfo",
    "is_lseg_export",
    "load_lseg",
    "read_lseg_export",
    "save_lseg_export",
    "strip_lightning_prefix",
]

LIGHTNING_PREFIX = "net."
DEFAULT_LIGHTNING_CONFIG = "lseg-vitl16-384"


class LSegCheckpointError(OpenSceneError, ValueError):
    """An LSeg checkpoint is incomplete, of another format, or does not fit its configuration."""


EXPORT = ExportFormat("openscene-ray/lseg", 1, "checkpoint.json", LSegCheckpointError, "an LSeg export")


class LSegInfo(StrictModel):
    """What comes with LSeg weights: the text encoder its features are aligned with, and more."""

    text_encoder: str = Field(..., description="text encoder kind, e.g. open_clip or synthetic")
    text_options: dict[str, Any] = Field(default_factory=dict)
    label_set: str | None = None
    labels: list[str] | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="training run, metrics, source")

    @property
    def text_model(self) -> str:
        """The ``text_model`` string of the features (see :func:`~openscene_ray.kernel.text.text_model_spec`)."""
        return text_model_spec(self.text_encoder, self.text_options)


def save_lseg_export(uri: str, net: LSegNet, info: LSegInfo) -> str:
    """Write ``net`` (its state dict and config) and ``info`` under ``uri``; returns ``uri``."""
    fields = {"model_config": net.config.model_dump(mode="json"), "info": info.model_dump(mode="json")}
    return EXPORT.write(uri, cpu_state(net), fields)


def is_lseg_export(uri: str) -> bool:
    """True when ``uri`` is a folder written by :func:`save_lseg_export`."""
    return EXPORT.exists(uri)


def read_lseg_export(uri: str) -> tuple[LSegConfig, LSegInfo, dict[str, Any]]:
    """``(config, info, document)`` of an export folder, checked for format, version and the
    weights' name. Errors name the file."""
    document = EXPORT.read_document(uri)
    try:
        config, info = LSegConfig.model_validate(document["model_config"]), LSegInfo.model_validate(document["info"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LSegCheckpointError(f"{storage.join(uri, EXPORT.document)}: malformed ({describe_error(exc)})") from None
    return config, info, document


def strip_lightning_prefix(state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The Lightning module's ``net.*`` entries without the prefix; any other key is an error."""
    foreign = [k for k in state_dict if not k.startswith(LIGHTNING_PREFIX)]
    if foreign:
        raise LSegCheckpointError(f"{source}: state_dict keys outside {LIGHTNING_PREFIX!r}: {foreign[:5]}")
    return {k[len(LIGHTNING_PREFIX) :]: v for k, v in state_dict.items()}


def _load_strict(net: LSegNet, state: dict[str, torch.Tensor], source: str) -> LSegNet:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise LSegCheckpointError(f"{source}: does not fit LSeg {net.config.name}: {exc}") from None
    return net


def _load_export(uri: str) -> tuple[LSegNet, LSegInfo]:
    config, info, document = read_lseg_export(uri)
    return _load_strict(build_lseg(config), EXPORT.read_weights(uri, document), uri), info


def _load_lightning(uri: str, config: LSegConfig, cache_dir: str) -> tuple[LSegNet, LSegInfo]:
    if config.clip_arch is None:
        raise LSegCheckpointError(f"{uri}: a Lightning checkpoint needs a configuration with a CLIP tower (clip_arch)")
    local = storage.local_copy(uri, cache_dir)
    state = strip_lightning_prefix(load_torch_checkpoint(local, source=uri, key="state_dict"), uri)
    net = _load_strict(build_lseg(config), state, uri)
    info = LSegInfo(text_encoder="open_clip", text_options={"arch": config.clip_arch},
                    extra={"source": uri, "format": "lightning"})  # fmt: skip
    return net, info


def load_lseg(
    checkpoint: str, config: str | None = None, device: str | torch.device = "cpu", cache_dir: str | None = None
) -> tuple[LSegNet, LSegInfo]:
    """LSeg weights from ``checkpoint`` (an export folder or a Lightning ``.ckpt``, local or remote),
    in eval mode on ``device``. ``config`` names the configuration of a Lightning checkpoint
    (default ``lseg-vitl16-384``); an export records its own and must agree with a given name."""
    from openscene_ray.kernel.clip import model_cache_dir

    if is_lseg_export(checkpoint):
        net, info = _load_export(checkpoint)
        if config is not None and config != net.config.name:
            raise LSegCheckpointError(f"{checkpoint}: an export of {net.config.name!r}, not of {config!r}")
    else:
        net, info = _load_lightning(checkpoint, lseg_config(config or DEFAULT_LIGHTNING_CONFIG), model_cache_dir(cache_dir))
    return net.to(device).eval(), info
