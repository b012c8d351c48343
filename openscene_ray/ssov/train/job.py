"""Annotation-free training as a Ray Train job: the train split's scenes become small rows, each
worker reads their points and lifted pseudo-labels, and trains Res16UNet34C (``.loop``). The run
folder is the shared Train runtime's (checkpoints, resume, failure restarts); ``<run>/model`` is
the last epoch's network, a classifier checkpoint (``extra.head = "classes"``) that evaluation's
``classify`` mode runs."""

from __future__ import annotations

import logging
import time

from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.manifest import read_manifest
from openscene_ray.ssov.lifted import labels_uri, read_labels_metadata
from openscene_ray.ssov.train.config import TrainFreeConfig
from openscene_ray.ssov.training import TrainSummary, split_records, training_rows

__all__ = ["run_train_free"]

log = logging.getLogger(__name__)


def _label_set(config: TrainFreeConfig, scene_id: str) -> str:
    label_set = read_labels_metadata(labels_uri(config.lifted, scene_id)).get("label_set")
    classes = get_label_set(str(label_set)).num_classes
    if config.model.out_channels != classes:
        raise InputError(f"model.out_channels={config.model.out_channels} but the pseudo-labels in {config.lifted} "
                         f"are {label_set} classes: set model.out_channels={classes}")  # fmt: skip
    if config.model.normalize:
        raise InputError("model.normalize must be false for annotation-free training (the head gives logits)")
    return str(label_set)


def run_train_free(config: TrainFreeConfig) -> TrainSummary:
    """Train (or resume) the run, export ``<run>/model`` and return the summary."""
    from openscene_ray.kernel.train_runtime import fit
    from openscene_ray.models.checkpoint import CheckpointMetadata
    from openscene_ray.ssov.train.loop import LoopSettings, train_loop_per_worker
    from openscene_ray.ssov.training import export_last

    start = time.perf_counter()
    records = read_manifest(config.manifest)
    train = split_records(config, records)
    label_set = _label_set(config, train[0].scene_id)
    val = [r for r in records if config.validate_split is not None and r.split == config.validate_split]
    settings = LoopSettings(config, config.model.out_channels, tuple((r.scene_id, r.points_uri) for r in val))
    log.info("train-free %s: %d train scenes, %d monitored val scenes, %d worker(s)", config.name, len(train),
             len(val), config.workers)  # fmt: skip
    result = fit(train_loop_per_worker, {"settings": settings}, config, training_rows(train, config.lifted), config.seed)
    metadata = CheckpointMetadata(
        voxel_size=config.grid.voxel_size, text_model="", feature_dim=config.model.out_channels, label_set=label_set,
        labels=list(get_label_set(label_set).class_names),
        extra={"grid": config.grid.model_dump(mode="json"), "head": "classes", "stage": "train-free",
               "run": config.name, "lifted": config.lifted, "init_from": config.init_from},
    )  # fmt: skip
    model_uri = export_last(config, result.checkpoint, metadata)
    return TrainSummary(config.name, config.run_dir, model_uri, result.return_value or [],
                            time.perf_counter() - start)  # fmt: skip
