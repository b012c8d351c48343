"""Write a synthetic world in OpenScene's preprocessed ScanNet layout, to any storage URI.

Layout under ``root``::

    synth_config.yaml                                  the SynthConfig that produced the world
    scannet_3d/<split>/<scene_id>_vh_clean_2.pth       pickle (protocol 4) of numpy arrays:
                                                       (coords float32 [N,3], colors float32 [N,3]
                                                        = rgb/127.5 - 1, labels float32 [N], 255 = ignore)
    scannet_2d/<scene_id>/color/<frame>.jpg            320x240 JPEG, quality 95
    scannet_2d/<scene_id>/depth/<frame>.png            uint16 millimetres (depth scale 1000), 0 = no hit
    scannet_2d/<scene_id>/pose/<frame>.txt             4x4 camera-to-world, 4 rows of 4 numbers
    scannet_2d/<scene_id>/label/<frame>.png            uint8 label map (synthetic-only extra)

With ``config.hierarchy`` set (off by default), each view also gets its ground-truth id maps and a
SAM-like mask hierarchy in the original UFF format (:mod:`openscene_ray.hierarchy.masks`)::

    scannet_2d/<scene_id>/instance/<frame>.png         uint16 object index + 1 (0 = no hit)
    scannet_2d/<scene_id>/part/<frame>.png             uint16 primitive (part) index + 1 (0 = no hit)
    scannet_2d/<scene_id>/seg/<frame>/<i>.png          binary masks (room, objects, parts; corrupted per view)
    scannet_2d/<scene_id>/seg_hierarchy/<frame>_{inside,same}.npy

Frames are named 0, 20, 40, ... like ScanNet's every-20th-frame export; intrinsics are ScanNet's
global ones at 320x240 (see :func:`openscene_ray.synth.render.scannet_intrinsics`).
"""

from __future__ import annotations

import pickle
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import yaml

from openscene_ray.hierarchy.masks import write_view_masks
from openscene_ray.kernel import images, storage
from openscene_ray.synth.masks import corrupted_hierarchy, id_maps, object_of_parts
from openscene_ray.synth.render import SynthView, render_views
from openscene_ray.synth.world import SynthConfig, SynthScene, generate_scene

__all__ = ["DEPTH_SCALE", "depth_to_png", "pose_text", "scene_split", "write_world"]

DEPTH_SCALE = 1000.0  # ScanNet depth PNGs hold millimetres


def scene_split(config: SynthConfig, index: int) -> str:
    """``"val"`` for the last ``round(num_scenes * val_fraction)`` scenes, ``"train"`` for the others."""
    num_val = int(round(config.num_scenes * config.val_fraction))
    return "val" if index >= config.num_scenes - num_val else "train"


def depth_to_png(depth: np.ndarray) -> np.ndarray:
    """Metric depth float [H,W] to uint16 millimetres (rounded; 0 stays 0 = invalid)."""
    return np.clip(np.rint(depth * DEPTH_SCALE), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def pose_text(cam_to_world: np.ndarray) -> str:
    """A 4x4 matrix as 4 lines of 4 space-separated numbers (shortest exact float repr)."""
    return "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in np.asarray(cam_to_world))


def _write_points(root_uri: str, scene: SynthScene, split: str) -> None:
    colors = (scene.rgb.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)
    payload = (scene.xyz.astype(np.float32), colors, scene.labels.astype(np.float32))
    storage.write_bytes(
        storage.join(root_uri, "scannet_3d", split, f"{scene.scene_id}_vh_clean_2.pth"),
        pickle.dumps(payload, protocol=4),
    )


def _write_view(root_uri: str, scene_id: str, view: SynthView) -> None:
    scene_root, frame = storage.join(root_uri, "scannet_2d", scene_id), str(view.frame_id)
    storage.write_bytes(storage.join(scene_root, "color", f"{frame}.jpg"), images.encode_jpeg(view.color, 95))
    storage.write_bytes(storage.join(scene_root, "depth", f"{frame}.png"), images.encode_png(depth_to_png(view.depth)))
    storage.write_bytes(storage.join(scene_root, "pose", f"{frame}.txt"), pose_text(view.cam_to_world).encode())
    storage.write_bytes(storage.join(scene_root, "label", f"{frame}.png"), images.encode_png(view.label))


def _write_hierarchy(root_uri: str, scene: SynthScene, view: SynthView, index: int, config: SynthConfig) -> None:
    """The view's instance/part maps and its corrupted mask hierarchy (seeded per view)."""
    object_of = object_of_parts(scene.objects, len(scene.primitives))
    instance, parts = id_maps(view.part, object_of)
    scene_root, frame = storage.join(root_uri, "scannet_2d", scene.scene_id), str(view.frame_id)
    storage.write_bytes(storage.join(scene_root, "instance", f"{frame}.png"), images.encode_png(instance))
    storage.write_bytes(storage.join(scene_root, "part", f"{frame}.png"), images.encode_png(parts))
    rng = np.random.default_rng([config.seed, scene.index, 4, index])
    masks = corrupted_hierarchy(view.part, object_of, rng, config.hierarchy)
    write_view_masks(storage.join(root_uri, "scannet_2d"), scene.scene_id, frame, masks)


def _config_yaml(config: SynthConfig) -> str:
    """The config as YAML; without the (default, None) hierarchy option, exactly as before it existed."""
    exclude = {"hierarchy"} if config.hierarchy is None else set()
    return yaml.safe_dump(config.model_dump(mode="json", exclude=exclude), sort_keys=False)


def write_world(config: SynthConfig, root_uri: str, io_threads: int = 4) -> list[str]:
    """Generate, render and write every scene of ``config`` under ``root_uri``; returns the scene ids.

    Every scene has exactly ``config.points_per_scene`` points and ``config.views_per_scene`` views.
    ``io_threads`` threads encode and write one scene's files while the next scene renders.
    """
    storage.write_bytes(storage.join(root_uri, "synth_config.yaml"), _config_yaml(config).encode())
    scene_ids: list[str] = []
    with ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="synth-io") as pool:
        pending: list[Future] = []
        for index in range(config.num_scenes):
            scene = generate_scene(config, index)
            views = render_views(scene, config)
            for future in pending:
                future.result()
            pending = [pool.submit(_write_points, root_uri, scene, scene_split(config, index))]
            pending += [pool.submit(_write_view, root_uri, scene.scene_id, view) for view in views]
            if config.hierarchy is not None:
                pending += [pool.submit(_write_hierarchy, root_uri, scene, v, i, config) for i, v in enumerate(views)]
            scene_ids.append(scene.scene_id)
        for future in pending:
            future.result()
    return scene_ids
