"""Dataset layouts: readers that turn a dataset root URI into manifest scenes (a registry).

A layout lists the scenes under a root (:meth:`Layout.list_scenes`) and reads one of them
(:meth:`Layout.read_scene`) into a :class:`LayoutScene`: the points (xyz float32, rgb uint8,
labels int16 with 255 = ignore) plus the views as manifest :class:`ViewRecord` s, whose file
URIs point into the dataset and whose intrinsics are already scaled to the fusion image size.
Images are not decoded at ingest: each view's colour, depth and label files are checked by
reading their image header (``check_images="decode"`` decodes them fully instead). Views whose
pose is non-finite (ScanNet's lost tracking) become ``skipped_views``; any other bad view is a
per-scene error, or a skipped view with ``bad_views="skip"``.

Every file access goes through :mod:`openscene_ray.kernel.storage`, so ``s3://`` and ``memory://``
roots work like local folders. Layouts are built by name with :func:`build_layout`; options come
from each layout's typed config (a :class:`LayoutConfig` subclass) with ``key=value`` overrides.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from openscene_ray.kernel import images, safe_load, storage
from openscene_ray.kernel.config import StrictModel, load_config
from openscene_ray.kernel.manifest import SceneRecord, ViewRecord
from openscene_ray.kernel.registry import Registry
from openscene_ray.kernel.scene import IGNORE_LABEL, Scene, SceneError, pose_problem

__all__ = [
    "Layout",
    "LayoutConfig",
    "LayoutScene",
    "SceneRef",
    "ViewSpec",
    "build_layout",
    "get_layout",
    "layout_names",
    "register_layout",
    "scale_intrinsics",
    "stored_image_size",
    "colors_to_rgb",
    "labels_to_int16",
    "load_pth_points",
    "validated_points",
    "read_matrix",
    "list_files",
    "list_split_scenes",
    "parallel_map",
    "basename",
    "normalize_root",
]

log = logging.getLogger(__name__)

# Threads that check one scene's view files concurrently (object-store latency bound).
VIEW_CHECK_THREADS = 8
# A stored image may differ in size from the fusion size (it is resized on load), but its aspect
# ratio must agree to within this fraction, or the intrinsics would not describe it.
ASPECT_TOLERANCE = 0.03

_COLOR_MODES = {"RGB", "RGBA", "RGBX", "L", "LA", "P", "CMYK", "YCbCr"}
_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "L"}
_LABEL_MODES = {"L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"}


class LayoutConfig(StrictModel):
    """Options every layout has; each layout subclasses this with its dataset's defaults."""

    cut_bound: int = Field(10, ge=0, description="pixels ignored at the image border during fusion")
    visibility_threshold: float | None = Field(
        0.25, gt=0, description="relative depth tolerance; None: no depth, visibility is z > 0"
    )
    check_images: Literal["header", "decode"] = Field(
        "header", description="read each view image's header only (fast) or decode it fully"
    )
    bad_views: Literal["error", "skip"] = Field(
        "error", description="a view with a missing/corrupt file or a non-rigid pose fails the scene, or is skipped"
    )


@dataclass(frozen=True)
class SceneRef:
    """One scene found under a root: its id, split and the URI of its main file or folder."""

    scene_id: str
    split: str
    source: str


@dataclass(frozen=True)
class ViewSpec:
    """A candidate view before checking: file URIs and the camera (given, or files to read).

    ``intrinsics`` belong to ``intrinsics_size`` (W, H); None means the stored colour image's
    size, read from its header. They are rescaled to the fusion size with :func:`scale_intrinsics`.
    """

    frame_id: str
    color_uri: str
    depth_uri: str | None = None
    label_uri: str | None = None
    cam_to_world: np.ndarray | None = None
    pose_uri: str | None = None
    intrinsics: np.ndarray | None = None
    intrinsics_uri: str | None = None
    intrinsics_size: tuple[int, int] | None = None


