"""The segment job: every view of every scene → SSOV superpixels in the segments store.

Plan (source ``extractor``)::

    manifest rows (one scene per block)
      → map(load_scene_row, num_cpus)                 # fetch + decode views (CPU tasks)
      → map_batches(SegmentActor, ActorPoolStrategy)  # the 2D model once per actor (GPU-ready);
            └─ per view: features → argmax over the vocabulary → superpixels; writes the scene's
               frames, then its scene.json, atomically; returns one small row per scene

Plan (source ``import``): manifest rows → map(import_scene_row) (CPU tasks reading the original
scripts' PNG/JSON/.pt files). The vocabulary (phrases + text embeddings) is written once by the
driver. A scene whose scene.json carries this run's fingerprint is complete and skipped on rerun;
a bad scene is a failed row naming its file, never a failed job.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError, scene_error
from openscene_ray.kernel.manifest import SceneRecord, read_manifest, select_records
from openscene_ray.kernel.ray_runtime import (
    actor_pool_options,
    configure_data_context,
    init_ray,
    scene_blocks,
)
from openscene_ray.kernel.run_summary import SceneRunSummary
from openscene_ray.ssov.dictionary import load_dictionary
from openscene_ray.ssov.segment.config import SegmentConfig
from openscene_ray.ssov.store import (
    read_scene_marker,
    read_vocabulary,
    write_vocabulary,
)

__all__ = ["SegmentActor", "SegmentSummary", "run_segment"]

log = logging.getLogger(__name__)


def _row(scene_id: str, status: str = "done", error: str = "", document: dict | None = None) -> dict[str, Any]:
    frames = (document or {}).get("frames", [])
    return {"scene_id": scene_id, "status": status, "error": error, "views": len(frames),
            "superpixels": int(sum(f["superpixels"] for f in frames)),
            "seconds": float((document or {}).get("seconds", 0.0))}  # fmt: skip


def load_scene_row(row: dict[str, Any]) -> dict[str, Any]:
    """CPU stage: one manifest row → its packed views (or the error)."""
    from openscene_ray.fusion.payload import pack_scene
    from openscene_ray.kernel.manifest import load_scene

    record = SceneRecord.from_row(row)
    try:
        return {"scene_id": record.scene_id, "payload": pack_scene(load_scene(record)), "error": ""}
    except Exception as exc:  # noqa: BLE001 - a bad scene is data
        return {"scene_id": record.scene_id, "payload": b"", "error": scene_error(record.scene_id, exc)}


def import_scene_row(row: dict[str, Any], config: SegmentConfig, vocabulary_size: int) -> dict[str, Any]:
    """CPU stage (source ``import``): convert one scene's original outputs."""
    from openscene_ray.ssov.segment.importer import import_scene, read_token_map

    record = SceneRecord.from_row(row)
    try:
        token_map = read_token_map(config.imported.token_map)
        document = import_scene(record, config.imported, vocabulary_size, config.segments, config.fingerprint(),
                                token_map)  # fmt: skip
        return _row(record.scene_id, document=document)
    except Exception as exc:  # noqa: BLE001
        return _row(record.scene_id, "failed", scene_error(record.scene_id, exc))


