"""The lift job: superpixels → superpoints and pseudo-labels for every scene, as Ray Data tasks.

Plan::

    the driver's manifest rows (one scene per block)
      → map(lift_row, num_cpus)   # reads points, cameras, superpixel maps; lifts; writes
                                  # labels/<scene>.parquet and pairs/<scene>.parquet atomically
      → the driver sums the agreement counts (p_labeled, p_sameseg, coverage, accuracy)

No model runs here, so plain CPU tasks do the work. A scene whose labels shard carries this
run's fingerprint is complete and skipped on rerun; a bad scene is a failed row naming its file.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError, scene_error
from openscene_ray.kernel.manifest import SceneRecord, read_manifest, select_records
from openscene_ray.kernel.ray_runtime import (
    configure_data_context,
    init_ray,
    scene_blocks,
)
from openscene_ray.kernel.run_summary import SceneRunSummary
from openscene_ray.ssov.dictionary import Dictionary, load_dictionary
from openscene_ray.ssov.lift.config import LiftConfig
from openscene_ray.ssov.lift.scene import fingerprint, lift_scene, shard_is_complete
from openscene_ray.ssov.store import read_scene_marker, read_vocabulary

__all__ = ["LiftSummary", "lift_row", "run_lift"]

log = logging.getLogger(__name__)
COUNTS = ("n_points", "n_labelled", "n_pseudo", "n_scored", "n_correct", "n_same")


def lift_row(row: dict[str, Any], config: LiftConfig, dictionary: Dictionary) -> dict[str, Any]:
    """CPU task: lift one manifest row; a failure is the scene's row with its error."""
    record = SceneRecord.from_row(row)
    out = dict.fromkeys(COUNTS, 0) | {"scene_id": record.scene_id, "status": "failed", "error": "", "seconds": 0.0}
    try:
        marker = read_scene_marker(config.segments, record.scene_id) or {}
        expected = fingerprint(marker, dictionary, config.settings, config.segments)
        done = lift_scene(record, config.segments, config.lifted, dictionary, config.settings, expected)
        out.update({k: done[k] for k in (*COUNTS, "status", "seconds")})
    except Exception as exc:  # noqa: BLE001 - a bad scene is data
        out["error"] = scene_error(record.scene_id, exc)
    return out


@dataclass
class LiftSummary(SceneRunSummary):
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))

    def as_dict(self) -> dict[str, Any]:
        c = self.counts
        ratio = (lambda a, b: round(c[a] / c[b], 4) if c[b] else None)
        return {**self.scene_counts(), "points": c["n_points"], "p_labeled": ratio("n_labelled", "n_points"),
                "p_sameseg": ratio("n_same", "n_labelled") if c["n_scored"] else None,
                "coverage": ratio("n_pseudo", "n_points"), "accuracy": ratio("n_correct", "n_scored"),
                "seconds": round(self.seconds, 2)}  # fmt: skip


def _dictionary(config: LiftConfig) -> Dictionary:
    vocabulary = read_vocabulary(config.segments)
    dictionary = load_dictionary(config.dictionary or vocabulary.metadata.get("dictionary_spec")
                                 or vocabulary.metadata.get("dictionary", ""))  # fmt: skip
    if dictionary.phrases != vocabulary.phrases:
        raise InputError(f"dictionary {dictionary.name!r} ({dictionary.size} phrases) is not the vocabulary of the "
                         f"segments in {config.segments} ({len(vocabulary.phrases)} phrases)")  # fmt: skip
    return dictionary


def _plan(config: LiftConfig, records: list[SceneRecord], dictionary: Dictionary):
    records = select_records(records, config.scenes, config.manifest)
    if config.overwrite:
        return records, []
    todo, skipped = [], []
    for record in records:
        expected = fingerprint(read_scene_marker(config.segments, record.scene_id) or {}, dictionary,
                               config.settings, config.segments)  # fmt: skip
        (skipped if shard_is_complete(config.lifted, record.scene_id, expected) else todo).append(record)
    return todo, [r.scene_id for r in skipped]


def run_lift(config: LiftConfig) -> LiftSummary:
    """Run the lift job (connecting to or starting Ray) and return its summary."""
    start = time.perf_counter()
    summary = LiftSummary()
    dictionary = _dictionary(config)
    todo, summary.skipped = _plan(config, read_manifest(config.manifest), dictionary)
    log.info("lift %s: %d scene(s) to process, %d already complete", summary.run_id, len(todo), len(summary.skipped))
    if todo:
        init_ray(config.address)
        configure_data_context(config.data)
        rows = scene_blocks(todo).map(lift_row, fn_kwargs={"config": config, "dictionary": dictionary},
                                      num_cpus=config.resources.loader_cpus)  # fmt: skip
        for row in rows.iter_rows():
            if row["status"] != "done":
                summary.failed[row["scene_id"]] = row["error"]
                continue
            summary.done.append(row["scene_id"])
            for key in COUNTS:
                summary.counts[key] += int(row[key])
    summary.seconds = time.perf_counter() - start
    storage.write_bytes(storage.join(config.lifted, "runs", f"{summary.run_id}.json"),
                        json.dumps(summary.as_dict(), indent=2).encode())  # fmt: skip
    return summary