@dataclass
class LayoutScene:
    """What a layout reads for one scene: points, views and the fusion settings."""

    scene_id: str
    split: str
    source: str
    xyz: np.ndarray
    rgb: np.ndarray
    labels: np.ndarray
    views: list[ViewRecord]
    skipped_views: list[tuple[str, str]]
    image_width: int
    image_height: int
    cut_bound: int
    depth_scale: float | None
    visibility_threshold: float | None

    def to_record(self, layout: str, points_uri: str) -> SceneRecord:
        """The manifest row for this scene once its points are stored at ``points_uri``."""
        return SceneRecord(
            scene_id=self.scene_id,
            split=self.split,
            layout=layout,
            points_uri=points_uri,
            num_points=int(self.xyz.shape[0]),
            image_width=self.image_width,
            image_height=self.image_height,
            cut_bound=self.cut_bound,
            views=tuple(self.views),
            depth_scale=self.depth_scale,
            visibility_threshold=self.visibility_threshold,
            skipped_views=tuple(self.skipped_views),
        )


class _ViewProblem(Exception):
    """A single view is unusable: which field, why, and the file."""

    def __init__(self, field_name: str, reason: str, uri: str | None = None, lost_tracking: bool = False):
        super().__init__(reason)
        self.field = field_name
        self.reason = reason
        self.uri = uri
        self.lost_tracking = lost_tracking


