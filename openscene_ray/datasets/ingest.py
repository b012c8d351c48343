"""Ingest: read a dataset layout into a scene manifest plus one points Parquet per scene.

Outputs under ``out`` (any storage URI):

* ``manifest.parquet`` — one row per good scene, sorted by scene id (:data:`manifest.MANIFEST_SCHEMA`);
* ``points/<scene_id>.parquet`` — the scene's points (:data:`manifest.POINTS_SCHEMA`), in file order;
* ``ingest_errors.parquet`` — ``scene_id, source, error`` for every scene that could not be read.

A bad scene never stops the others: its error (naming the scene and the file) is recorded and
the rest are ingested. Re-running over the same input rewrites the same bytes. Points files of
scenes that failed in a later run are left in place but are no longer named by the manifest.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from openscene_ray.datasets.files import normalize_root
from openscene_ray.datasets.layouts import Layout, SceneRef
from openscene_ray.kernel import manifest, storage
from openscene_ray.kernel.errors import InputError, describe_error
from openscene_ray.kernel.scene import SceneError

__all__ = ["ERRORS_SCHEMA", "IngestError", "IngestResult", "ingest", "read_errors"]

log = logging.getLogger(__name__)

ERRORS_SCHEMA = pa.schema([("scene_id", pa.string()), ("source", pa.string()), ("error", pa.string())])


@dataclass(frozen=True)
class IngestError:
    """A scene that could not be ingested: its id, its source URI and the reason."""

    scene_id: str
    source: str
    error: str


@dataclass
class IngestResult:
    manifest_uri: str
    errors_uri: str
    records: list[manifest.SceneRecord]
    errors: list[IngestError]

    @property
    def skipped_views(self) -> int:
        return sum(len(r.skipped_views) for r in self.records)


def ingest(layout: Layout, root: str, out: str, split: str | None = None, workers: int = 8) -> IngestResult:
    """Ingest every scene of ``layout`` under ``root`` (only ``split`` where given) into ``out``."""
    root, out = normalize_root(root), normalize_root(out)
    if not storage.exists(root):
        raise InputError(f"{root}: the dataset root does not exist")
    refs = layout.list_scenes(root, split)
    log.info("ingest: %d scene(s) found under %s (layout %s)", len(refs), root, layout.name)
    errors: list[IngestError] = []
    unique: dict[str, SceneRef] = {}
    for ref in refs:
        if ref.scene_id in unique:
            first = unique[ref.scene_id]
            errors.append(IngestError(ref.scene_id, ref.source, f"duplicate scene id (also {first.source})"))
        else:
            unique[ref.scene_id] = ref

    def one(ref: SceneRef) -> manifest.SceneRecord | IngestError:
        try:
            scene = layout.read_scene(root, ref)
            points_uri = storage.join(out, "points", f"{ref.scene_id}.parquet")
            storage.write_parquet(points_uri, manifest.points_table(scene.xyz, scene.rgb, scene.labels))
            return scene.to_record(layout.name, points_uri)
        except SceneError as exc:
            log.warning("ingest: %s", exc)
            return IngestError(ref.scene_id, ref.source, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad scene must not stop the others
            log.exception("ingest: scene %s failed unexpectedly", ref.scene_id)
            return IngestError(ref.scene_id, ref.source, describe_error(exc))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(one, unique.values()))
    records = [o for o in outcomes if isinstance(o, manifest.SceneRecord)]
    errors += [o for o in outcomes if isinstance(o, IngestError)]
    errors.sort(key=lambda e: (e.scene_id, e.source))
    manifest_uri = storage.join(out, "manifest.parquet")
    errors_uri = storage.join(out, "ingest_errors.parquet")
    manifest.write_manifest(manifest_uri, records)
    storage.write_parquet(
        errors_uri,
        pa.table(
            {
                "scene_id": [e.scene_id for e in errors],
                "source": [e.source for e in errors],
                "error": [e.error for e in errors],
            },
            schema=ERRORS_SCHEMA,
        ),
    )
    return IngestResult(manifest_uri, errors_uri, sorted(records, key=lambda r: r.scene_id), errors)


def read_errors(uri: str) -> list[IngestError]:
    """The rows of an ``ingest_errors.parquet``."""
    return [IngestError(**row) for row in storage.read_parquet(uri).to_pylist()]
