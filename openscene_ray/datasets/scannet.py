"""ScanNet in OpenScene's preprocessed layout.

On disk (``<root>`` is any storage URI)::

    <root>/scannet_3d/<split>/<scene_id>_vh_clean_2.pth      (coords, colors in [-1,1], labels)
    <root>/scannet_2d/<scene_id>/color/<frame>.jpg            frame = original frame number
    <root>/scannet_2d/<scene_id>/depth/<frame>.png            uint16, millimetres
    <root>/scannet_2d/<scene_id>/pose/<frame>.txt             4x4 camera-to-world; -inf = lost tracking
    <root>/scannet_2d/<scene_id>/label/<frame>.png            optional 2D label map

Frames whose number is a multiple of ``frame_skip`` (20) are used; the reference's preprocessing
exports exactly those. One global K at 320x240: fx = fy = 288.9353, cx = 159.5, cy = 119.5 (the reference
rescales 577.870605 at 640x480 with the resize formula: 288.9353025; under 2e-6 px apart in this image).
"""

from __future__ import annotations

from pydantic import Field

from openscene_ray.datasets.files import (
    list_files,
    list_split_scenes,
    numbered_frames_scene,
)
from openscene_ray.datasets.layouts import (
    Layout,
    LayoutConfig,
    LayoutScene,
    SceneRef,
    register_layout,
)
from openscene_ray.datasets.points import load_pth_points
from openscene_ray.kernel import storage

__all__ = ["ScanNetConfig", "ScanNetLayout"]


class ScanNetConfig(LayoutConfig):
    frame_skip: int = Field(20, ge=1, description="use frames whose number is a multiple of this")
    depth_scale: float = Field(1000.0, gt=0)
    image_width: int = Field(320, gt=0)
    image_height: int = Field(240, gt=0)
    intrinsics: tuple[float, float, float, float] = Field(
        (288.9353, 288.9353, 159.5, 119.5), description="fx, fy, cx, cy at the fusion size"
    )
    points_dir: str = "scannet_3d"
    images_dir: str = "scannet_2d"
    points_suffix: str = "_vh_clean_2.pth"
    use_label_maps: bool = Field(True, description="attach label/<frame>.png where present")


@register_layout
class ScanNetLayout(Layout):
    name = "scannet"
    config_model = ScanNetConfig
    config: ScanNetConfig

    def list_scenes(self, root: str, split: str | None = None) -> list[SceneRef]:
        return list_split_scenes(storage.join(root, self.config.points_dir), split, self.config.points_suffix)

    def read_scene(self, root: str, ref: SceneRef) -> LayoutScene:
        cfg = self.config
        points = load_pth_points(ref.source, ref.scene_id)
        scene_2d = storage.join(root, cfg.images_dir, ref.scene_id)
        label_files = list_files(storage.join(scene_2d, "label")) if cfg.use_label_maps else {}
        return numbered_frames_scene(self, ref, points, scene_2d, lambda n: n % cfg.frame_skip == 0, label_files)
