"""Replica in OpenScene's preprocessed layout (no splits; no 3D labels).

On disk (as written by the reference's ``preprocess_2d_replica.py`` / ``preprocess_3d_replica.py``)::

    <root>/replica_3d/<scene>.pth                       (coords, colors in [-1,1], labels all 255)
    <root>/replica_2d/<scene>/color/<i>.jpg             640x360
    <root>/replica_2d/<scene>/depth/<i>.png             uint16, depth / 6553.5 = metres
    <root>/replica_2d/<scene>/pose/<i>.txt              4x4 camera-to-world

The reference keeps every 10th frame of the original sequence and renumbers them, so stored
frame ``i`` is original frame ``i * stored_frame_step`` (10). Frames are selected by their
*original* number being a multiple of ``frame_stride`` (10): with the defaults every stored frame
is used; an export at the full frame rate sets ``stored_frame_step=1`` and gets every 10th.
One global K at 640x360 (fx=fy=600, cx=599.5, cy=339.5 at 1200x680 through the resize formula).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from openscene_ray.datasets.files import list_files, numbered_frames_scene
from openscene_ray.datasets.layouts import (
    Layout,
    LayoutConfig,
    LayoutScene,
    SceneRef,
    register_layout,
)
from openscene_ray.datasets.points import load_pth_points
from openscene_ray.kernel import storage

__all__ = ["ReplicaConfig", "ReplicaLayout"]


class ReplicaConfig(LayoutConfig):
    depth_scale: float = Field(6553.5, gt=0)
    image_width: int = Field(640, gt=0)
    image_height: int = Field(360, gt=0)
    intrinsics: tuple[float, float, float, float] = Field(
        (317.5, 600.0 * 360.0 / 680.0, 319.5, 179.5), description="fx, fy, cx, cy at the fusion size"
    )
    frame_stride: int = Field(10, ge=1, description="use original frames whose number is a multiple of this")
    stored_frame_step: int = Field(10, ge=1, description="original frames per stored frame index")
    points_dir: str = "replica_3d"
    images_dir: str = "replica_2d"

    @model_validator(mode="after")
    def _stride_divides(self) -> ReplicaConfig:
        if self.frame_stride % self.stored_frame_step:
            raise ValueError(
                f"frame_stride ({self.frame_stride}) must be a multiple of stored_frame_step ({self.stored_frame_step})"
            )
        return self


@register_layout
class ReplicaLayout(Layout):
    name = "replica"
    config_model = ReplicaConfig
    config: ReplicaConfig

    def list_scenes(self, root: str, split: str | None = None) -> list[SceneRef]:
        files = list_files(storage.join(root, self.config.points_dir), ".pth")
        return [SceneRef(name[: -len(".pth")], split or "all", uri) for name, uri in sorted(files.items())]

    def read_scene(self, root: str, ref: SceneRef) -> LayoutScene:
        cfg = self.config
        points = load_pth_points(ref.source, ref.scene_id)
        scene_2d = storage.join(root, cfg.images_dir, ref.scene_id)
        step = cfg.frame_stride // cfg.stored_frame_step
        return numbered_frames_scene(self, ref, points, scene_2d, lambda n: n % step == 0)
