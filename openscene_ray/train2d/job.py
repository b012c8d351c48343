"""2D training (LSeg's objective) as a Ray Train job: rows, ``TorchTrainer`` wiring, export.

Inputs: a scene manifest whose views carry label maps. Every view of a train-split scene is one
small Ray Data row (:func:`~.data.view_rows`); each Train worker reads and augments its rows in
:class:`~.data.ViewCollate` and trains the LSeg configuration against the frozen text embeddings
of ``text`` (:mod:`.loop`). Val-split views are scored (2D mIoU over every pixel, with the
extraction recipe) every ``validate_every`` epochs.

Run folder ``<storage_path>/<name>/``:

* ``checkpoint_*/state.pt``: Ray Train checkpoints (model, optimizer, scheduler, epoch, history);
* ``model/``: the export of the last epoch (``model.safetensors`` + ``checkpoint.json``: the LSeg
  configuration, the text encoder and its options, the label set, the metric history), which
  the ``lseg`` extractor loads with ``{checkpoint: <run>/model}``.

The export is the last epoch, not the best by validation: the val views are the held-out rooms
the model is measured on, and picking an epoch on them would flatter the measurement.

Resume: rerunning with the same ``name`` and ``storage_path`` continues after the latest
checkpoint; raising ``epochs`` extends a finished run (the poly schedule then decays over the new
total). A worker failure restarts the worker group from the latest checkpoint, up to
``max_failures`` times.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from openscene_ray.kernel import storage
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.manifest import read_manifest
from openscene_ray.kernel.text import build_text_space
from openscene_ray.models.lseg import LSegConfig, lseg_config
from openscene_ray.train2d.config import Train2DConfig

__all__ = ["Train2DSummary", "export_model", "run_train2d"]

log = logging.getLogger(__name__)


@dataclass
class Train2DSummary:
    name: str
    run_dir: str
    model_uri: str
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def last_val(self) -> dict[str, Any] | None:
        validated = [h for h in self.history if not math.isnan(h.get("val_miou", math.nan))]
        return validated[-1] if validated else None

    def as_dict(self) -> dict[str, Any]:
        keys = ("epoch", "train_loss", "lr", "val_miou", "val_macc", "resumed_from")
        last = self.last_val
        return {
            "name": self.name,
            "run_dir": self.run_dir,
            "model": self.model_uri,
            "epochs": len(self.history),
            "val_miou": last["val_miou"] if last else None,
            "val_macc": last["val_macc"] if last else None,
            "history": [{k: h[k] for k in keys if k in h} for h in self.history],
            "seconds": round(self.seconds, 2),
        }


def model_config(config: Train2DConfig, text_dim: int) -> LSegConfig:
    """The configuration to train: ``model`` with ``model_options``, output width = the text space's."""
    options = dict(config.model_options)
    if options.setdefault("out_dim", text_dim) != text_dim:
        raise ValueError(f"model_options.out_dim={options['out_dim']} but the text space ({config.text.spec()}) "
                         f"is {text_dim}-d; the features are trained against it")  # fmt: skip
    model = lseg_config(config.model, **options)
    if model.clip_arch is not None:
        raise ValueError(f"model {config.model!r} holds a CLIP tower; train-2d trains configurations whose text "
                         "side is the `text:` encoder (e.g. lseg-tiny, lseg-small)")  # fmt: skip
    return model


def _loop_settings(config: Train2DConfig, records):
    from openscene_ray.train2d.data import view_rows
    from openscene_ray.train2d.loop import LoopSettings

    text = build_text_space(config.text, config.openscene_compat)
    val = [r for r in records if r.split == "val"]
    return LoopSettings(
        config=config,
        model=model_config(config, int(text.embeddings.shape[1])),
        text=text.embeddings,
        prompt_to_class=text.prompt_to_class,
        num_classes=text.num_classes,
        val_rows=tuple(view_rows(val, config.val_view_stride)),
    )


def export_model(config: Train2DConfig, settings, last_checkpoint) -> str:
    """Write ``<run>/model`` from ``last_checkpoint`` (a ``ray.train.Checkpoint`` of this run)."""
    from openscene_ray.kernel.train_runtime import load_train_state
    from openscene_ray.models.lseg import build_lseg
    from openscene_ray.models.lseg_checkpoint import LSegInfo, save_lseg_export

    if last_checkpoint is None:
        raise RuntimeError(f"{config.run_dir}: training reported no checkpoint; nothing to export")
    with last_checkpoint.as_directory() as folder:
        state = load_train_state(folder)
    net = build_lseg(settings.model)
    net.load_state_dict(state["model"])
    keys = ("epoch", "train_loss", "val_miou", "val_macc", "val_oacc")
    info = LSegInfo(
        text_encoder=config.text.encoder,
        text_options=config.text.options,
        label_set=config.text.label_set,
        labels=list(get_label_set(config.text.label_set).class_names),
        extra={"run": config.name, "epoch": state["epoch"], "manifest": config.manifest,
               "history": [{k: h[k] for k in keys if k in h} for h in state["history"]]},
    )  # fmt: skip
    return save_lseg_export(storage.join(config.run_dir, "model"), net, info)


def run_train2d(config: Train2DConfig) -> Train2DSummary:
    """Train (or resume) the run, export ``<run>/model`` and return the summary."""
    from openscene_ray.kernel.train_runtime import fit
    from openscene_ray.train2d.data import view_rows
    from openscene_ray.train2d.loop import train_loop_per_worker

    start = time.perf_counter()
    records = read_manifest(config.manifest)
    train = [r for r in records if r.split == "train"]
    if not train:
        raise ValueError(f"{config.manifest}: no scene has split 'train'")
    rows = view_rows(train)
    if len(rows) < config.workers:
        raise ValueError(f"{len(rows)} training view(s) cannot feed {config.workers} workers")
    settings = _loop_settings(config, records)
    log.info("train-2d %s: %s, %d train views (%d scenes), %d val views, %d worker(s)", config.name,
             settings.model.name, len(rows), len(train), len(settings.val_rows), config.workers)  # fmt: skip
    result = fit(train_loop_per_worker, {"settings": settings}, config, rows, config.seed)
    model_uri = export_model(config, settings, result.checkpoint)
    history = result.return_value or []
    return Train2DSummary(config.name, config.run_dir, model_uri, history, time.perf_counter() - start)
