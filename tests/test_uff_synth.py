"""The synthetic world's instance/part maps and SAM-like mask hierarchies (off by default)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from openscene_ray.hierarchy.masks import load_view_masks, mask_relations
from openscene_ray.kernel import images
from openscene_ray.kernel.config import dump_config
from openscene_ray.synth import (
    SynthConfig,
    generate_scene,
    render_view,
    render_views,
    write_world,
)
from openscene_ray.synth.masks import (
    SynthMasksConfig,
    corrupted_hierarchy,
    id_maps,
    object_of_parts,
)
from openscene_ray.synth.writer import _config_yaml


@pytest.fixture(scope="module")
def rendered():
    config = SynthConfig(seed=3, num_scenes=1, views_per_scene=3, points_per_scene=2000)
    scene = generate_scene(config, 0)
    return config, scene, render_views(scene, config)


def test_part_maps_agree_with_the_rendered_labels(rendered):
    config, scene, views = rendered
    labels = np.array([p.label for p in scene.primitives], np.uint8)
    for view in views:
        color, depth, label = render_view(scene, np.array([[288.9353, 0, 159.5], [0, 288.9353, 119.5], [0, 0, 1]]),
                                          view.cam_to_world, 320, 240)  # fmt: skip
        hit = view.part >= 0
        assert np.array_equal(hit, depth > 0)
        assert np.array_equal(labels[view.part[hit]], view.label[hit])
        object_of = object_of_parts(scene.objects, len(scene.primitives))
        instance, parts = id_maps(view.part, object_of)
        assert instance.dtype == np.uint16 and (instance[hit] > 0).all() and (instance[~hit] == 0).all()
        assert np.array_equal(parts[hit] - 1, view.part[hit])


def test_without_corruption_the_masks_are_room_objects_and_parts(rendered):
    config, scene, views = rendered
    clean = SynthMasksConfig(drop=0, fragment=0, merge=0, min_area=1)
    object_of = object_of_parts(scene.objects, len(scene.primitives))
    view = views[0]
    masks = corrupted_hierarchy(view.part, object_of, np.random.default_rng(0), clean)
    instance, parts = id_maps(view.part, object_of)
    objects = [o for o in np.unique(instance) if o > 0]
    multi = [o for o in objects if len(np.unique(parts[instance == o])) > 1]
    n_parts = sum(len(np.unique(parts[instance == o])) for o in multi)
    assert len(masks) == 1 + len(objects) + n_parts
    inside, _ = mask_relations(masks)
    room = int(np.argmax(masks.reshape(len(masks), -1).sum(1)))
    assert inside[:, room].sum() == len(masks) - 1  # every other mask is inside the room
    assert (inside.sum(1) <= 2).all() and (inside.sum(1) == 2).sum() >= n_parts - 2  # parts: object ⊂ room


def test_corruption_is_seeded_and_differs_between_views(rendered):
    config, scene, views = rendered
    corrupt = SynthMasksConfig(drop=0.3, fragment=0.3, merge=0.3)
    object_of = object_of_parts(scene.objects, len(scene.primitives))
    first = corrupted_hierarchy(views[0].part, object_of, np.random.default_rng(5), corrupt)
    again = corrupted_hierarchy(views[0].part, object_of, np.random.default_rng(5), corrupt)
    other = corrupted_hierarchy(views[0].part, object_of, np.random.default_rng(6), corrupt)
    clean = corrupted_hierarchy(views[0].part, object_of, np.random.default_rng(5), SynthMasksConfig(drop=0, fragment=0, merge=0))
    assert np.array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)
    assert first.shape != clean.shape or not np.array_equal(first, clean)


def test_the_option_writes_the_original_format_and_is_off_by_default(tmp_path):
    plain = SynthConfig(seed=1, num_scenes=1, views_per_scene=2, points_per_scene=1000)
    assert _config_yaml(plain) == dump_config(plain).replace("hierarchy: null\n", "")
    assert "hierarchy" not in _config_yaml(plain)
    write_world(plain, str(tmp_path / "plain"))
    assert sorted(os.listdir(tmp_path / "plain" / "scannet_2d" / "scene0000_00")) == ["color", "depth", "label", "pose"]
    with_masks = plain.model_copy(update={"hierarchy": SynthMasksConfig()})
    root = tmp_path / "masks"
    write_world(with_masks, str(root))
    scene_dir = root / "scannet_2d" / "scene0000_00"
    assert {"instance", "part", "seg", "seg_hierarchy"} <= set(os.listdir(scene_dir))
    for frame in ("0", "20"):
        loaded = load_view_masks(str(root / "scannet_2d"), "scene0000_00", frame, 320, 240)
        expected, _ = mask_relations(loaded.masks)
        assert len(loaded.masks) >= 3 and np.array_equal(loaded.inside, expected)
        instance = images.decode_depth((scene_dir / "instance" / f"{frame}.png").read_bytes(), 1.0)
        assert instance.max() >= 3
    # the colour, depth, label and pose files are those of the plain world
    for sub in ("color/0.jpg", "depth/20.png", "label/0.png", "pose/20.txt"):
        plain_file = tmp_path / "plain" / "scannet_2d" / "scene0000_00" / sub
        assert (scene_dir / sub).read_bytes() == plain_file.read_bytes()