class SegmentActor:
    """Loads the 2D extractor once; segments one scene per call."""

    def __init__(self, config: SegmentConfig, text: np.ndarray, use_gpu: bool):
        import torch

        from openscene_ray.extractors import build_extractor

        options = dict(config.extractor.options)
        options.setdefault("device", "cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.extractor = build_extractor(config.extractor.name, **options)
        self.text = torch.from_numpy(np.array(text, np.float32)).to(self.extractor.device)
        self.config = config
        self.mismatch = ""
        if self.extractor.text_model != config.text.spec():
            self.mismatch = (f"the extractor's features live in text space {self.extractor.text_model!r} but the "
                             f"vocabulary is embedded by {config.text.spec()!r}")  # fmt: skip
            if config.text.on_mismatch == "warn":
                log.warning("%s", self.mismatch)
                self.mismatch = ""

    def __call__(self, batch) -> dict[str, list]:
        from openscene_ray.fusion.payload import unpack_scene
        from openscene_ray.ssov.segment.core import segment_scene

        rows = []
        for loaded in batch.to_pylist():
            scene_id, error = loaded["scene_id"], loaded["error"] or self.mismatch
            if error:
                rows.append(_row(scene_id, "failed", error))
                continue
            try:
                _, views = unpack_scene(scene_id, loaded["payload"])
                document = segment_scene(scene_id, views, self.extractor, self.text, self.config.segments,
                                         self.config.fingerprint(), self.config.views_per_batch)  # fmt: skip
                rows.append(_row(scene_id, document=document))
            except Exception as exc:  # noqa: BLE001
                rows.append(_row(scene_id, "failed", scene_error(scene_id, exc)))
        return {key: [r[key] for r in rows] for key in rows[0]} if rows else {}


@dataclass
class SegmentSummary(SceneRunSummary):
    superpixels: int = 0
    views: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {**self.scene_counts(), "views": self.views, "superpixels": self.superpixels,
                "seconds": round(self.seconds, 2)}  # fmt: skip


def _plan(config: SegmentConfig, records: list[SceneRecord]) -> tuple[list[SceneRecord], list[str]]:
    records = select_records(records, config.scenes, config.manifest)
    if config.overwrite:
        return records, []
    done = {r.scene_id for r in records if (read_scene_marker(config.segments, r.scene_id) or {}).get("fingerprint")
            == config.fingerprint()}  # fmt: skip
    return [r for r in records if r.scene_id not in done], sorted(done)


def _vocabulary(config: SegmentConfig) -> np.ndarray:
    """Embed (or import) the dictionary's phrases and write the store's vocabulary; a store made
    with another vocabulary or text model is refused unless ``overwrite``."""
    from openscene_ray.kernel.text import build_text_encoder

    dictionary = load_dictionary(config.dictionary)
    if config.source == "import":
        from openscene_ray.ssov.segment.importer import load_text_embedding

        text, text_model = load_text_embedding(config.imported, dictionary.size), f"import:{config.imported.kind}"
    else:
        text = build_text_encoder(config.text.encoder, **config.text.options).encode(dictionary.prompts())
        text_model = config.text.spec()
    if not config.overwrite and storage.exists(storage.join(config.segments, "vocabulary.json")):
        existing = read_vocabulary(config.segments)
        if existing.phrases != dictionary.phrases or existing.metadata.get("text_model") != text_model:
            raise InputError(f"{config.segments} holds superpixels of another vocabulary or text model "
                             f"({existing.metadata.get('text_model')!r}); use another folder or overwrite")  # fmt: skip
    write_vocabulary(config.segments, list(dictionary.phrases), text,
                     {"dictionary": dictionary.name, "dictionary_spec": config.dictionary,
                      "label_set": dictionary.label_set, "text_model": text_model, "source": config.source})  # fmt: skip
    return text


def _dataset(config: SegmentConfig, todo: list[SceneRecord], text: np.ndarray):
    import ray.data

    res = config.resources
    blocks = scene_blocks(todo)
    if config.source == "import":
        return blocks.map(import_scene_row, fn_kwargs={"config": config, "vocabulary_size": int(text.shape[0])},
                          num_cpus=res.loader_cpus)  # fmt: skip
    loaded = blocks.map(load_scene_row, num_cpus=res.loader_cpus,
                        compute=ray.data.TaskPoolStrategy(size=res.loader_concurrency) if res.loader_concurrency else None)
    return loaded.map_batches(SegmentActor, fn_constructor_kwargs={"config": config, "text": text,
                                                                  "use_gpu": res.gpus_per_actor > 0},
                              batch_size=1, batch_format="pyarrow", **actor_pool_options(res))  # fmt: skip


def run_segment(config: SegmentConfig) -> SegmentSummary:
    """Run the segment job (connecting to or starting Ray) and return its summary."""
    start = time.perf_counter()
    summary = SegmentSummary()
    text = _vocabulary(config)
    todo, summary.skipped = _plan(config, read_manifest(config.manifest))
    log.info("segment %s: %d scene(s) to process, %d already complete", summary.run_id, len(todo), len(summary.skipped))
    if todo:
        init_ray(config.address)
        configure_data_context(config.data)
        for row in _dataset(config, todo, text).iter_rows():
            if row["status"] == "done":
                summary.done.append(row["scene_id"])
                summary.views += int(row["views"])
                summary.superpixels += int(row["superpixels"])
            else:
                summary.failed[row["scene_id"]] = row["error"]
    summary.seconds = time.perf_counter() - start
    storage.write_bytes(storage.join(config.segments, "runs", f"{summary.run_id}.json"),
                        json.dumps(summary.as_dict(), indent=2).encode())  # fmt: skip
    return summary
