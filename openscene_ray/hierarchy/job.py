"""The hierarchy job on Ray Data: scenes → (SAM masks) → train + segment + score, one scene per call.

Plan::

    the driver's manifest rows to process (Arrow columns, one scene per block)
      → [map_batches(MaskActor, ActorPoolStrategy, num_gpus=sam.resources)]   # only with a sam section:
            └─ writes <masks>/<scene>/seg/<frame>/*.png + seg_hierarchy/ (views already done are kept)
      → map_batches(HierarchyActor, ActorPoolStrategy, num_gpus=resources, batch_size=1)
            └─ trains the scene's field, segments it, transfers to the views, scores; writes the scene's
               outputs, its summary last, then its index row; returns the small index row
      → the driver streams the rows into the run summary

A scene's outputs are complete once ``scenes/<scene>.json`` exists with the run's digest, so
reruns skip it; a failed scene is an index row with its error, never a failed job.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from openscene_ray.hierarchy.config import HierarchyConfig, SamConfig
from openscene_ray.hierarchy.outputs import (
    INDEX_SCHEMA,
    index_row,
    mean_metrics,
    plan_scenes,
    read_summary,
    write_index_row,
    write_scene,
)
from openscene_ray.hierarchy.scene import process_scene
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import describe_error
from openscene_ray.kernel.manifest import SceneRecord, load_scene, read_manifest
from openscene_ray.kernel.ray_runtime import (
    actor_pool_options,
    configure_data_context,
    init_ray,
    scene_blocks,
)
from openscene_ray.kernel.run_summary import SceneRunSummary

__all__ = ["HierarchyActor", "HierarchySummary", "MaskActor", "build_dataset", "run_hierarchy"]

log = logging.getLogger(__name__)


class MaskActor:
    """Builds SAM's automatic mask generator once, then writes one scene's view masks per call."""

    def __init__(self, sam: SamConfig, masks_root: str, use_gpu: bool):
        from openscene_ray.hierarchy.sam import build_mask_generator
        from openscene_ray.hierarchy.train import pick_device

        self.generator = build_mask_generator(sam, pick_device("auto" if use_gpu else "cpu"))
        self.sam, self.root = sam, masks_root

    def __call__(self, batch):
        from openscene_ray.hierarchy.sam import write_scene_masks

        errors = []
        for row in batch.to_pylist():
            try:
                scene = load_scene(SceneRecord.from_row(row), with_labels=False)
                write_scene_masks(self.generator, scene, self.root, self.sam.min_area, self.sam.overwrite)
                errors.append("")
            except Exception as exc:  # noqa: BLE001 - the scene's error row, not a failed job
                errors.append("SAM masks: " + describe_error(exc))
        return batch.append_column("mask_error", [errors])


class HierarchyActor:
    """Processes one scene per call: train, segment, transfer, score, write (see the module docstring)."""

    def __init__(self, config: HierarchyConfig, run_id: str):
        self.config, self.run_id = config, run_id

    def _scene(self, record: SceneRecord, mask_error: str) -> dict[str, Any]:
        start = time.perf_counter()
        if mask_error:
            return index_row(record, self.run_id, status="failed", error=mask_error)
        try:
            result = process_scene(record, self.config)
            summary = write_scene(self.config.output, record, result, self.config, self.run_id)
        except Exception as exc:  # noqa: BLE001 - recorded as the scene's error row
            return index_row(record, self.run_id, status="failed", error=describe_error(exc),
                             seconds=time.perf_counter() - start)  # fmt: skip
        return index_row(
            record, self.run_id, n_seen=summary["n_seen"], n_views_trained=summary["views_trained"],
            view_errors=json.dumps(summary["view_errors"]), steps=summary["train"]["steps"],
            seconds=time.perf_counter() - start, metrics=json.dumps(summary["metrics"]),
        )  # fmt: skip

    def __call__(self, batch) -> dict[str, list]:
        rows = []
        for loaded in batch.to_pylist():
            row = self._scene(SceneRecord.from_row(loaded), loaded.get("mask_error") or "")
            try:
                write_index_row(self.config.output, row)
                row["index_error"] = ""
            except Exception as exc:  # noqa: BLE001 - the driver writes it again
                row["index_error"] = describe_error(exc)
            rows.append(row)
        return {key: [r[key] for r in rows] for key in [*INDEX_SCHEMA.names, "index_error"]}


@dataclass
class HierarchySummary(SceneRunSummary):
    """What one run did (``runs/<run_id>.json``), with the mean metrics of every complete scene."""

    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.scene_counts(), "seconds": round(self.seconds, 2), "metrics": self.metrics}


def build_dataset(config: HierarchyConfig, todo: list[SceneRecord], run_id: str):
    """The lazy Ray Data plan for ``todo`` (see the module docstring)."""
    ds = scene_blocks(todo)
    if config.sam is not None:
        sam_resources = config.sam.resources
        ds = ds.map_batches(
            MaskActor,
            fn_constructor_kwargs={"sam": config.sam, "masks_root": config.masks_root,
                                   "use_gpu": sam_resources.gpus_per_actor > 0},  # fmt: skip
            batch_size=1, batch_format="pyarrow", **actor_pool_options(sam_resources),
        )  # fmt: skip
    return ds.map_batches(
        HierarchyActor, fn_constructor_kwargs={"config": config, "run_id": run_id}, batch_size=1,
        batch_format="pyarrow", **actor_pool_options(config.resources),
    )  # fmt: skip


def run_hierarchy(config: HierarchyConfig) -> HierarchySummary:
    """Run the job (connecting to or starting Ray) and return its summary."""
    start = time.perf_counter()
    summary = HierarchySummary()
    run_id = summary.run_id
    records = read_manifest(config.manifest)
    todo, summary.skipped = plan_scenes(config, records)
    log.info("hierarchy %s: %d scene(s) to process, %d already complete", run_id, len(todo), len(summary.skipped))
    if todo:
        init_ray(config.address)
        configure_data_context(config.data)
        unwritten = []
        for row in build_dataset(config, todo, run_id).iter_rows():
            row = dict(row)
            if row.pop("index_error"):
                unwritten.append(row)
            if row["status"] == "done":
                summary.done.append(row["scene_id"])
            else:
                summary.failed[row["scene_id"]] = row["error"]
        for row in unwritten:
            write_index_row(config.output, row)
    complete = [read_summary(config.output, sid) for sid in summary.done + summary.skipped]
    summary.metrics = mean_metrics([s for s in complete if s])
    summary.seconds = time.perf_counter() - start
    uri = storage.join(config.output, "runs", f"{run_id}.json")
    storage.write_bytes(uri, json.dumps(summary.as_dict(), indent=2).encode())
    return summary
