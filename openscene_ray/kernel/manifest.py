"""The scene manifest: the one input format of every stage after ingest.

A manifest is a Parquet file with one row per scene (:data:`MANIFEST_SCHEMA`). Each row names the
scene's points Parquet (``x y z r g b label``, :data:`POINTS_SCHEMA`) and lists its views with
file URIs, intrinsics (already scaled to the fusion image size) and camera-to-world poses.
Images whose stored size differs from the fusion size are resized on load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from openscene_ray.kernel import images, storage
from openscene_ray.kernel.errors import InputError, OpenSceneError
from openscene_ray.kernel.scene import IGNORE_LABEL, Scene, SceneError, View

__all__ = [
    "MANIFEST_SCHEMA",
    "ManifestError",
    "POINTS_SCHEMA",
    "SceneRecord",
    "ViewRecord",
    "decode_view",
    "load_points",
    "load_scene",
    "load_view",
    "points_table",
    "read_manifest",
    "select_records",
    "write_manifest",
]

VIEW_TYPE = pa.struct(
    [
        ("frame_id", pa.string()),
        ("color_uri", pa.string()),
        ("depth_uri", pa.string()),
        ("label_uri", pa.string()),
        ("intrinsics", pa.list_(pa.float64(), 9)),
        ("cam_to_world", pa.list_(pa.float64(), 16)),
    ]
)

MANIFEST_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("split", pa.string()),
        ("layout", pa.string()),
        ("points_uri", pa.string()),
        ("num_points", pa.int64()),
        ("image_width", pa.int32()),
        ("image_height", pa.int32()),
        ("depth_scale", pa.float64()),  # null: the dataset has no depth
        ("visibility_threshold", pa.float64()),  # null: visibility is z > 0 only
        ("cut_bound", pa.int32()),
        ("views", pa.list_(VIEW_TYPE)),
        ("skipped_views", pa.list_(pa.struct([("frame_id", pa.string()), ("reason", pa.string())]))),
    ]
)

POINTS_SCHEMA = pa.schema(
    [
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("z", pa.float32()),
        ("r", pa.uint8()),
        ("g", pa.uint8()),
        ("b", pa.uint8()),
        ("label", pa.int16()),
    ]
)


@dataclass(frozen=True)
class ViewRecord:
    """Where one view's files are, and its camera (intrinsics at the fusion image size)."""

    frame_id: str
    color_uri: str
    intrinsics: tuple[float, ...]  # 3x3 row-major
    cam_to_world: tuple[float, ...]  # 4x4 row-major
    depth_uri: str | None = None
    label_uri: str | None = None

    @property
    def intrinsics_matrix(self) -> np.ndarray:
        return np.asarray(self.intrinsics, dtype=np.float64).reshape(3, 3)

    @property
    def pose_matrix(self) -> np.ndarray:
        return np.asarray(self.cam_to_world, dtype=np.float64).reshape(4, 4)

    @classmethod
    def create(cls, frame_id, color_uri, intrinsics, cam_to_world, depth_uri=None, label_uri=None) -> ViewRecord:
        return cls(
            frame_id=str(frame_id),
            color_uri=color_uri,
            intrinsics=tuple(float(v) for v in np.asarray(intrinsics, np.float64).reshape(9)),
            cam_to_world=tuple(float(v) for v in np.asarray(cam_to_world, np.float64).reshape(16)),
            depth_uri=depth_uri,
            label_uri=label_uri,
        )


@dataclass(frozen=True)
class SceneRecord:
    """One manifest row."""

    scene_id: str
    split: str
    layout: str
    points_uri: str
    num_points: int
    image_width: int
    image_height: int
    cut_bound: int
    views: tuple[ViewRecord, ...]
    depth_scale: float | None = None
    visibility_threshold: float | None = None
    skipped_views: tuple[tuple[str, str], ...] = field(default=())

    def to_row(self) -> dict:
        row = asdict(self)
        row["views"] = [asdict(v) for v in self.views]
        row["skipped_views"] = [{"frame_id": f, "reason": r} for f, r in self.skipped_views]
        return row

    @classmethod
    def from_row(cls, row: dict) -> SceneRecord:
        """Inverse of :meth:`to_row`; also accepts Ray Data rows, whose lists arrive as numpy arrays."""

        def seq(value) -> list:
            return [] if value is None else list(value)

        def opt_float(value) -> float | None:
            return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)

        views = tuple(
            ViewRecord(
                frame_id=str(v["frame_id"]),
                color_uri=str(v["color_uri"]),
                intrinsics=tuple(float(x) for x in v["intrinsics"]),
                cam_to_world=tuple(float(x) for x in v["cam_to_world"]),
                depth_uri=v.get("depth_uri"),
                label_uri=v.get("label_uri"),
            )
            for v in seq(row["views"])
        )
        skipped = tuple((str(s["frame_id"]), str(s["reason"])) for s in seq(row.get("skipped_views")))
        return cls(
            scene_id=str(row["scene_id"]),
            split=str(row["split"]),
            layout=str(row["layout"]),
            points_uri=str(row["points_uri"]),
            num_points=int(row["num_points"]),
            image_width=int(row["image_width"]),
            image_height=int(row["image_height"]),
            cut_bound=int(row["cut_bound"]),
            views=views,
            depth_scale=opt_float(row.get("depth_scale")),
            visibility_threshold=opt_float(row.get("visibility_threshold")),
            skipped_views=skipped,
        )


