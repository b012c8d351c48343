"""TMP pre-training as a Ray Train job: train-split scenes become small rows; each worker reads a
scene's points, its lifted pairs and the superpixels' mask embeddings and trains Res16UNet34C
(``.loop``). ``<run>/model`` is the last epoch's network (``extra.head = "features"``), the
starting point of ``openscene-ray train-free --init-from``; evaluation's ``classify`` mode runs it
zero-shot through the vocabulary and the dictionary."""

from __future__ import annotations

import logging
import time

from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.manifest import read_manifest
from openscene_ray.ssov.dictionary import load_dictionary
from openscene_ray.ssov.pretrain.config import PretrainConfig
from openscene_ray.ssov.store import read_vocabulary
from openscene_ray.ssov.training import TrainSummary, split_records, training_rows

__all__ = ["run_pretrain"]

log = logging.getLogger(__name__)


def run_pretrain(config: PretrainConfig) -> TrainSummary:
    """Pre-train (or resume) the run, export ``<run>/model`` and return the summary."""
    from openscene_ray.kernel.train_runtime import fit
    from openscene_ray.models.checkpoint import CheckpointMetadata
    from openscene_ray.ssov.pretrain.loop import LoopSettings, train_loop_per_worker
    from openscene_ray.ssov.training import export_last

    start = time.perf_counter()
    train = split_records(config, read_manifest(config.manifest))
    vocabulary = read_vocabulary(config.segments)
    spec = vocabulary.metadata.get("dictionary_spec") or vocabulary.metadata.get("dictionary", "")
    dictionary = load_dictionary(spec)
    if dictionary.phrases != vocabulary.phrases:
        raise InputError(f"{config.segments}: its vocabulary is not the phrases of dictionary {spec!r}")
    if vocabulary.embeddings.shape[1] != config.model.out_channels or not config.model.normalize:
        raise InputError(f"TMP needs model.out_channels={vocabulary.embeddings.shape[1]} (the embeddings' width in "
                         f"{config.segments}) and model.normalize=true")  # fmt: skip
    settings = LoopSettings(config, vocabulary.embeddings, dictionary.same_group())
    log.info("pretrain %s: %d scenes, %d phrases, %d worker(s)", config.name, len(train), dictionary.size, config.workers)
    result = fit(train_loop_per_worker, {"settings": settings}, config, training_rows(train, config.lifted), config.seed)
    metadata = CheckpointMetadata(
        voxel_size=config.grid.voxel_size, text_model=str(vocabulary.metadata.get("text_model", "")),
        feature_dim=config.model.out_channels, label_set=dictionary.label_set,
        labels=list(get_label_set(dictionary.label_set).class_names),
        extra={"grid": config.grid.model_dump(mode="json"), "head": "features", "stage": "pretrain",
               "run": config.name, "segments": config.segments, "dictionary_spec": spec, "lifted": config.lifted},
    )  # fmt: skip
    model_uri = export_last(config, result.checkpoint, metadata)
    return TrainSummary(config.name, config.run_dir, model_uri, result.return_value or [],
                            time.perf_counter() - start)  # fmt: skip