class Layout(ABC):
    """A dataset layout. Subclasses set ``name``, ``config_model`` and implement the two readers."""

    name: ClassVar[str]
    config_model: ClassVar[type[LayoutConfig]] = LayoutConfig

    def __init__(self, config: LayoutConfig | None = None):
        self.config = config if config is not None else self.config_model()
        if not isinstance(self.config, self.config_model):
            raise TypeError(f"layout {self.name!r} needs a {self.config_model.__name__}, got {type(self.config).__name__}")

    @abstractmethod
    def list_scenes(self, root: str, split: str | None = None) -> list[SceneRef]:
        """The scenes under ``root`` (only ``split`` where given), sorted by scene id."""

    @abstractmethod
    def read_scene(self, root: str, ref: SceneRef) -> LayoutScene:
        """Read one scene. Raises :class:`SceneError` naming the scene and the file on bad input."""

    # ---- shared helpers for subclasses -------------------------------------------------------

    def convert_pose(self, pose: np.ndarray) -> np.ndarray:
        """Hook: bring a stored pose into camera-to-world OpenCV convention (identity here)."""
        return pose

    def build_views(
        self,
        scene_id: str,
        specs: Sequence[ViewSpec],
        image_size: tuple[int, int],
    ) -> tuple[list[ViewRecord], list[tuple[str, str]]]:
        """Check candidate views (files, poses, intrinsics) and return ``(views, skipped_views)``.

        Non-finite poses are always skipped. Other problems raise :class:`SceneError` naming the
        view and the file, or skip the view when ``bad_views="skip"``. Zero usable views is an error.
        """
        results = parallel_map(lambda spec: self._check_view(spec, image_size), specs)
        views: list[ViewRecord] = []
        skipped: list[tuple[str, str]] = []
        for spec, (record, problem) in zip(specs, results):
            if record is not None:
                views.append(record)
                continue
            assert problem is not None
            where = f" (file {problem.uri})" if problem.uri else ""
            if problem.lost_tracking or self.config.bad_views == "skip":
                skipped.append((spec.frame_id, f"{problem.field}: {problem.reason}{where}"))
            else:
                raise SceneError(scene_id, f"view {spec.frame_id}.{problem.field}", problem.reason, problem.uri)
        if skipped:
            log.warning("scene %s: skipped %d of %d view(s)", scene_id, len(skipped), len(specs))
        if not views:
            detail = f"; skipped: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
            raise SceneError(scene_id, "views", f"no usable views ({len(specs)} candidates){detail}")
        return views, skipped

    def _check_view(
        self, spec: ViewSpec, image_size: tuple[int, int]
    ) -> tuple[ViewRecord | None, _ViewProblem | None]:
        try:
            return self._view_record(spec, image_size), None
        except _ViewProblem as problem:
            return None, problem

    def _view_record(self, spec: ViewSpec, image_size: tuple[int, int]) -> ViewRecord:
        pose = spec.cam_to_world
        if pose is None:
            pose = _read_camera_matrix(spec.pose_uri, (4, 4), "cam_to_world")
        pose = self.convert_pose(np.asarray(pose, dtype=np.float64))
        problem = pose_problem(pose)
        if problem:
            raise _ViewProblem("cam_to_world", problem, spec.pose_uri, lost_tracking=not np.all(np.isfinite(pose)))
        intrinsics = spec.intrinsics
        if intrinsics is None:
            intrinsics = _read_camera_matrix(spec.intrinsics_uri, (3, 3), "intrinsics")
        intrinsics = np.asarray(intrinsics, dtype=np.float64)
        if not np.all(np.isfinite(intrinsics)) or intrinsics[0, 0] <= 0 or intrinsics[1, 1] <= 0:
            raise _ViewProblem("intrinsics", "focal lengths must be finite and positive", spec.intrinsics_uri)
        color_size = self._check_image(spec.color_uri, "color", _COLOR_MODES, image_size)
        if spec.depth_uri is not None:
            self._check_image(spec.depth_uri, "depth", _DEPTH_MODES, image_size)
        if spec.label_uri is not None:
            self._check_image(spec.label_uri, "label", _LABEL_MODES, image_size)
        source_size = spec.intrinsics_size or color_size
        intrinsics = scale_intrinsics(intrinsics, source_size, image_size)
        return ViewRecord.create(spec.frame_id, spec.color_uri, intrinsics, pose, spec.depth_uri, spec.label_uri)

    def _check_image(self, uri: str, kind: str, modes: set[str], image_size: tuple[int, int]) -> tuple[int, int]:
        if self.config.check_images == "decode":
            size = _decoded_size(uri, kind)
        else:
            size, mode = _image_header(uri, kind)
            if mode not in modes:
                raise _ViewProblem(kind, f"unexpected image mode {mode!r} for a {kind} image", uri)
        w, h = size
        if w <= 0 or h <= 0:
            raise _ViewProblem(kind, "empty image", uri)
        want = image_size[0] / image_size[1]
        if abs((w / h) / want - 1.0) > ASPECT_TOLERANCE:
            raise _ViewProblem(
                kind, f"stored size {w}x{h} does not match the fusion size {image_size[0]}x{image_size[1]}", uri
            )
        return size


def _image_header(uri: str, kind: str) -> tuple[tuple[int, int], str]:
    """``((width, height), mode)`` from the image header, reading only the first block."""
    fs, path = storage.filesystem(uri)
    try:
        with fs.open(path, "rb", block_size=1 << 16) as f, Image.open(f) as image:
            return image.size, image.mode
    except FileNotFoundError:
        raise _ViewProblem(kind, "missing file", uri) from None
    except UnidentifiedImageError:
        raise _ViewProblem(kind, "cannot decode image header (not a recognised image format)", uri) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _ViewProblem(kind, f"cannot read image header ({type(exc).__name__}: {exc})", uri) from None


def stored_image_size(scene_id: str, frame_id: str, uri: str) -> tuple[int, int]:
    """``(width, height)`` of a colour image from its header; SceneError naming the file if unreadable."""
    try:
        return _image_header(uri, "color")[0]
    except _ViewProblem as problem:
        raise SceneError(scene_id, f"view {frame_id}.color", problem.reason, uri) from None


