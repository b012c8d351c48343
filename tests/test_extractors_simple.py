"""The ``rgb`` and ``label-oracle`` extractors, alone and through fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openscene_ray.extractors import build_extractor
from openscene_ray.fusion import FusionParams, fuse_views
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.scene import View
from openscene_ray.kernel.text import SyntheticTextEncoder

K = np.array([[10.0, 0, 3.5], [0, 10.0, 2.5], [0, 0, 1]])


def make_view(frame: str, label: np.ndarray | None, color: np.ndarray | None = None) -> View:
    h, w = (label.shape if label is not None else color.shape[:2])
    if color is None:
        color = np.zeros((h, w, 3), np.uint8)
    return View(frame, color, None, K, np.eye(4), label=label)


def embeddings(label_set: str = "scannet20", dim: int = 16, seed: int = 3) -> np.ndarray:
    return SyntheticTextEncoder(dim=dim, seed=seed).encode(get_label_set(label_set).prompts())


def oracle(label_set: str = "scannet20", **options):
    text = {"label_set": label_set, "encoder": "synthetic", "options": {"dim": 16, "seed": 3}}
    return build_extractor("label-oracle", text=text, **options)


def test_rgb_is_the_image_in_unit_range():
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    extractor = build_extractor("rgb")
    assert (extractor.name, extractor.feature_dim, extractor.text_model) == ("rgb", 3, "none")
    out = extractor.extract([make_view("0", None, color), make_view("1", None, color[::-1].copy())], 6, 8)
    assert out.shape == (2, 6, 8, 3) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[0].numpy(), color / np.float32(255))
    np.testing.assert_array_equal(out[1].numpy(), color[::-1] / np.float32(255))
    flat = np.full((6, 8, 3), 200, np.uint8)
    assert torch.allclose(extractor.extract([make_view("2", None, flat)], 3, 4), torch.tensor(200 / 255))


def test_label_oracle_gives_exact_class_embeddings():
    label = np.array([[0, 1, 2, 255], [19, 19, 5, 7]], np.uint8)
    extractor = oracle()
    assert extractor.feature_dim == 16 and extractor.text_model == "synthetic:dim=16,seed=3"
    out = extractor.extract([make_view("0", label), make_view("1", label[::-1].copy())], 2, 4)
    assert out.shape == (2, 2, 4, 16)
    table = np.concatenate([embeddings(), np.zeros((1, 16), np.float32)])
    index = np.where(label == 255, 20, label)
    np.testing.assert_array_equal(out[0].numpy(), table[index])
    np.testing.assert_array_equal(out[1].numpy(), table[index[::-1]])
    assert np.all(out[0, 0, 3].numpy() == 0)
    # Requested size differs: nearest-neighbour resize of the label map.
    big = oracle().extract([make_view("0", label)], 4, 8)
    np.testing.assert_array_equal(big[0].numpy(), table[np.repeat(np.repeat(index, 2, 0), 2, 1)])


def test_label_oracle_detailed_prompts_use_the_first_prompt_of_each_class():
    label_set = get_label_set("nuscenes16")
    label = np.arange(16, dtype=np.uint8).reshape(2, 8)
    out = oracle(label_set="nuscenes16").extract([make_view("0", label)], 2, 8)[0].reshape(16, 16).numpy()
    prompts = label_set.prompts()
    first = [label_set.prompt_to_class().index(c) for c in range(16)]
    np.testing.assert_array_equal(out, SyntheticTextEncoder(16, 3).encode([prompts[i] for i in first]))
    assert first[4] == 5  # "construction vehicle" is represented by "a bulldozer in a scene"


def test_label_oracle_blur_averages_a_box_window():
    label = np.zeros((5, 6), np.uint8)
    label[:, 3:] = 1
    out = oracle(blur=1).extract([make_view("0", label)], 5, 6)[0].numpy()
    e = embeddings()
    np.testing.assert_allclose(out[2, 0], e[0], atol=1e-6)  # interior: unchanged
    np.testing.assert_allclose(out[2, 2], (2 * e[0] + e[1]) / 3, atol=1e-6)  # left of the edge
    np.testing.assert_allclose(out[2, 3], (e[0] + 2 * e[1]) / 3, atol=1e-6)
    np.testing.assert_allclose(out[0, 2], (2 * e[0] + e[1]) / 3, atol=1e-6)  # border: valid pixels only


def test_label_oracle_noise_is_seeded_per_view():
    label = np.full((40, 50), 4, np.uint8)
    clean = oracle().extract([make_view("a", label)], 40, 50)[0]
    noisy = oracle(noise=0.2, seed=1)
    a = noisy.extract([make_view("a", label), make_view("b", label)], 40, 50)
    residual = (a[0] - clean).numpy()
    assert abs(residual.std() - 0.2) < 0.01 and abs(residual.mean()) < 0.01
    assert not torch.equal(a[0], a[1])  # different views, different noise
    again = noisy.extract([make_view("b", label)], 40, 50)  # same view, other batch position
    assert torch.equal(again[0], a[1])
    other_seed = oracle(noise=0.2, seed=2).extract([make_view("a", label)], 40, 50)
    assert not torch.equal(other_seed[0], a[0])


def test_label_oracle_errors():
    with pytest.raises(ValueError, match="view 'x' has no label map"):
        oracle().extract([make_view("x", None, np.zeros((2, 2, 3), np.uint8))], 2, 2)
    with pytest.raises(ValueError, match=r"labels \[20, 31\] outside"):
        oracle().extract([make_view("y", np.array([[20, 31]], np.uint8))], 1, 2)
    with pytest.raises(ValueError, match="noise and blur"):
        oracle(noise=-1)
    with pytest.raises(ValueError, match="unknown label set 'nope'"):
        oracle(label_set="nope")


def test_label_oracle_through_fusion_recovers_point_labels():
    """A wall at z = 2 facing the camera, labelled by column: fused features are exact embeddings."""
    width, height = 40, 30
    k = np.array([[30.0, 0, (width - 1) / 2], [0, 30.0, (height - 1) / 2], [0, 0, 1]])
    uu, vv = np.meshgrid(np.arange(width), np.arange(height))
    label = np.where(uu < 13, 2, np.where(uu < 27, 7, 255)).astype(np.uint8)
    rng = np.random.default_rng(0)
    pixels = rng.uniform([-0.49, -0.49], [width - 0.51, height - 0.51], (2000, 2))
    z = 2.0
    xyz = np.c_[(pixels[:, 0] - k[0, 2]) * z / 30, (pixels[:, 1] - k[1, 2]) * z / 30, np.full(2000, z)]
    color, depth = np.zeros((height, width, 3), np.uint8), np.full((height, width), z, np.float32)
    views = [View(str(i), color, depth, k, np.eye(4), label) for i in range(3)]
    result = fuse_views(xyz.astype(np.float32), views, oracle(), FusionParams(0, 0.05, views_per_batch=2))
    assert result.mask.all() and np.all(result.n_views == 3)
    col = np.round(pixels[:, 0])
    want = np.where(col[:, None] < 13, embeddings()[2], np.where(col[:, None] < 27, embeddings()[7], 0))
    np.testing.assert_allclose(result.features.float().numpy(), want, atol=1e-3)
