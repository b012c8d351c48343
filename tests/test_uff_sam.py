"""SAM automatic masks through the real ``segment-anything`` package, on a randomly initialised
miniature SAM built here (no SAM weights exist on this machine): weights-only checkpoints, the
generator's masks, and the on-disk hierarchy they are written as."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from openscene_ray.hierarchy.config import SamConfig
from openscene_ray.hierarchy.masks import MaskError, load_view_masks, mask_relations
from openscene_ray.hierarchy.sam import (
    build_mask_generator,
    build_sam,
    generate_masks,
    tiny_sam,
    write_scene_masks,
)
from openscene_ray.kernel.config import ConfigError, load_config
from openscene_ray.kernel.scene import Scene, View

LOOSE = {"model_type": "tiny", "points_per_side": 4, "pred_iou_thresh": -100.0, "stability_score_thresh": -100.0,
         "box_nms_thresh": 0.95}  # fmt: skip


class _Unsafe:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_checkpoint_is_required_unless_random_init():
    with pytest.raises(ConfigError, match="sam.checkpoint is required"):
        load_config(SamConfig, base={"model_type": "tiny"})


def test_weights_only_checkpoints_load_and_pickled_code_is_refused(tmp_path):
    torch.manual_seed(1)
    reference = tiny_sam()
    good = tmp_path / "sam_tiny.pth"
    torch.save(reference.state_dict(), good)
    model = build_sam(SamConfig(model_type="tiny", checkpoint=str(good)), torch.device("cpu"))
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"weights": _Unsafe()}, unsafe)
    with pytest.raises(MaskError, match="unsafe.pth") as error:
        build_sam(SamConfig(model_type="tiny", checkpoint=str(unsafe)), torch.device("cpu"))
    assert "weights-only" in str(error.value)
    wrong = tmp_path / "wrong.pth"
    torch.save({"image_encoder.nothing": torch.zeros(1)}, wrong)
    with pytest.raises(MaskError, match="does not fit SAM.*wrong.pth"):
        build_sam(SamConfig(model_type="tiny", checkpoint=str(wrong)), torch.device("cpu"))


def test_generated_masks_are_written_in_the_original_format(tmp_path):
    torch.manual_seed(0)
    generator = build_mask_generator(SamConfig(random_init=True, **LOOSE), torch.device("cpu"))
    rng = np.random.default_rng(0)
    color = np.zeros((48, 64, 3), np.uint8)
    color[:, 32:] = 200
    color = (color + rng.integers(0, 20, color.shape)).astype(np.uint8)
    masks = generate_masks(generator, color, min_area=4)
    assert masks.dtype == bool and masks.ndim == 3 and masks.shape[1:] == (48, 64) and len(masks) > 0
    assert (masks.reshape(len(masks), -1).sum(1) >= 4).all()
    k = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    views = [View(str(i), color, np.ones((48, 64), np.float32), k, np.eye(4)) for i in (0, 20)]
    scene = Scene.create("s1", np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8), None, views)
    assert write_scene_masks(generator, scene, str(tmp_path), 4, overwrite=False) == (2, 0)
    assert write_scene_masks(generator, scene, str(tmp_path), 4, overwrite=False) == (0, 2)  # resumes
    loaded = load_view_masks(str(tmp_path), "s1", "20", 64, 48)
    expected, _ = mask_relations(loaded.masks)
    assert len(loaded.masks) == len(masks) and np.array_equal(loaded.inside, expected)
