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

import numpy as np
from pydantic import Field, field_validator

from openscene_ray.distill.data import ChunkConfig
from openscene_ray.kernel import storage
from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.features import read_metadata, shard_uri
from openscene_ray.kernel.manifest import read_manifest
from openscene_ray.kernel.ray_runtime import DataContextConfig
from openscene_ray.models.augment import AugmentConfig
from openscene_ray.models.minkunet import MinkUNetConfig

__all__ = ["REFERENCE_EFFECTIVE_LR", "DistillConfig", "DistillSummary", "HookConfig", "export_model", "run_distill"]

log = logging.getLogger(__name__)

# The reference sets lr 1e-4 but its per-iteration update writes lr * 10 into every param group
# (``index_split`` is 0), so its network trains at 1e-3.
REFERENCE_EFFECTIVE_LR = 1e-3
MAX_ROW_BLOCKS = 1024
BEST_DIR = "best"


class HookConfig(StrictModel):
    """A ``package.module:function`` called as ``function(epoch=, rank=, **options)`` on every worker
    at the start of every epoch (profiling, fault injection: ``tests/fault_injection.py:fail_once``)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _module_function(cls, value: str) -> str:
        module, _, function = value.partition(":")
        if not module or not function:
            raise ValueError(f"expected 'package.module:function', got {value!r}")
        return value


class DistillConfig(StrictModel):
    """Everything ``openscene-ray distill`` reads: inputs, network, optimisation, validation, Ray."""

    manifest: str = Field(..., description="scene manifest URI (train and val splits)")
    features: str = Field(..., description="the fusion job's output root (features/<scene_id>.parquet)")
    storage_path: str = Field(..., description="Ray Train storage: a local path or s3://bucket/prefix")
    name: str = Field("distill", description="run name; rerunning the same name resumes it")
    model: MinkUNetConfig = Field(default_factory=MinkUNetConfig, description="out_channels = feature dim")
    voxel_size: float = Field(0.02, gt=0, description="metres: 0.02 indoor, 0.05 outdoor (nuScenes)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    chunks: ChunkConfig | None = Field(None, description="train on the reference's random point chunks")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1, description="scenes per worker per step")
    lr: float = Field(1e-4, gt=0, description=f"Adam LR; the reference effectively uses {REFERENCE_EFFECTIVE_LR}")
    poly_power: float = Field(0.9, ge=0, description="LR × (1 - step/total)^power, per step")
    seed: int = Field(0, description="augmentation seed (per epoch and scene)")
    validate_every: int = Field(1, ge=0, description="validate every K epochs and after the last; 0: never")
    label_set: str = "scannet20"
    text_encoder: str = Field("open_clip", description="text encoder kind for validation")
    text_options: dict[str, Any] = Field(default_factory=lambda: {"arch": "ViT-L-14-336"})
    openscene_compat: bool = Field(False, description="reference prompts and mIoU-divides-by-K quirk")
    workers: int = Field(1, ge=1, description="Train workers (Ray Train's local mode keeps no checkpoints)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, description="also the worker's torch threads")
    amp: bool = Field(True, description="mixed precision (autocast + GradScaler) on CUDA")
    keep_checkpoints: int = Field(2, ge=1, description="latest checkpoints kept (best/ is kept apart)")
    max_failures: int = Field(3, ge=-1, description="worker-group restarts from the latest checkpoint")
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    epoch_hook: HookConfig | None = None

    @property
    def run_dir(self) -> str:
        return storage.join(self.storage_path, self.name)


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
        raise ValueError(f"{config.manifest}: no scene has split 'train'")
    present = {uri.rstrip("/").rsplit("/", 1)[-1] for uri in storage.listdir(storage.join(config.features, "features"))}
    missing = [r.scene_id for r in train if f"{r.scene_id}.parquet" not in present]
    if missing:
        raise ValueError(
            f"{len(missing)} train scene(s) have no feature shard under {config.features}/features "
            f"(run the fusion job first): {missing[:10]}"
        )
    metadata = read_metadata(shard_uri(config.features, train[0].scene_id))
    if metadata.get("feature_dim") != config.model.out_channels:
        raise ValueError(
            f"model.out_channels={config.model.out_channels} but the feature shards under {config.features} have "
            f"feature_dim={metadata.get('feature_dim')} (text model {metadata.get('text_model')!r}); "
            f"set model.out_channels={metadata.get('feature_dim')}"
        )
    return metadata


def _loop_settings(config: DistillConfig, val, shard_metadata: dict[str, Any], steps_per_epoch: int):
    from openscene_ray.distill.loop import LoopSettings
    from openscene_ray.evaluation.scene_eval import build_text_space
    from openscene_ray.kernel.labels import get_label_set
    from openscene_ray.models.checkpoint import CheckpointMetadata

    text = None
    if val and config.validate_every > 0:
        text = build_text_space(config.label_set, config.text_encoder, config.text_options, config.openscene_compat)
        if text.embeddings.shape[1] != config.model.out_channels:
            raise ValueError(
                f"validation text encoder {config.text_encoder} {config.text_options} gives "
                f"{text.embeddings.shape[1]}-d embeddings but the network outputs {config.model.out_channels}"
            )
    metadata = CheckpointMetadata(
        voxel_size=config.voxel_size,
        text_model=str(shard_metadata.get("text_model", "")),
        feature_dim=config.model.out_channels,
        label_set=config.label_set,
        labels=list(get_label_set(config.label_set).class_names),
        extra={"run": config.name, "extractor": shard_metadata.get("extractor"), "features": config.features},
    )
    return LoopSettings(
        config=config,
        steps_per_epoch=steps_per_epoch,
        val_scenes=tuple((r.scene_id, r.points_uri) for r in val),
        text=text,
        metadata=metadata,
        best_uri=storage.join(config.run_dir, BEST_DIR),
    )


def export_model(config: DistillConfig, metadata, last_checkpoint=None) -> tuple[str, str]:
    """Write ``<run>/model`` from ``<run>/best`` if validation ever saved one, else from
    ``last_checkpoint`` (a ``ray.train.Checkpoint`` of this run); returns ``(uri, source)``."""
    from openscene_ray.distill.loop import load_train_state
    from openscene_ray.models import build_model, load_checkpoint, save_checkpoint
    from openscene_ray.models.checkpoint import CONFIG_NAME

    best_uri = storage.join(config.run_dir, BEST_DIR)
    if storage.exists(storage.join(best_uri, CONFIG_NAME)):
        model, model_config, metadata = load_checkpoint(best_uri)
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
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from openscene_ray.distill.data import training_rows
    from openscene_ray.distill.loop import train_loop_per_worker
    from openscene_ray.kernel.ray_runtime import configure_data_context, init_ray

    start = time.perf_counter()
    records = read_manifest(config.manifest)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    shard_metadata = _check_inputs(config, train)
    rows = training_rows(train, config.features, config.chunks)
    world = config.workers
    if len(rows) < world:
        raise ValueError(f"{len(rows)} training row(s) cannot feed {world} workers; lower workers or add chunks")
    # Train splits the dataset with equal=True: every rank gets len(rows) // world rows.
    steps_per_epoch = math.ceil((len(rows) // world) / config.batch_size)
    settings = _loop_settings(config, val, shard_metadata, steps_per_epoch)
    log.info(
        "distill %s: %d train rows (%d scenes), %d val scenes, %d worker(s), %d steps/epoch",
        config.name, len(rows), len(train), len(val), world, steps_per_epoch,
    )  # fmt: skip

    init_ray(config.address)
    configure_data_context(config.data)
    # Rows are shuffled once here and their blocks again every epoch (a full random_shuffle costs
    # an all-to-all exchange per epoch for a few small rows).
    rows = [rows[i] for i in np.random.default_rng(config.seed).permutation(len(rows))]
    dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_ROW_BLOCKS)).randomize_block_order()
    resources = {"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})}
    scaling = ScalingConfig(num_workers=config.workers, use_gpu=config.use_gpu, resources_per_worker=resources)
    filesystem, path = storage.to_pyarrow_filesystem(config.storage_path)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"settings": settings},
        scaling_config=scaling,
        run_config=RunConfig(
            name=config.name,
            storage_path=path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    model_uri, source = export_model(config, settings.metadata, result.checkpoint)
    history = result.return_value or []
    return DistillSummary(config.name, config.run_dir, model_uri, source, history, time.perf_counter() - start)
