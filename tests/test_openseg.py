"""The openseg extractor against a tiny TF SavedModel with OpenSeg's serving signature
(:mod:`benchmarks.openseg_stand_in`: features that are known functions of the pixel)."""

from __future__ import annotations

import itertools

# isort: off
import torchvision  # noqa: F401  (before tensorflow: the other order aborts the process)
import tensorflow as tf

# isort: on
import numpy as np
import pytest
import torch

from benchmarks.openseg_stand_in import CHANNELS, PAD, write_stand_in
from openscene_ray.extractors import build_extractor
from openscene_ray.extractors.openseg import axis_tiles, tile_grid
from openscene_ray.kernel import storage
from openscene_ray.kernel.scene import View

C = CHANNELS


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> str:
    return write_stand_in(str(tmp_path_factory.mktemp("openseg") / "openseg_fake"))


@pytest.fixture(scope="module")
def extractor(saved_model):
    return build_extractor("openseg", saved_model=saved_model)


def _pattern(height: int, width: int, period: float) -> np.ndarray:
    """A smooth colour pattern; each channel varies along a different direction."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 0.5 + 0.4 * np.sin(2 * np.pi * xx / period)
    g = 0.5 + 0.4 * np.sin(2 * np.pi * yy / (0.9 * period))
    b = 0.5 + 0.4 * np.sin(2 * np.pi * (xx + yy) / (1.3 * period))
    return np.round(np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def _view(color: np.ndarray) -> View:
    h, w = color.shape[:2]
    k = np.array([[300.0, 0, w / 2], [0, 300.0, h / 2], [0, 0, 1]])
    return View("frame", color, None, k, np.eye(4))


def _centres(out_size: int, in_size: int) -> np.ndarray:
    return np.minimum(np.floor((np.arange(out_size) + 0.5) * in_size / out_size).astype(int), in_size - 1)


def _expected_rgb(color: np.ndarray, height: int, width: int) -> np.ndarray:
    rows, cols = _centres(height, color.shape[0]), _centres(width, color.shape[1])
    return color[rows][:, cols].astype(np.float64) / 255.0


def _assert_rgb_close(rgb: np.ndarray, expected: np.ndarray) -> None:
    """Within JPEG error (q95 alone reaches ~0.035 on these patterns, TF and PIL decode differently);
    a shift of a few pixels or a wrong blending weight moves the mean error well above 0.01."""
    error = np.abs(rgb - expected)
    assert error.max() < 0.07 and error.mean() < 0.01, (error.max(), error.mean())


def test_metadata(extractor):
    assert extractor.name == "openseg"
    assert extractor.feature_dim == C
    assert extractor.text_model == "open_clip:ViT-L-14-336"
    assert extractor.text_encoder_options == {"arch": "ViT-L-14-336"}


@pytest.mark.parametrize(
    ("img_w", "img_h", "out_w", "out_h"),
    [(320, 240, 320, 240), (640, 512, 320, 256), (300, 500, 150, 250), (500, 200, 250, 100), (320, 240, 400, 300)],
)  # fmt: skip
def test_valid_region_crop_and_nearest_resize(extractor, img_w, img_h, out_w, out_h):
    color = _pattern(img_h, img_w, period=300)
    out = extractor.extract([_view(color)], out_h, out_w)
    assert out.shape == (1, out_h, out_w, C) and out.dtype == torch.float32
    feat = out[0].numpy()
    assert feat.min() > PAD + 1 and np.all(feat[..., 5] == 1.0)  # no padding anywhere
    scale = 640 / max(img_h, img_w)
    crop_h, crop_w = round(img_h * scale), round(img_w * scale)
    expect_x = (_centres(out_w, crop_w) + 0.5) / 640
    expect_y = (_centres(out_h, crop_h) + 0.5) / 640
    np.testing.assert_allclose(feat[..., 3], np.broadcast_to(expect_x, (out_h, out_w)), atol=1e-6)
    np.testing.assert_allclose(feat[..., 4], np.broadcast_to(expect_y[:, None], (out_h, out_w)), atol=1e-6)
    rgb = _expected_rgb(color, out_h, out_w)
    np.testing.assert_allclose(feat[..., :3], rgb, atol=0.05)
    np.testing.assert_allclose(feat[..., 6], rgb[..., 0] * rgb[..., 1], atol=0.05)


def test_axis_tiles_cover_with_minimum_overlap():
    assert axis_tiles(500, 640, 64) == [(0, 500)]
    assert axis_tiles(1920, 640, 0) == [(0, 640), (640, 640), (1280, 640)]
    for length in (641, 700, 1000, 1280, 1919, 1920, 4000):
        for overlap in (0, 32, 64, 200):
            tiles = axis_tiles(length, 640, overlap)
            assert tiles[0][0] == 0 and tiles[-1][0] + tiles[-1][1] == length
            for (s0, n0), (s1, _) in itertools.pairwise(tiles):
                assert s0 + n0 - s1 >= overlap and s1 > s0
    with pytest.raises(ValueError, match="tile_overlap"):
        axis_tiles(1000, 640, 640)


def test_community_recipe_six_patches(saved_model):
    assert tile_grid(1280, 1920, 640, 0) == [(y, x, 640, 640) for y in (0, 640) for x in (0, 640, 1280)]
    extractor = build_extractor("openseg", saved_model=saved_model, tile=True, tile_overlap=0)
    color = _pattern(1280, 1920, period=97)
    out = extractor.extract([_view(color)], 640, 960)[0].numpy()
    assert extractor.model_calls == 6
    _assert_rgb_close(out[..., :3], _expected_rgb(color, 640, 960))
    # Each tile runs at native scale: its canvas x is the position inside its own 640 patch.
    local_x = (_centres(960, 1920) % 640 + 0.5) / 640
    np.testing.assert_allclose(out[..., 3], np.broadcast_to(local_x, (640, 960)), atol=1e-6)
    assert out[..., 5].min() == 1.0


@pytest.mark.parametrize(("img_w", "img_h"), [(1000, 700), (700, 1000), (1920, 1280)])
def test_overlapping_tiles_blend_without_seams(saved_model, img_w, img_h):
    extractor = build_extractor("openseg", saved_model=saved_model, tile=True, tile_overlap=64)
    color = _pattern(img_h, img_w, period=97)
    out = extractor.extract([_view(color)], img_h, img_w)[0].numpy()
    assert extractor.model_calls == len(tile_grid(img_h, img_w, 640, 64)) > 1
    assert out.min() > PAD + 1 and np.allclose(out[..., 5], 1.0, atol=1e-6)
    _assert_rgb_close(out[..., :3], color / 255.0)
    # Tile-local coordinates jump by the tile offset at a hard seam (> 0.09 here); feathering makes
    # them change by at most ~1/640 + offset/640/overlap per pixel.
    assert np.abs(np.diff(out[..., 3], axis=1)).max() < 0.02
    assert np.abs(np.diff(out[..., 4], axis=0)).max() < 0.02


def test_small_images_are_not_tiled(saved_model, extractor):
    tiled = build_extractor("openseg", saved_model=saved_model, tile=True)
    view = _view(_pattern(240, 320, period=300))
    torch.testing.assert_close(tiled.extract([view], 120, 160), extractor.extract([view], 120, 160))
    assert tiled.model_calls == 1


def test_untiled_large_image_is_downscaled_once(saved_model):
    extractor = build_extractor("openseg", saved_model=saved_model)
    color = _pattern(1280, 1920, period=400)
    out = extractor.extract([_view(color), _view(color[:640])], 320, 480)
    assert out.shape == (2, 320, 480, C) and extractor.model_calls == 2
    np.testing.assert_allclose(out[0, ..., :3].numpy(), _expected_rgb(color, 320, 480), atol=0.05)


def test_load_from_s3(s3_server, saved_model, extractor, tmp_path):
    bucket = s3_server.bucket()
    fs, root = storage.filesystem(f"s3://{bucket}/openseg")
    fs.put(saved_model + "/", root + "/", recursive=True)
    assert any(key.endswith("saved_model.pb") for key in s3_server.keys(bucket))
    remote = build_extractor("openseg", saved_model=f"s3://{bucket}/openseg/", model_cache=str(tmp_path))
    view = _view(_pattern(240, 320, period=300))
    torch.testing.assert_close(remote.extract([view], 240, 320), extractor.extract([view], 240, 320))
    assert list(tmp_path.rglob("saved_model.pb"))


def test_rejects_models_without_the_signature(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x * 2}, input_signature=[tf.TensorSpec([], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.f.get_concrete_function()})
    with pytest.raises(ValueError, match="inp_image_bytes"):
        build_extractor("openseg", saved_model=str(tmp_path / "m"))
