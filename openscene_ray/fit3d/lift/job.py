"""FiT3D's Stage I as a Ray Data job: every scene's backbone features lifted into 3D.

Plan::

    the driver's manifest rows to lift (one scene per block)
      → map_batches(LiftActor, ActorPoolStrategy(min, max), num_gpus, batch_size=1)
            └─ loads the scene, computes the backbone's targets, fits the Gaussians (or fuses the
               points), scores the held-out views, writes scenes/<id>.safetensors then .json
      → the driver streams the small rows (summary: runs/<run_id>.json)

The original scales Stage I with one shell command per scene; here an autoscaling actor pool
loads the backbone once per actor (on a GPU with ``resources.gpus_per_actor``; the Gaussians then
rasterise with gsplat) and takes one scene per call. Complete scenes are skipped on rerun; a bad
scene becomes a failed row naming its file or field.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from openscene_ray.fit3d.lift.config import LiftConfig
from openscene_ray.fit3d.lift.scene import (
    ROW_KEYS,
    failed_row,
    lift_scene,
    scene_is_complete,
)
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError, scene_error
from openscene_ray.kernel.manifest import SceneRecord, read_manifest
from openscene_ray.kernel.ray_runtime import (
    actor_pool_options,
    configure_data_context,
    init_ray,
    scene_blocks,
)
from openscene_ray.kernel.run_summary import SceneRunSummary

__all__ = ["LiftActor", "LiftSummary", "plan_scenes", "run_lift"]

log = logging.getLogger(__name__)
METRICS = ("heldout_l1", "heldout_cosine", "heldout_coverage")


class LiftActor:
    """Builds the backbone once, then lifts one scene per call."""

    def __init__(self, config: LiftConfig, use_gpu: bool):
        import torch

        from openscene_ray.models.backbone_io import build_backbone

        torch.set_num_threads(max(1, int(config.resources.cpus_per_actor)))
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.backbone = build_backbone(config.backbone).to(self.device).eval().requires_grad_(False)
        self.config = config

    def __call__(self, batch) -> dict[str, list]:
        rows = []
        for row in batch.to_pylist():
            record = SceneRecord.from_row(row)
            try:
                rows.append(lift_scene(record, self.backbone, self.config, self.device))
            except Exception as exc:  # noqa: BLE001 - a bad scene is data, never a failed job
                rows.append(failed_row(record.scene_id, scene_error(record.scene_id, exc), self.config.representation))
        return {key: [r[key] for r in rows] for key in ROW_KEYS}


@dataclass
class LiftSummary(SceneRunSummary):
    lifted: str = ""
    representation: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        scored = [r for r in self.rows if r["status"] == "done" and not math.isnan(r["heldout_l1"])]
        means = {k: round(sum(r[k] for r in scored) / len(scored), 4) if scored else None for k in METRICS}
        return {**self.scene_counts(), "lifted": self.lifted, "representation": self.representation,
                **means, "seconds": round(self.seconds, 2),
                "scenes": [{k: _finite(r[k]) for k in ROW_KEYS if k != "error"} for r in self.rows]}  # fmt: skip


def _finite(value):
    """``value`` with NaN as None (JSON has no NaN)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def plan_scenes(config: LiftConfig, records: list[SceneRecord]) -> tuple[list[SceneRecord], list[str]]:
    """``(scenes to lift, scene ids skipped as complete)`` after the split and scene filters."""
    if config.scenes is not None:
        unknown = set(config.scenes) - {r.scene_id for r in records}
        if unknown:
            raise InputError(f"scenes not in the manifest {config.manifest}: {sorted(unknown)}")
        records = [r for r in records if r.scene_id in set(config.scenes)]
    if config.splits is not None:
        records = [r for r in records if r.split in set(config.splits)]
    if not records:
        raise InputError(f"{config.manifest}: no scene left to lift (splits={config.splits}, scenes={config.scenes})")
    if config.overwrite:
        return records, []
    todo = [r for r in records if not scene_is_complete(config.lifted, r, config)]
    done = {r.scene_id for r in todo}
    return todo, [r.scene_id for r in records if r.scene_id not in done]


def run_lift(config: LiftConfig) -> LiftSummary:
    """Run Stage I (connecting to or starting Ray) and return its summary."""
    start = time.perf_counter()
    summary = LiftSummary(lifted=config.lifted, representation=config.representation)
    run_id = summary.run_id
    todo, summary.skipped = plan_scenes(config, read_manifest(config.manifest))
    log.info("fit3d-lift %s: %d scene(s) to lift, %d complete", run_id, len(todo), len(summary.skipped))
    if todo:
        init_ray(config.address)
        configure_data_context(config.data)
        rows = scene_blocks(todo).map_batches(
            LiftActor,
            fn_constructor_kwargs={"config": config, "use_gpu": config.resources.gpus_per_actor > 0},
            batch_size=1,
            batch_format="pyarrow",
            **actor_pool_options(config.resources),
        )
        for row in rows.iter_rows():
            row = dict(row)
            summary.rows.append(row)
            if row["status"] == "done":
                summary.done.append(row["scene_id"])
            else:
                summary.failed[row["scene_id"]] = row["error"]
    summary.seconds = time.perf_counter() - start
    storage.write_bytes(storage.join(config.lifted, "runs", f"{run_id}.json"),
                        json.dumps(summary.as_dict(), indent=2).encode())  # fmt: skip
    return summary
