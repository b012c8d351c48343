"""2D mask hierarchies in the original's on-disk format, and the rules that relate masks.

Layout under a masks root (any storage URI), one folder per scene and view::

    <masks>/<scene_id>/seg/<frame_id>/<i>.png                   one binary mask per PNG: 255 inside, 0 outside
    <masks>/<scene_id>/seg_hierarchy/<frame_id>_inside.npy      bool [M, M]: inside[i, j] = mask i is a child of j
    <masks>/<scene_id>/seg_hierarchy/<frame_id>_same.npy        bool [M, M]: IoU(i, j) > 0.9 (optional)

Masks are read in lexicographic file-name order (``sorted(os.listdir)``: ``10.png`` before
``2.png``), and the matrices index masks in that same order. The rules (facts §4.2):
``inside[i, j] = |m_i ∩ m_j| / |m_i| > 0.95 and IoU(i, j) < 0.9``; ``same[i, j] = IoU(i, j) > 0.9``.
Matrices are read with ``allow_pickle=False``; a bad file is an error that names it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from openscene_ray.kernel import images, storage
from openscene_ray.kernel.errors import OpenSceneError
from openscene_ray.kernel.npy import encode_npy, load_npy

__all__ = [
    "INSIDE_FRACTION",
    "SAME_IOU",
    "MaskError",
    "ViewMasks",
    "hierarchy_uri",
    "level_maps",
    "load_view_masks",
    "mask_depths",
    "mask_relations",
    "seg_dir",
    "write_view_masks",
]

INSIDE_FRACTION = 0.95
SAME_IOU = 0.9


class MaskError(OpenSceneError, ValueError):
    """A mask file or hierarchy matrix is missing or malformed; the message names the file."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"masks: {reason} (file {uri})")
        self.uri = uri
        self.reason = reason


@dataclass(frozen=True)
class ViewMasks:
    """One view's masks (bool [M, H, W], file-name order) and their relations (bool [M, M])."""

    frame_id: str
    masks: np.ndarray
    inside: np.ndarray
    same: np.ndarray | None = None


def seg_dir(root: str, scene_id: str, frame_id: str) -> str:
    return storage.join(root, scene_id, "seg", frame_id)


def hierarchy_uri(root: str, scene_id: str, frame_id: str, kind: str) -> str:
    """``kind`` is ``inside`` or ``same``."""
    return storage.join(root, scene_id, "seg_hierarchy", f"{frame_id}_{kind}.npy")


