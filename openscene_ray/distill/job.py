"""3D distillation (paper Sec. 3.2) as a Ray Train job: config, ``TorchTrainer`` wiring, export.

Inputs: a scene manifest and the fusion job's feature shards (``<features>/features/<id>.parquet``).
Train-split scenes (optionally × the reference's random point chunks) become small Ray Data rows;
each Train worker loads, augments and voxelises its rows in :class:`~.data.SparseCollate` and
distils the fused 2D features into a MinkUNet with the cosine loss (:mod:`.loop`). Val-split
scenes are scored every ``validate_every`` epochs with the evaluation job's own per-scene code.

Run folder ``<storage_path>/<name>/``:

* ``checkpoint_*/state.pt``: Ray Train checkpoints (model, optimizer, scheduler, epoch, history);
* ``best/``: the model with the best val mIoU so far, in the export format;
* ``model/``: the final export (``openscene_ray.models.load_checkpoint`` reads it without Ray).

Checkpoint retention. Ray 2.60's ``CheckpointConfig`` keeps either the ``num_to_keep`` latest
checkpoints (no score attribute) or the ``num_to_keep`` best by a score, always retaining the
latest one so a run can resume; it cannot say "the last N plus the best". So Ray keeps the last
``keep_checkpoints`` and rank 0 maintains ``best/`` itself, replacing it whenever a validation
beats the mIoU recorded in ``best/`` (the one source of truth, also across failures and reruns).

Export. ``model/`` is ``best/`` when validation ran at least once (best by val mIoU), otherwise
the last checkpoint; ``metadata.extra`` records which (``source``), its epoch and val metrics.

Resume. Ray Train V2 resumes a run that is started again with the same ``name`` and
``storage_path`` (and the same Ray version): training continues after the latest checkpoint.
Raising ``epochs`` on a rerun extends a finished run; the poly schedule then decays over the new
total. A worker failure restarts the worker group from the latest checkpoint, up to
``max_failures`` times.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from openscene_ray.distill.config import DistillConfig
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.features import list_shard_ids, read_metadata, shard_uri
from openscene_ray.kernel.manifest import read_manifest

__all__ = ["DistillSummary", "export_model", "run_distill"]

log = logging.getLogger(__name__)

@dataclass
class DistillSummary:
    name: str
    run_dir: str
    model_uri: str
    source: str  # "best" or "last"
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> dict[str, Any] | None:
        validated = [h for h in self.history if not math.isnan(h.get("val_miou", math.nan))]
        return max(validated, key=lambda h: h["val_miou"]) if validated else None

    def as_dict(self) -> dict[str, Any]:
        keys = ("epoch", "train_loss", "val_miou", "val_macc", "resumed_from")
        best = self.best
        return {
            "name": self.name,
            "run_dir": self.run_dir,
            "model": self.model_uri,
            "source": self.source,
            "epochs": len(self.history),
            "best_epoch": best["epoch"] if best else None,
            "best_val_miou": best["val_miou"] if best else None,
            "history": [{k: h[k] for k in keys if k in h} for h in self.history],
            "seconds": round(self.seconds, 2),
        }


def _check_inputs(config: DistillConfig, train) -> dict[str, Any]:
    """Fail early on missing shards or a head that does not match them; returns a shard's metadata."""
    if not train:
        raise InputError(f"{config.manifest}: no scene has split 'train'")
    present = list_shard_ids(config.fused)
    missing = [r.scene_id for r in train if r.scene_id not in present]
    if missing:
        raise InputError(
            f"{len(missing)} train scene(s) have no feature shard in the fused output {config.fused} "
            f"(run the fusion job first): {missing[:10]}"
        )
    metadata = read_metadata(shard_uri(config.fused, train[0].scene_id))
    if metadata.get("feature_dim") != config.model.out_channels:
        raise InputError(
            f"model.out_channels={config.model.out_channels} but the feature shards in {config.fused} have "
            f"feature_dim={metadata.get('feature_dim')} (text model {metadata.get('text_model')!r}); "
            f"set model.out_channels={metadata.get('feature_dim')}"
        )
    return metadata