def manifest_table(records: Iterable[SceneRecord]) -> pa.Table:
    return pa.Table.from_pylist([r.to_row() for r in records], schema=MANIFEST_SCHEMA)


def write_manifest(uri: str, records: Iterable[SceneRecord]) -> None:
    """Write the manifest atomically, sorted by scene_id (stable across reruns)."""
    ordered = sorted(records, key=lambda r: r.scene_id)
    storage.write_parquet(uri, manifest_table(ordered))


class ManifestError(OpenSceneError, ValueError):
    """A manifest that no stage can use; the message names the manifest and lists every problem."""


REQUIRED_COLUMNS = ("scene_id", "split", "layout", "points_uri", "num_points", "image_width", "image_height",
                    "cut_bound", "views")  # fmt: skip
MAX_LISTED_PROBLEMS = 20


def read_manifest(uri: str) -> list[SceneRecord]:
    """The manifest's scene records, after checking it as a whole: every stage reads it through here,
    so a missing column, a duplicate scene id or a malformed row fails at once with one error that
    lists every problem (up to :data:`MAX_LISTED_PROBLEMS`)."""
    table = storage.read_parquet(uri)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"{uri}: not a scene manifest: missing column(s) {', '.join(missing)}")
    records, problems = [], []
    for i, row in enumerate(table.to_pylist()):
        try:
            records.append(SceneRecord.from_row(row))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"row {i} ({row.get('scene_id')!r}): {type(exc).__name__}: {exc}")
    problems += _record_problems(records)
    if problems:
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise ManifestError(f"{uri}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)
    return records


def select_records(records: list[SceneRecord], scene_ids: list[str] | None, manifest: str) -> list[SceneRecord]:
    """The records of ``scene_ids`` in manifest order (every record when None); an error names the ids
    that the manifest at ``manifest`` lacks."""
    if scene_ids is None:
        return records
    wanted = set(scene_ids)
    unknown = wanted - {r.scene_id for r in records}
    if unknown:
        raise InputError(f"scenes not in the manifest {manifest}: {sorted(unknown)}")
    return [r for r in records if r.scene_id in wanted]


def _record_problems(records: list[SceneRecord]) -> list[str]:
    """Problems of parsed rows: duplicate scene ids and values no stage can use."""
    problems = []
    seen: dict[str, int] = {}
    for record in records:
        seen[record.scene_id] = seen.get(record.scene_id, 0) + 1
        if not record.scene_id or "/" in record.scene_id:
            problems.append(f"scene id {record.scene_id!r}: must be a non-empty name without '/'")
        if record.num_points <= 0:
            problems.append(f"{record.scene_id}: num_points is {record.num_points}")
        if record.image_width <= 0 or record.image_height <= 0:
            problems.append(f"{record.scene_id}: image size {record.image_width}x{record.image_height}")
        if record.cut_bound < 0:
            problems.append(f"{record.scene_id}: cut_bound is {record.cut_bound}")
    problems += [f"scene id {sid!r} appears {n} times" for sid, n in sorted(seen.items()) if n > 1]
    return problems


def points_table(xyz: np.ndarray, rgb: np.ndarray, labels: np.ndarray | None) -> pa.Table:
    if labels is None:
        labels = np.full(xyz.shape[0], IGNORE_LABEL, np.int16)
    return pa.table(
        {
            "x": xyz[:, 0].astype(np.float32),
            "y": xyz[:, 1].astype(np.float32),
            "z": xyz[:, 2].astype(np.float32),
            "r": rgb[:, 0].astype(np.uint8),
            "g": rgb[:, 1].astype(np.uint8),
            "b": rgb[:, 2].astype(np.uint8),
            "label": labels.astype(np.int16),
        },
        schema=POINTS_SCHEMA,
    )


def load_points(uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xyz float32 [N,3], rgb uint8 [N,3], labels int16 [N])`` from a points Parquet."""
    table = storage.read_parquet(uri)
    missing = [n for n in POINTS_SCHEMA.names if n not in table.column_names]
    if missing:
        raise SceneError(uri.rsplit("/", 1)[-1], "points", f"missing columns {missing}", uri)
    cols = {name: table.column(name).to_numpy() for name in POINTS_SCHEMA.names}
    xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=1).astype(np.float32)
    rgb = np.stack([cols["r"], cols["g"], cols["b"]], axis=1).astype(np.uint8)
    return xyz, rgb, cols["label"].astype(np.int16)


def decode_view(
    record: SceneRecord,
    view: ViewRecord,
    color_bytes: bytes,
    depth_bytes: bytes | None = None,
    label_bytes: bytes | None = None,
) -> View:
    """Decode one view's encoded files into a :class:`View` at the record's fusion image size."""
    width, height = record.image_width, record.image_height
    try:
        raw_color = images.decode_color(color_bytes, view.color_uri)
        color = images.resize_color(raw_color, width, height)
        depth = label = None
        if depth_bytes is not None:
            if record.depth_scale is None:
                raise SceneError(record.scene_id, "depth_scale", "depth files given but no depth scale")
            raw_depth = images.decode_depth(depth_bytes, record.depth_scale, view.depth_uri)
            _check_aspect(record, view, "depth", raw_depth, raw_color, view.depth_uri)
            depth = images.resize_nearest(raw_depth, width, height)
        if label_bytes is not None:
            raw_label = images.decode_label(label_bytes, view.label_uri)
            _check_aspect(record, view, "label", raw_label, raw_color, view.label_uri)
            label = images.resize_nearest(raw_label, width, height)
    except images.ImageDecodeError as exc:
        raise SceneError(record.scene_id, f"view {view.frame_id}", str(exc)) from None
    return View(
        frame_id=view.frame_id,
        color=color,
        depth=depth,
        intrinsics=view.intrinsics_matrix,
        cam_to_world=view.pose_matrix,
        label=label,
        source=view.color_uri,
    )


def _check_aspect(record, view, kind: str, image: np.ndarray, color: np.ndarray, uri: str | None) -> None:
    """Depth and label maps may be stored at another resolution than colour, never another shape."""
    (h, w), (ch, cw) = image.shape[:2], color.shape[:2]
    if abs(w / h - cw / ch) > 0.03 * (cw / ch):
        raise SceneError(
            record.scene_id, f"view {view.frame_id}.{kind}", f"size {w}x{h} does not match the colour image {cw}x{ch}", uri
        )


def _read(record: SceneRecord, view: ViewRecord, uri: str | None) -> bytes | None:
    if uri is None:
        return None
    try:
        return storage.read_bytes(uri)
    except storage.StorageError as exc:
        raise SceneError(record.scene_id, f"view {view.frame_id}", f"cannot read file: {exc.reason}", uri) from None


def load_view(record: SceneRecord, view: ViewRecord, with_label: bool = True) -> View:
    """Read and decode one view's files through the storage layer."""
    return decode_view(
        record,
        view,
        _read(record, view, view.color_uri),
        _read(record, view, view.depth_uri),
        _read(record, view, view.label_uri) if with_label else None,
    )


def load_scene(record: SceneRecord, with_views: bool = True, with_labels: bool = True) -> Scene:
    """The validated :class:`Scene` of a manifest row (views decoded when ``with_views``)."""
    try:
        xyz, rgb, labels = load_points(record.points_uri)
    except storage.StorageError as exc:
        raise SceneError(record.scene_id, "points", f"cannot read file: {exc.reason}", record.points_uri) from None
    if xyz.shape[0] != record.num_points:
        raise SceneError(record.scene_id, "points", f"the file holds {xyz.shape[0]} points but the manifest "
                         f"says {record.num_points} (a stale manifest: re-run ingest)", record.points_uri)  # fmt: skip
    views = [load_view(record, v, with_labels) for v in record.views] if with_views else []
    return Scene.create(record.scene_id, xyz, rgb, labels, views, source=record.points_uri)