def _decoded_size(uri: str, kind: str) -> tuple[int, int]:
    data = _read_view_file(uri, kind)
    try:
        if kind == "color":
            array = images.decode_color(data, uri)
        elif kind == "depth":
            array = images.decode_depth(data, 1.0, uri)
        else:
            array = images.decode_label(data, uri)
    except images.ImageDecodeError as exc:
        raise _ViewProblem(kind, str(exc).removeprefix(f"{uri}: "), uri) from None
    return int(array.shape[1]), int(array.shape[0])


def _read_view_file(uri: str, kind: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except storage.ObjectNotFound:
        raise _ViewProblem(kind, "missing file", uri) from None
    except storage.StorageError as exc:
        raise _ViewProblem(kind, f"cannot read file: {exc.reason}", uri) from None


def _read_camera_matrix(uri: str | None, shape: tuple[int, int], kind: str) -> np.ndarray:
    if uri is None:
        raise _ViewProblem(kind, "no file given")
    data = _read_view_file(uri, kind)
    try:
        return read_matrix(data, uri, shape)
    except ValueError as exc:
        raise _ViewProblem(kind, str(exc), uri) from None


def read_matrix(data: bytes, uri: str, shape: tuple[int, int]) -> np.ndarray:
    """A float64 matrix from a text file (whitespace separated) or a ``.npy`` file.

    A 3x3 ``shape`` also accepts a 4x4 matrix (its top-left block), as intrinsics are often
    stored homogeneous. Raises ValueError on anything else. ``.npy`` never unpickles.
    """
    if uri.endswith(".npy"):
        try:
            matrix = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"not a readable .npy array ({exc})") from None
    else:
        try:
            matrix = np.loadtxt(io.StringIO(data.decode("utf-8")), dtype=np.float64, ndmin=2)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a numeric text matrix ({exc})") from None
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape == (4, 4) and shape == (3, 3):
        matrix = matrix[:3, :3]
    if matrix.shape != shape:
        raise ValueError(f"expected a {shape[0]}x{shape[1]} matrix, got shape {list(matrix.shape)}")
    return matrix