def mask_relations(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(inside, same)`` bool [M, M] of bool masks [M, ...] by the original's rules."""
    flat = np.asarray(masks, dtype=bool).reshape(len(masks), -1).astype(np.float64)
    inter = flat @ flat.T
    area = np.diag(inter).copy()
    union = area[:, None] + area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
        covered = np.where(area[:, None] > 0, inter / area[:, None], 0.0)
    inside = (covered > INSIDE_FRACTION) & (iou < SAME_IOU)
    same = iou > SAME_IOU
    return inside, same


def _file_order(count: int) -> np.ndarray:
    """Mask indices in the lexicographic order of their file names ``0.png .. {count-1}.png``."""
    return np.array(sorted(range(count), key=lambda i: f"{i}.png"), dtype=np.int64)


def write_view_masks(root: str, scene_id: str, frame_id: str, masks: np.ndarray) -> int:
    """Write bool masks [M, H, W] as ``<i>.png`` plus the inside/same matrices (in file-name order,
    ``same`` last); PNGs of an earlier, larger mask set are removed first."""
    masks = np.asarray(masks, dtype=bool)
    folder = seg_dir(root, scene_id, frame_id)
    names = {f"{i}.png" for i in range(len(masks))}
    for stale in storage.listdir(folder):
        if stale.endswith(".png") and stale.rsplit("/", 1)[-1] not in names:
            storage.remove(stale)
    for i, mask in enumerate(masks):
        storage.write_bytes(storage.join(folder, f"{i}.png"), images.encode_png(mask.astype(np.uint8) * 255))
    order = _file_order(len(masks))
    inside, same = mask_relations(masks[order]) if len(masks) else (np.zeros((0, 0), bool),) * 2
    for kind, matrix in (("inside", inside), ("same", same)):
        storage.write_bytes(hierarchy_uri(root, scene_id, frame_id, kind), encode_npy(matrix.astype(bool)))
    return len(masks)


def _decode_mask(data: bytes, uri: str, width: int, height: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            array = np.asarray(image.convert("L") if image.mode not in ("L", "1", "I;16", "I") else image)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        raise MaskError(uri, f"not a readable PNG ({type(exc).__name__}: {exc})") from None
    if array.ndim != 2 or array.size == 0:
        raise MaskError(uri, f"expected a single-channel mask, got shape {list(array.shape)}")
    mask = array if array.dtype == bool else (array > 127 if array.dtype == np.uint8 else array > 0)
    h, w = mask.shape
    if abs(w / h - width / height) > 0.03 * (width / height):
        raise MaskError(uri, f"size {w}x{h} does not match the view's {width}x{height}")
    if (w, h) != (width, height):
        mask = images.resize_nearest(mask.astype(np.uint8), width, height).astype(bool)
    return mask


def _load_matrix(uri: str, count: int, required: bool) -> np.ndarray | None:
    try:
        data = storage.read_bytes(uri)
    except storage.ObjectNotFound:
        if required:
            raise MaskError(uri, "missing hierarchy matrix") from None
        return None
    try:
        matrix = load_npy(data)
    except ValueError as exc:  # a pickled or truncated file is refused
        raise MaskError(uri, str(exc)) from None
    if matrix.shape != (count, count):
        raise MaskError(uri, f"expected shape [{count}, {count}] for {count} masks, got {list(matrix.shape)}")
    if matrix.dtype != bool:
        if matrix.dtype.kind not in "iuf" or not np.isin(matrix, (0, 1)).all():
            raise MaskError(uri, f"expected a boolean matrix, got dtype {matrix.dtype}")
        matrix = matrix.astype(bool)
    return matrix


def load_view_masks(root: str, scene_id: str, frame_id: str, width: int, height: int) -> ViewMasks | None:
    """The view's masks resized (nearest) to ``width`` x ``height``; None when it has no mask folder."""
    folder = seg_dir(root, scene_id, frame_id)
    uris = [u for u in storage.listdir(folder) if u.endswith(".png")]
    if not uris:
        return None
    by_name = sorted(uris, key=lambda u: u.rsplit("/", 1)[-1])
    masks = np.stack([_decode_mask(storage.read_bytes(u), u, width, height) for u in by_name])
    inside = _load_matrix(hierarchy_uri(root, scene_id, frame_id, "inside"), len(masks), required=True)
    same = _load_matrix(hierarchy_uri(root, scene_id, frame_id, "same"), len(masks), required=False)
    return ViewMasks(frame_id, masks, inside, same)


def mask_depths(inside: np.ndarray) -> np.ndarray:
    """Depth of each mask in the inside tree: its number of ancestors (0 for a root)."""
    return np.asarray(inside, dtype=bool).sum(axis=1).astype(np.int64)


def level_maps(masks: np.ndarray, inside: np.ndarray, levels: int) -> tuple[np.ndarray, int]:
    """The masks as a stack of ``levels`` label maps int32 [levels, H, W] (the 2D baseline's levels).

    Level ``d`` holds the masks of depth ``d`` plus the leaves above it; smaller masks win where
    masks of a level overlap. Label = mask index; pixels in no mask get ``len(masks)`` (returned
    as the unassigned label). Levels deeper than the tree repeat its deepest level.
    """
    masks = np.asarray(masks, dtype=bool)
    count = len(masks)
    out = np.full((levels, *masks.shape[1:]), count, dtype=np.int32)
    if count == 0:
        return out, count
    depth = mask_depths(inside)
    leaf = ~np.asarray(inside, dtype=bool).any(axis=0)
    order = np.argsort(-masks.reshape(count, -1).sum(axis=1), kind="stable")  # large first, small paint last
    for level in range(levels):
        chosen = (depth == min(level, int(depth.max()))) | (leaf & (depth < level))
        for index in order[chosen[order]]:
            out[level][masks[index]] = index
    return out, count
