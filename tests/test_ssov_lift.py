"""SSOV's lift stage without Ray: superpixels → superpoints and pseudo-labels (the reference's
projection, camera order and overwrite rule), the agreement with the ground truth, and the known
per-camera coverage of the shared nuScenes sample with a constant segmenter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from openscene_ray.kernel.manifest import load_scene
from openscene_ray.ssov.dictionary import load_dictionary
from openscene_ray.ssov.lift.config import NUSCENES_CAMERA_ORDER, LiftSettings
from openscene_ray.ssov.lift.core import (
    LiftFrame,
    agreement,
    lift_frames,
    order_frames,
    scale_intrinsics,
)
from openscene_ray.ssov.lift.scene import fingerprint, lift_scene
from openscene_ray.ssov.lifted import labels_uri, pairs_uri, read_labels, read_pairs
from openscene_ray.ssov.segment.core import segment_scene
from openscene_ray.ssov.store import read_scene_marker

K = np.array([[10.0, 0, 4.5], [0, 10.0, 4.5], [0, 0, 1]])  # a 10x10 image, principal point at its centre


def _frame(ids, categories, depth=None, name="f"):
    return LiftFrame(name, np.asarray(ids, np.int32), np.asarray(categories, np.int32), K, np.eye(4), depth)


def _points(pixels, z):
    """World points (camera = world) landing on the given (u, v) pixels at depth z."""
    u, v = np.asarray(pixels, float).T
    return np.c_[(u - 4.5) * z / 10.0, (v - 4.5) * z / 10.0, np.full(len(u), z)]


def test_camera_order_is_the_references_and_unnamed_views_follow():
    names = ["CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT", "CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "extra"]
    order = order_frames(names, NUSCENES_CAMERA_ORDER)
    assert [names[i] for i in order] == ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
                                         "CAM_FRONT_LEFT", "extra"]  # fmt: skip
    assert order_frames(["front", "back"], ["BACK", "FRONT"]) == [1, 0] and order_frames(["a", "b"], None) == [0, 1]


def test_reference_bounds_min_depth_and_rounding():
    # u = 0.3 is inside (0 < u) before rounding to pixel 0; u = 8.6 rounds to 9 but is outside (u < W-1 = 9 holds:
    # inside); u = 9.2 is outside; depth 0.8 is below 1 m.
    xyz = np.r_[_points([(0.3, 5), (8.6, 5), (9.2, 5), (5, 5)], 2.0), _points([(5, 5)], 0.8)]
    ids = np.zeros((10, 10), np.int32)
    ids[5, 0], ids[5, 9], ids[5, 5] = 1, 2, 3
    result = lift_frames(xyz, [_frame(ids, [10, 11, 12])], np.arange(20, dtype=np.int16), LiftSettings())
    assert result.vocab.tolist() == [10, 11, -1, 12, -1]
    cut = lift_frames(xyz, [_frame(ids, [10, 11, 12])], np.arange(20, dtype=np.int16),
                      LiftSettings(bounds="cut", min_depth=0.0), cut_bound=1)  # fmt: skip
    assert cut.vocab.tolist() == [-1, -1, -1, 12, 12]  # rounded pixel within [1, 9): the fusion stage's test


def test_superpoints_count_over_views_later_views_overwrite_and_pairs_keep_every_view():
    xyz = _points([(2, 2), (2, 7), (7, 7), (7, 2)], 3.0)
    first = np.zeros((10, 10), np.int32)
    first[:, :5], first[:, 5:] = 1, 2  # two superpixels: phrase 3 left, phrase 0 right
    second = np.zeros((10, 10), np.int32)
    second[5:, :] = 1  # one superpixel on the bottom half: phrase 4
    phrase_class = np.array([0, 255, 255, 7, 9], np.int16)
    result = lift_frames(xyz, [_frame(first, [3, 0], name="a"), _frame(second, [4], name="b")], phrase_class,
                         LiftSettings(min_depth=0.0))  # fmt: skip
    assert result.superpoint.tolist() == [0, 2, 2, 1]  # superpoints 0, 1 from view a; 2 from view b
    assert result.vocab.tolist() == [3, 4, 4, 0] and result.label.tolist() == [7, 9, 9, 0]
    assert sorted(zip(result.pair_view.tolist(), result.pair_point.tolist(), result.pair_superpixel.tolist())) == [
        (0, 0, 1), (0, 1, 1), (0, 2, 2), (0, 3, 2), (1, 1, 1), (1, 2, 1)]  # fmt: skip
    depth = np.full((10, 10), 3.0, np.float32)
    depth[7, 7] = 1.0  # something in front of point 2
    occluded = lift_frames(xyz, [_frame(first, [3, 0], depth)], phrase_class, LiftSettings(min_depth=0.0), 0, 0.05)
    assert occluded.superpoint.tolist() == [0, 0, -1, 1]


def test_agreement_reports_the_references_diagnostics_and_coverage():
    superpoint = np.array([0, 0, 1, 1, -1, 2])
    label = np.array([3, 3, 4, 255, 255, 5], np.int16)
    gt = np.array([3, 2, 4, 255, 4, 255], np.int16)
    stats = agreement(superpoint, label, gt)
    assert stats["p_labeled"] == pytest.approx(5 / 6) and stats["p_sameseg"] == pytest.approx(3 / 5)
    assert stats["coverage"] == pytest.approx(4 / 6) and stats["accuracy"] == pytest.approx(2 / 3)
    assert agreement(superpoint, label, np.full(6, 255, np.int16))["accuracy"] is None
    assert np.allclose(scale_intrinsics(K, (10, 10), (20, 20))[:2, 2], [9.5, 9.5])


def test_lift_scene_writes_labels_and_pairs(synthetic_world, tmp_path):
    from openscene_ray.extractors import build_extractor
    from openscene_ray.kernel.text import build_text_encoder

    record = synthetic_world.records[0]
    dictionary = load_dictionary("configs/ssov/dictionaries/scannet20.yaml")
    text = torch.from_numpy(build_text_encoder("synthetic", dim=32, seed=0).encode(dictionary.prompts()))
    oracle = build_extractor("label-oracle", text={"label_set": "scannet20", "encoder": "synthetic",
                                                   "options": {"dim": 32, "seed": 0}})  # fmt: skip
    segments, lifted = str(tmp_path / "segments"), str(tmp_path / "lifted")
    segment_scene(record.scene_id, load_scene(record).views, oracle, text, segments, {"run": 1})
    settings = LiftSettings(min_depth=0.0)
    expected = fingerprint(read_scene_marker(segments, record.scene_id), dictionary, settings, segments)
    row = lift_scene(record, segments, lifted, dictionary, settings, expected)
    assert row["accuracy"] > 0.97 and 0.5 < row["p_labeled"] < 0.95  # a perfect segmenter; occluded points stay out
    labels = read_labels(labels_uri(lifted, record.scene_id), record.num_points)
    assert labels.metadata["label_set"] == "scannet20" and labels.metadata["fingerprint"] == expected
    _view, point, _superpixel, meta = read_pairs(pairs_uri(lifted, record.scene_id))
    assert meta["frames"] == [v.frame_id for v in record.views] and point.size >= (labels.superpoint >= 0).sum()


KNOWN_NUSCENES = {"CAM_FRONT": 8.7, "CAM_FRONT_RIGHT": 8.8, "CAM_FRONT_LEFT": 10.6, "CAM_BACK": 13.8,
                  "CAM_BACK_LEFT": 11.7, "CAM_BACK_RIGHT": 9.5}  # fmt: skip


class ConstantSegmenter:
    """Every pixel has the same feature: with any vocabulary, one superpixel covers the image."""

    name, feature_dim, text_model, device = "constant", 4, "none", torch.device("cpu")

    def extract(self, views, height, width):
        return torch.ones(len(views), height, width, 4)


@pytest.mark.realdata
def test_nuscenes_sample_with_a_constant_segmenter_labels_the_known_coverage(shared_data, tmp_path):
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout

    layout = build_layout("nuscenes-calib", overrides=["image_width=1600", "image_height=900"])  # the original size
    (record,) = ingest(layout, str(shared_data / "nuscenes-sample"), str(tmp_path / "ingested")).records
    dictionary = load_dictionary("nuscenes16")
    text = torch.zeros(dictionary.size, 4)
    text[dictionary.phrases.index("road")] = 1.0  # every pixel: "road" -> drivable surface
    segments = str(tmp_path / "segments")
    segment_scene(record.scene_id, load_scene(record).views, ConstantSegmenter(), text, segments, {"run": 1})
    marker = read_scene_marker(segments, record.scene_id)

    def labelled(settings: LiftSettings) -> float:
        lifted = str(tmp_path / f"lifted-{settings.bounds}-{settings.min_depth}")
        row = lift_scene(record, segments, lifted, dictionary, settings, fingerprint(marker, dictionary, settings, ""))
        labels = read_labels(labels_uri(lifted, record.scene_id)).label
        assert set(np.unique(labels).tolist()) <= {10, 255}  # drivable surface, or unseen
        return 100 * row["p_labeled"]

    # The fusion stage's visibility (cut 5, z > 0): the README's 57.8 % of 34,688 points.
    assert labelled(LiftSettings(bounds="cut", cut_bound=5, min_depth=0.0)) == pytest.approx(57.74, abs=0.01)
    # SSOV's own rule: 0 < u < W-1, 0 < v < H-1 and depth > 1 m: 58.19 %; dropping the depth rule changes
    # nothing on this sample (no point inside an image is within 1 m of that camera).
    assert labelled(LiftSettings()) == pytest.approx(58.19, abs=0.01) == labelled(LiftSettings(min_depth=0.0))
    cut5 = LiftSettings(bounds="cut", cut_bound=5, min_depth=0.0)
    for camera, known in KNOWN_NUSCENES.items():  # each camera alone: the README's per-camera coverage
        alone = dataclasses.replace(record, views=tuple(v for v in record.views if v.frame_id == camera))
        row = lift_scene(alone, segments, str(tmp_path / f"alone-{camera}"), dictionary, cut5, {})
        assert abs(100 * row["p_labeled"] - known) <= 0.06, camera