def scale_intrinsics(intrinsics: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Rescale a 3x3 K from image size (W0, H0) to (W1, H1) with the reference's formula.

    ``fx *= floor(H1*W0/H0)/W0; fy *= H1/H0; cx *= (W1-1)/(W0-1); cy *= (H1-1)/(H0-1)``.
    """
    k = np.array(intrinsics, dtype=np.float64).reshape(3, 3)
    (w0, h0), (w1, h1) = from_size, to_size
    if (w0, h0) == (w1, h1):
        return k
    k[0, 0] *= math.floor(h1 * w0 / h0) / w0
    k[1, 1] *= h1 / h0
    k[0, 2] *= (w1 - 1) / (w0 - 1)
    k[1, 2] *= (h1 - 1) / (h0 - 1)
    return k


def parallel_map(fn: Callable, items: Sequence) -> list:
    """``[fn(x) for x in items]`` on up to ``VIEW_CHECK_THREADS`` threads, in order."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(VIEW_CHECK_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


# ---- points ---------------------------------------------------------------------------------


def colors_to_rgb(colors, n: int, scene_id: str, source: str) -> np.ndarray:
    """Reference colours to uint8 RGB: floats in [-1,1] (rgb/127.5-1), uint8, or a scalar (0)."""
    if colors is None or np.ndim(colors) == 0:
        return np.zeros((n, 3), np.uint8)  # nuScenes stores the scalar 0: colour unknown
    colors = np.asarray(colors)
    if colors.shape != (n, 3):
        raise SceneError(scene_id, "colors", f"expected shape [{n},3], got {list(colors.shape)}", source)
    if colors.dtype == np.uint8:
        return colors.copy()
    if np.issubdtype(colors.dtype, np.integer):
        if colors.min(initial=0) < 0 or colors.max(initial=0) > 255:
            raise SceneError(scene_id, "colors", "integer colours outside 0..255", source)
        return colors.astype(np.uint8)
    if not np.issubdtype(colors.dtype, np.floating) or not np.all(np.isfinite(colors)):
        raise SceneError(scene_id, "colors", f"expected finite floats in [-1,1], got dtype {colors.dtype}", source)
    if colors.min(initial=0) < -1.0 - 1e-3 or colors.max(initial=0) > 1.0 + 1e-3:
        raise SceneError(
            scene_id, "colors", f"float colours outside [-1,1] (range {colors.min():.3g}..{colors.max():.3g})", source
        )
    return np.clip(np.rint((colors.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def labels_to_int16(labels, n: int, scene_id: str, source: str) -> np.ndarray:
    """Reference labels to int16 with 255 = ignore (255 and -100 both mean ignore)."""
    if labels is None or np.ndim(labels) == 0:
        return np.full(n, IGNORE_LABEL, np.int16)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (n,):
        raise SceneError(scene_id, "labels", f"expected shape [{n}], got {list(labels.shape)}", source)
    values = labels.astype(np.float64)
    ignore = (values == IGNORE_LABEL) | (values == -100)
    valid = values[~ignore]
    bad = ~np.isfinite(valid) | (valid != np.round(valid)) | (valid < 0) | (valid >= IGNORE_LABEL)
    if bad.any():
        example = valid[bad][0]
        raise SceneError(
            scene_id,
            "labels",
            f"{int(bad.sum())} labels are not integers in 0..254 (e.g. {example}); 255 and -100 mean ignore",
            source,
        )
    out = np.full(n, IGNORE_LABEL, np.int16)
    out[~ignore] = valid.astype(np.int16)
    return out


def validated_points(
    scene_id: str, xyz, colors, labels, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert and validate reference point arrays (empty or non-finite clouds are errors)."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or not np.issubdtype(xyz.dtype, np.number):
        raise SceneError(scene_id, "xyz", f"expected a numeric [N,3] array, got shape {list(xyz.shape)}", source)
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    n = xyz.shape[0]
    rgb = colors_to_rgb(colors, n, scene_id, source)
    out_labels = labels_to_int16(labels, n, scene_id, source)
    Scene.create(scene_id, xyz, rgb, out_labels, source=source)  # raises on empty / non-finite
    return xyz, rgb, out_labels


def load_pth_points(uri: str, scene_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xyz, rgb, labels)`` from a reference ``.pth`` tuple, unpickled with the safe loader."""
    try:
        data = storage.read_bytes(uri)
    except storage.StorageError as exc:
        raise SceneError(scene_id, "points", f"cannot read file: {exc.reason}", uri) from None
    try:
        obj = safe_load.loads(data, uri)
    except pickle.UnpicklingError as exc:
        raise SceneError(scene_id, "points", str(exc).removeprefix(f"{uri}: "), uri) from None
    if not isinstance(obj, (tuple, list)) or not 1 <= len(obj) <= 3:
        raise SceneError(scene_id, "points", f"expected a tuple (coords, colors, labels), got {type(obj).__name__}", uri)
    coords, colors, labels = (*obj, None, None)[:3]
    return validated_points(scene_id, coords, colors, labels, uri)


# ---- URIs -----------------------------------------------------------------------------------


def normalize_root(uri: str) -> str:
    """Absolute local paths (so manifests work from any working directory); remote URIs unchanged."""
    if "://" in uri:
        return uri.rstrip("/")
    return os.path.abspath(os.path.expanduser(uri))


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/")) if "://" in uri else os.path.basename(uri.rstrip(os.sep))


def list_files(uri: str, suffix: str = "") -> dict[str, str]:
    """``{file name: URI}`` of the children of ``uri`` whose name ends with ``suffix``."""
    return {basename(u): u for u in storage.listdir(uri) if basename(u).endswith(suffix)}


def numbered_frames_scene(
    layout: Layout,
    ref: SceneRef,
    points: tuple[np.ndarray, np.ndarray, np.ndarray],
    scene_2d: str,
    keep: Callable[[int], bool],
    label_files: dict[str, str] | None = None,
) -> LayoutScene:
    """A scene whose views are ``color/<n>.jpg, depth/<n>.png, pose/<n>.txt`` under ``scene_2d``
    with one global K (``config.intrinsics`` at the fusion size); frames whose number passes
    ``keep`` are used. ``label_files`` maps ``<n>.png`` to a 2D label map URI where present."""
    cfg = layout.config
    frames = []
    for name, uri in list_files(storage.join(scene_2d, "color"), ".jpg").items():
        frame = name[: -len(".jpg")]
        if not frame.isdigit():
            raise SceneError(ref.scene_id, "views", f"colour image name {name!r} is not a frame number", uri)
        if keep(int(frame)):
            frames.append((int(frame), frame, uri))
    if not frames:
        raise SceneError(ref.scene_id, "views", "no colour images", storage.join(scene_2d, "color"))
    fx, fy, cx, cy = cfg.intrinsics
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    size = (cfg.image_width, cfg.image_height)
    specs = [
        ViewSpec(
            frame_id=frame,
            color_uri=uri,
            depth_uri=storage.join(scene_2d, "depth", f"{frame}.png"),
            label_uri=(label_files or {}).get(f"{frame}.png"),
            pose_uri=storage.join(scene_2d, "pose", f"{frame}.txt"),
            intrinsics=k,
            intrinsics_size=size,
        )
        for _, frame, uri in sorted(frames)
    ]
    views, skipped = layout.build_views(ref.scene_id, specs, size)
    xyz, rgb, labels = points
    return LayoutScene(
        ref.scene_id, ref.split, ref.source, xyz, rgb, labels, views, skipped,
        image_width=cfg.image_width, image_height=cfg.image_height, cut_bound=cfg.cut_bound,
        depth_scale=cfg.depth_scale, visibility_threshold=cfg.visibility_threshold,
    )  # fmt: skip


def list_split_scenes(points_root: str, split: str | None, suffix: str = ".pth") -> list[SceneRef]:
    """One scene per ``<points_root>/<split>/<scene_id><suffix>`` file, for ``split`` if given, else for
    every split folder; sorted by scene id and split."""
    if split:
        splits = [split]
    else:
        splits = sorted(basename(u) for u in storage.listdir(points_root) if not basename(u).startswith("."))
    refs = [
        SceneRef(name[: -len(suffix)], split_name, uri)
        for split_name in splits
        for name, uri in list_files(storage.join(points_root, split_name), suffix).items()
    ]
    return sorted(refs, key=lambda r: (r.scene_id, r.split))


# ---- registry -------------------------------------------------------------------------------

LAYOUTS: Registry[type[Layout]] = Registry(
    "layout",
    lazy_modules={
        "scannet": "openscene_ray.datasets.scannet",
        "matterport": "openscene_ray.datasets.matterport",
        "replica": "openscene_ray.datasets.replica",
        "nuscenes": "openscene_ray.datasets.nuscenes",
        "nuscenes-calib": "openscene_ray.datasets.nuscenes",
        "posed-rgbd": "openscene_ray.datasets.posed_rgbd",
    },
)
layout_names = LAYOUTS.names
get_layout = LAYOUTS.get

LayoutT = TypeVar("LayoutT", bound=type[Layout])


def register_layout(cls: LayoutT) -> LayoutT:
    """Class decorator: make a :class:`Layout` subclass available by its ``name``."""
    return LAYOUTS.register(cls.name, cls)


def build_layout(
    name: str, overrides: list[str] | None = None, config_paths: str | list[str] | None = None
) -> Layout:
    """Instantiate layout ``name`` with its config from defaults ← YAML ``config_paths`` ← ``overrides``."""
    cls = get_layout(name)
    return cls(load_config(cls.config_model, config_paths, overrides))
