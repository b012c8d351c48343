"""Per-scene fused-feature shards: ``<out>/features/<scene_id>.parquet``.

Schema (plain Arrow types, readable by pyarrow, DuckDB and pandas):

| column | type | meaning |
|---|---|---|
| scene_id | string | the scene (constant within a file) |
| point_index | int32 | index of the point in the scene's points Parquet |
| feature | fixed_size_list<float16>[C] | mean 2D feature over the views that saw the point |
| n_views | uint16 | number of views that saw the point |

Only seen points have rows. File-level metadata (:data:`METADATA_KEYS`) records the digest of
the scene's manifest row, the extractor, feature dim, text model, fusion parameters, point counts
and code version; a file is complete exactly when it exists (writes are atomic) and its metadata
matches the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from openscene_ray import __version__
from openscene_ray.kernel import storage

__all__ = ["FeatureShard", "METADATA_KEYS", "feature_table", "read_features", "shard_uri", "write_features"]

METADATA_KEYS = (
    "scene_id",
    "scene_digest",
    "extractor",
    "feature_dim",
    "text_model",
    "fusion",
    "n_points",
    "n_seen",
    "code_version",
)
ROW_GROUP_ROWS = 1 << 20  # one row group for any realistic scene: a scene reads back in one go


def shard_uri(output_root: str, scene_id: str) -> str:
    return storage.join(output_root, "features", f"{scene_id}.parquet")


def feature_table(
    scene_id: str,
    point_index: np.ndarray,
    features: np.ndarray,
    n_views: np.ndarray,
    metadata: dict[str, object],
) -> pa.Table:
    """The Arrow table of one scene's shard; ``metadata`` values are JSON-encoded."""
    m, c = features.shape
    values = pa.array(np.ascontiguousarray(features, dtype=np.float16).reshape(-1), type=pa.float16())
    table = pa.table(
        {
            "scene_id": pa.array([scene_id] * m, pa.string()),
            "point_index": pa.array(point_index.astype(np.int32), pa.int32()),
            "feature": pa.FixedSizeListArray.from_arrays(values, c),
            "n_views": pa.array(n_views.astype(np.uint16), pa.uint16()),
        }
    )
    return table.replace_schema_metadata({k: json.dumps(v) for k, v in metadata.items()})


def write_features(
    uri: str,
    scene_id: str,
    point_index: np.ndarray,
    features: np.ndarray,
    n_views: np.ndarray,
    metadata: dict[str, object],
) -> int:
    """Write one scene's shard atomically; returns its size in bytes."""
    meta = {"scene_id": scene_id, "code_version": __version__, **metadata}
    table = feature_table(scene_id, point_index, features, n_views, meta)
    return storage.write_parquet(uri, table, row_group_size=ROW_GROUP_ROWS)


@dataclass
class FeatureShard:
    scene_id: str
    point_index: np.ndarray  # int32 [M]
    features: np.ndarray  # float16 [M, C]
    n_views: np.ndarray  # uint16 [M]
    metadata: dict[str, object]

    def dense(self, num_points: int) -> tuple[np.ndarray, np.ndarray]:
        """``(features [N, C] float16 with zeros for unseen points, mask bool [N])``.

        Raises ValueError when the shard was fused for another number of points (a stale shard,
        or a manifest re-ingested since fusion).
        """
        fused_for = self.metadata.get("n_points")
        if fused_for is not None and fused_for != num_points:
            raise ValueError(
                f"{self.scene_id}: the feature shard was fused for {fused_for} points, the scene has "
                f"{num_points}; re-run fusion for this manifest"
            )
        out = np.zeros((num_points, self.features.shape[1]), np.float16)
        out[self.point_index] = self.features
        mask = np.zeros(num_points, bool)
        mask[self.point_index] = True
        return out, mask


def read_metadata(uri: str) -> dict[str, object]:
    """The shard's metadata without reading its data (footer only)."""
    return _known_metadata(storage.read_parquet_metadata(uri))


def _known_metadata(raw: dict[str, str | bytes]) -> dict[str, object]:
    """The JSON-decoded values of the :data:`METADATA_KEYS` in a file's key/value metadata."""
    return {k: json.loads(v) for k, v in raw.items() if k in METADATA_KEYS}


def read_features(uri: str) -> FeatureShard:
    table = storage.read_parquet(uri)
    metadata = _known_metadata({k.decode(): v for k, v in (table.schema.metadata or {}).items()})
    column = table.column("feature").combine_chunks()
    dim = column.type.list_size
    features = column.flatten().to_numpy(zero_copy_only=False).astype(np.float16, copy=False).reshape(-1, dim)
    return FeatureShard(
        scene_id=str(metadata.get("scene_id", "")),
        point_index=table.column("point_index").to_numpy().astype(np.int32),
        features=features,
        n_views=table.column("n_views").to_numpy().astype(np.uint16),
        metadata=metadata,
    )
