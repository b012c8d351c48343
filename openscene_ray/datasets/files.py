"""Finding and reading a dataset's files: helpers shared by the layouts.

Listing (files in a folder, scenes in split folders or capture folders), reading one file of a
scene with an error that names the scene, the field and the file, and the numbered-frames view
layout (``color/<n>.jpg, depth/<n>.png, pose/<n>.txt``) that ScanNet and Replica share.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable

import numpy as np

from openscene_ray.datasets.layouts import (
    Layout,
    LayoutScene,
    Points,
    SceneRef,
    ViewSpec,
)
from openscene_ray.datasets.view_files import pinhole_intrinsics, read_matrix
from openscene_ray.kernel import storage
from openscene_ray.kernel.scene import SceneError

__all__ = [
    "basename",
    "list_files",
    "list_folder_scenes",
    "list_split_scenes",
    "normalize_root",
    "numbered_frames_scene",
    "read_scene_file",
    "read_scene_matrix",
]


def normalize_root(uri: str) -> str:
    """Absolute local paths (so manifests work from any working directory); remote URIs unchanged."""
    if "://" in uri:
        return uri.rstrip("/")
    return os.path.abspath(os.path.expanduser(uri))


def basename(uri: str) -> str:
    """The last component of a local path or a URI (trailing separators ignored)."""
    return posixpath.basename(uri.rstrip("/")) if "://" in uri else os.path.basename(uri.rstrip(os.sep))


def list_files(uri: str, suffix: str = "") -> dict[str, str]:
    """``{file name: URI}`` of the children of ``uri`` whose name ends with ``suffix``."""
    return {basename(u): u for u in storage.listdir(uri) if basename(u).endswith(suffix)}


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


def list_folder_scenes(root: str, split: str | None, is_scene: Callable[[str], bool]) -> list[SceneRef]:
    """``root`` itself when ``is_scene(root)``, else every child folder that is a scene; one scene per
    folder, named after it, in split ``split`` (default ``"all"``), sorted by scene id."""
    folders = [root] if is_scene(root) else [u for u in storage.listdir(root) if is_scene(u)]
    return sorted((SceneRef(basename(f), split or "all", f) for f in folders), key=lambda r: r.scene_id)


def read_scene_file(scene_id: str, field_name: str, uri: str) -> bytes:
    """The bytes of one of a scene's files; SceneError naming the scene, ``field_name`` and the file."""
    try:
        return storage.read_bytes(uri)
    except storage.StorageError as exc:
        raise SceneError(scene_id, field_name, f"cannot read file: {exc.reason}", uri) from None


def read_scene_matrix(scene_id: str, field_name: str, uri: str, shape: tuple[int, int]) -> np.ndarray:
    """A matrix file of a scene (text or ``.npy``, see :func:`read_matrix`); SceneError if unusable."""
    data = read_scene_file(scene_id, field_name, uri)
    try:
        return read_matrix(data, uri, shape)
    except ValueError as exc:
        raise SceneError(scene_id, field_name, str(exc), uri) from None


def numbered_frames_scene(
    layout: Layout,
    ref: SceneRef,
    points: Points,
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
    k = pinhole_intrinsics(*cfg.intrinsics)
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
    return layout.make_scene(ref, points, layout.build_views(ref.scene_id, specs, size), size, cfg.depth_scale)
