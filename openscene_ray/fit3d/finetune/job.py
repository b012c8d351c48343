"""FiT3D's Stage II as a Ray Train job: rows, ``TorchTrainer`` wiring, export.

Inputs: a scene manifest and the ``fit3d-lift`` output of its training scenes. Every view of those
scenes is a sample (:mod:`.data`); each Train worker renders the lifted targets itself and
fine-tunes the whole backbone against them (:mod:`.loop`).

Run folder ``<storage_path>/<name>/``:

* ``checkpoint_*/state.pt``: Ray Train checkpoints (backbone, optimizer, scheduler, round, history);
* ``model/``: the fine-tuned backbone (``model.safetensors`` + ``fit3d.json``, and for an LSeg with a
  text space also its ``checkpoint.json``), which the registry loads as ``<backbone>-fit3d``
  (``{name: dinov2_small-fit3d, checkpoint: <run>/model}``) and the ``lseg`` extractor as an LSeg.

Resume: rerunning with the same ``name`` and ``storage_path`` continues after the latest round's
checkpoint (``rounds_per_epoch`` sets how many an epoch has); a worker failure restarts the worker
group from it, up to ``max_failures`` times.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from openscene_ray.fit3d.finetune.config import FinetuneConfig
from openscene_ray.fit3d.finetune.data import view_rows
from openscene_ray.fit3d.lift.scene import read_marker, scene_uri
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.manifest import read_manifest

__all__ = ["FinetuneSummary", "export_backbone", "run_finetune"]

log = logging.getLogger(__name__)


@dataclass
class FinetuneSummary:
    name: str
    run_dir: str
    model_uri: str
    backbone: str
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        keys = ("epoch", "round", "train_loss", "mask_fraction", "steps", "images", "resumed_from")
        return {"name": self.name, "run_dir": self.run_dir, "model": self.model_uri, "backbone": self.backbone,
                "rounds": len(self.history), "history": [{k: h[k] for k in keys if k in h} for h in self.history],
                "seconds": round(self.seconds, 2)}  # fmt: skip


def _training_scenes(config: FinetuneConfig):
    """The training scenes and the lifted kind; every one must have its lifted file."""
    records = [r for r in read_manifest(config.manifest) if r.split in set(config.splits)]
    if not records:
        raise InputError(f"{config.manifest}: no scene has split {config.splits}")
    markers = {r.scene_id: read_marker(config.lifted, r.scene_id) for r in records}
    missing = [sid for sid, marker in markers.items() if marker is None]
    if missing:
        raise InputError(f"{len(missing)} training scene(s) have no lifted file in {config.lifted} (run fit3d-lift "
                         f"first): {missing[:10]}")  # fmt: skip
    kinds = {m["kind"] for m in markers.values()}
    backbones = {m["backbone"]["name"] for m in markers.values()}
    if backbones != {config.backbone.name}:
        raise InputError(f"{config.lifted}: lifted from backbone(s) {sorted(backbones)}, but backbone.name is "
                         f"{config.backbone.name!r}")  # fmt: skip
    return records, ",".join(sorted(kinds))


def export_backbone(config: FinetuneConfig, last_checkpoint, extra: dict[str, Any]) -> str:
    """Write ``<run>/model`` from ``last_checkpoint`` (a ``ray.train.Checkpoint`` of this run)."""
    from openscene_ray.kernel.train_runtime import load_train_state
    from openscene_ray.models.backbone_io import build_backbone, save_backbone_export

    if last_checkpoint is None:
        raise RuntimeError(f"{config.run_dir}: training reported no checkpoint; nothing to export")
    with last_checkpoint.as_directory() as folder:
        state = load_train_state(folder)
    backbone = build_backbone(config.backbone)
    backbone.load_state_dict(state["model"])
    keys = ("epoch", "round", "train_loss", "mask_fraction")
    history = [{k: h[k] for k in keys if k in h} for h in state["history"]]
    return save_backbone_export(storage.join(config.run_dir, "model"), backbone, config.backbone,
                                dict(extra, history=history))  # fmt: skip


def run_finetune(config: FinetuneConfig) -> FinetuneSummary:
    """Fine-tune (or resume) the run, export ``<run>/model`` and return the summary."""
    from openscene_ray.fit3d.finetune.loop import LoopSettings, train_loop_per_worker
    from openscene_ray.kernel.train_runtime import fit

    start = time.perf_counter()
    records, kind = _training_scenes(config)
    rows = view_rows(records, lambda scene_id: scene_uri(config.lifted, scene_id), config.view_stride)
    rounds = [{"round": i} for i in range(config.rounds_per_epoch)]
    log.info("fit3d-finetune %s: %s, %d views of %d scene(s) (%s), %d worker(s), %d round(s) per epoch",
             config.name, config.backbone.name, len(rows), len(records), kind, config.workers,
             config.rounds_per_epoch)  # fmt: skip
    # The workers take their samples from the settings (deterministically, see .data); the
    # dataset Ray Train is given names the rounds.
    result = fit(train_loop_per_worker, {"settings": LoopSettings(config, tuple(rows))}, config, rounds, config.seed)
    extra = {"run": config.name, "lifted": config.lifted, "representation": kind, "manifest": config.manifest,
             "views": len(rows)}  # fmt: skip
    model_uri = export_backbone(config, result.checkpoint, extra)
    return FinetuneSummary(config.name, config.run_dir, model_uri, config.backbone.name + "-fit3d",
                           result.return_value or [], time.perf_counter() - start)  # fmt: skip
