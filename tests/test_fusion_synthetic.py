"""Fusion with the label oracle on the synthetic world: known answers, and occlusion matters."""

import numpy as np
import pytest

from openscene_ray.extractors import build_extractor
from openscene_ray.fusion.core import FusionParams, fuse_views
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.manifest import load_scene
from openscene_ray.kernel.text import build_text_encoder

TEXT = {"label_set": "scannet20", "encoder": "synthetic", "options": {"dim": 32, "seed": 0}}


@pytest.fixture(scope="module")
def scenes(synthetic_world):
    return [load_scene(r) for r in synthetic_world.records]


def _accuracy(scene, **params) -> tuple[float, float]:
    """(share of seen points whose fused feature's best prompt is the 3D label, seen fraction)."""
    extractor = build_extractor("label-oracle", text=TEXT)
    text = build_text_encoder("synthetic", **TEXT["options"]).encode(get_label_set("scannet20").prompts())
    result = fuse_views(scene.xyz, scene.views, extractor, FusionParams(cut_bound=10, **params))
    pred = (result.features.float().numpy() @ text.T).argmax(1)
    labels = scene.labels[result.mask]
    valid = labels != 255
    return float((pred[valid] == labels[valid]).mean()), float(result.mask.mean())


def test_oracle_fusion_recovers_the_3d_labels(scenes, synthetic_world):
    threshold = synthetic_world.records[0].visibility_threshold
    for scene in scenes:
        accuracy, seen = _accuracy(scene, visibility_threshold=threshold)
        assert accuracy >= 0.98, (scene.scene_id, accuracy)
        assert seen > 0.6


def test_depth_test_matters(scenes):
    """Without the depth test, occluded points take the occluder's feature: accuracy drops."""
    with_depth = np.mean([_accuracy(s, visibility_threshold=0.05)[0] for s in scenes])
    without = np.mean([_accuracy(s, visibility_threshold=0.05, depth_test=False)[0] for s in scenes])
    reference = np.mean([_accuracy(s, visibility_threshold=0.25)[0] for s in scenes])
    assert with_depth - without > 0.02, (with_depth, without)
    assert with_depth >= reference >= 0.95 and reference > without, (with_depth, reference, without)