def _loop_settings(config: DistillConfig, val, shard_metadata: dict[str, Any], steps_per_epoch: int):
    from openscene_ray.distill.loop import LoopSettings
    from openscene_ray.kernel.labels import get_label_set
    from openscene_ray.kernel.text import build_text_space
    from openscene_ray.models.checkpoint import CheckpointMetadata

    text = None
    if val and config.validate_every > 0:
        text = build_text_space(config.text, config.openscene_compat)
        if text.embeddings.shape[1] != config.model.out_channels:
            raise InputError(
                f"validation text encoder {config.text.encoder} {config.text.options} gives "
                f"{text.embeddings.shape[1]}-d embeddings but the network outputs {config.model.out_channels}"
            )
    metadata = CheckpointMetadata(
        voxel_size=config.voxel_size,
        text_model=str(shard_metadata.get("text_model", "")),
        feature_dim=config.model.out_channels,
        label_set=config.text.label_set,
        labels=list(get_label_set(config.text.label_set).class_names),
        extra={"run": config.name, "extractor": shard_metadata.get("extractor"), "fused": config.fused},
    )
    return LoopSettings(
        config=config,
        steps_per_epoch=steps_per_epoch,
        val_scenes=tuple((r.scene_id, r.points_uri) for r in val),
        text=text,
        metadata=metadata,
    )


def export_model(config: DistillConfig, metadata, last_checkpoint=None) -> tuple[str, str]:
    """Write ``<run>/model`` from ``<run>/best`` if validation ever saved one, else from
    ``last_checkpoint`` (a ``ray.train.Checkpoint`` of this run); returns ``(uri, source)``."""
    from openscene_ray.kernel.train_runtime import load_train_state
    from openscene_ray.models import build_model, load_checkpoint, save_checkpoint
    from openscene_ray.models.checkpoint import CONFIG_NAME

    if storage.exists(storage.join(config.best_uri, CONFIG_NAME)):
        model, model_config, metadata = load_checkpoint(config.best_uri)
        source = "best"
    else:
        if last_checkpoint is None:
            raise RuntimeError(f"{config.run_dir}: training reported no checkpoint; nothing to export")
        with last_checkpoint.as_directory() as folder:
            state = load_train_state(folder)
        model_config, model = config.model, build_model(config.model)
        model.load_state_dict(state["model"])
        last = state["history"][-1] if state["history"] else {}
        metadata = metadata.model_copy(
            update={"extra": dict(metadata.extra, epoch=state["epoch"], train_loss=last.get("train_loss"))}
        )
        source = "last"
    metadata = metadata.model_copy(update={"extra": dict(metadata.extra, source=source)})
    model_uri = storage.join(config.run_dir, "model")
    save_checkpoint(model_uri, model, model_config, metadata)
    return model_uri, source


def run_distill(config: DistillConfig) -> DistillSummary:
    """Train (or resume) the run, export ``<run>/model`` and return the summary."""
    from openscene_ray.distill.data import training_rows
    from openscene_ray.distill.loop import train_loop_per_worker
    from openscene_ray.kernel.train_runtime import fit

    start = time.perf_counter()
    records = read_manifest(config.manifest)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    shard_metadata = _check_inputs(config, train)
    rows = training_rows(train, config.fused, config.chunks)
    world = config.workers
    if len(rows) < world:
        raise InputError(f"{len(rows)} training row(s) cannot feed {world} workers; lower workers or add chunks")
    # Train splits the dataset with equal=True: every rank gets len(rows) // world rows.
    steps_per_epoch = math.ceil((len(rows) // world) / config.batch_size)
    settings = _loop_settings(config, val, shard_metadata, steps_per_epoch)
    log.info(
        "distill %s: %d train rows (%d scenes), %d val scenes, %d worker(s), %d steps/epoch",
        config.name, len(rows), len(train), len(val), world, steps_per_epoch,
    )  # fmt: skip

    result = fit(train_loop_per_worker, {"settings": settings}, config, rows, config.seed)
    model_uri, source = export_model(config, settings.metadata, result.checkpoint)
    history = result.return_value or []
    return DistillSummary(config.name, config.run_dir, model_uri, source, history, time.perf_counter() - start)
