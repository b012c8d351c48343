"""The synthetic world: procedural rooms, exact ray-cast RGB-D views and the ScanNet-layout writer.

Modules: :mod:`.primitives` (boxes and cylinders: sampling, ray intersection, shading),
:mod:`.furniture` (the object catalogue), :mod:`.rooms` (placing objects in a room),
:mod:`.world` (config, scenes and their surface points), :mod:`.render` (cameras and ray-cast
views) and :mod:`.writer` (the ScanNet-layout files).
"""

from openscene_ray.synth.primitives import Box, Cylinder
from openscene_ray.synth.render import (
    FRAME_STEP,
    HEIGHT,
    WIDTH,
    SynthView,
    camera_poses,
    look_at,
    render_view,
    render_views,
    scannet_intrinsics,
    to_scene,
)
from openscene_ray.synth.world import (
    SynthConfig,
    SynthScene,
    generate_scene,
    sample_surface,
)
from openscene_ray.synth.writer import write_world

__all__ = [
    "FRAME_STEP",
    "HEIGHT",
    "WIDTH",
    "Box",
    "Cylinder",
    "SynthConfig",
    "SynthScene",
    "SynthView",
    "camera_poses",
    "generate_scene",
    "look_at",
    "render_view",
    "render_views",
    "sample_surface",
    "scannet_intrinsics",
    "to_scene",
    "write_world",
]
