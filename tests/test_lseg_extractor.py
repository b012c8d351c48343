"""The ``lseg`` extractor: the extraction recipe against an independent per-image implementation
written from the facts, flip equivariance, and the extractor interface."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from openscene_ray.extractors.base import build_extractor, extractor_names
from openscene_ray.extractors.lseg import LSegExtractor, lseg_features, recipe_input
from openscene_ray.kernel.scene import View
from openscene_ray.models.lseg import build_lseg, lseg_config
from openscene_ray.models.lseg_checkpoint import LSegInfo, save_lseg_export

CONFIG = lseg_config("lseg-tiny", out_dim=8)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_lseg(CONFIG).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


def _image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)
    return np.clip(base[:height, :width] + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)


def _reference_recipe(net, color: np.ndarray) -> torch.Tensor:
    """seed-systems facts §1.4, one image: ToTensor + Normalize(0.5, 0.5); crop = base = 2 x long side;
    bilinear resize (align_corners=True) of the long side to base, short = int(short*base/long + 0.5);
    pad bottom/right to crop x crop with -mean/std = -1; net(img) + flip(net(flip(img))); [0:H, 0:W]."""
    height, width = color.shape[:2]
    image = torch.from_numpy(color).permute(2, 0, 1)[None].float() / 255.0
    image = (image - 0.5) / 0.5
    base = crop = 2 * max(height, width)
    if height > width:
        new_h, new_w = base, int(1.0 * width * base / height + 0.5)
    else:
        new_h, new_w = int(1.0 * height * base / width + 0.5), base
    image = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=True)
    padded = torch.full((1, 3, crop, crop), -1.0)
    padded[:, :, :new_h, :new_w] = image
    with torch.no_grad():
        out = net(padded)
        out = out + torch.flip(net(torch.flip(padded, dims=[3])), dims=[3])
    return out[0, :, :height, :width]


@pytest.mark.parametrize("height, width", [(48, 64), (45, 64), (80, 48), (30, 32)])
def test_recipe_matches_an_independent_per_image_implementation(net, height, width):
    colors = np.stack([_image(height, width, seed) for seed in range(2)])
    squares = recipe_input(torch.from_numpy(colors))
    side = 2 * max(height, width)
    assert squares.shape == (2, 3, side, side)
    new_h = side if height > width else int(height * side / width + 0.5)
    new_w = side if height <= width else int(width * side / height + 0.5)
    assert torch.all(squares[:, :, new_h:] == -1.0) and torch.all(squares[:, :, :, new_w:] == -1.0)
    assert squares[:, :, :new_h, :new_w].min() >= -1.0 and squares.max() <= 1.0
    batched = lseg_features(net, torch.from_numpy(colors))
    assert batched.shape == (2, CONFIG.out_dim, height, width)
    for color, features in zip(colors, batched):
        assert torch.allclose(features, _reference_recipe(net, color), atol=1e-5)
    norms = batched.norm(dim=1)
    assert norms.max() <= 2.0 + 1e-5 and norms.min() > 0.5  # a sum of two unit vectors, not re-normalised
    single = lseg_features(net, torch.from_numpy(colors[:1]), flip=False)
    assert torch.allclose(single.norm(dim=1), torch.ones(1, height, width), atol=1e-5)


def test_features_of_a_flipped_view_are_the_flipped_features(net):
    """Landscape images pad only at the bottom, so the flip sum makes the recipe exactly symmetric."""
    color = _image(48, 64, 3)
    features = lseg_features(net, torch.from_numpy(color[None]))
    flipped = lseg_features(net, torch.from_numpy(np.ascontiguousarray(color[None, :, ::-1])))
    assert torch.allclose(flipped, features.flip(-1), atol=1e-5)
    # without the flip sum the network alone is not symmetric
    plain = lseg_features(net, torch.from_numpy(color[None]), flip=False)
    plain_flipped = lseg_features(net, torch.from_numpy(np.ascontiguousarray(color[None, :, ::-1])), flip=False)
    assert not torch.allclose(plain_flipped, plain.flip(-1), atol=1e-3)


def _views(colors) -> list[View]:
    return [View(f"f{i}", c, None, np.eye(3), np.eye(4)) for i, c in enumerate(colors)]


def test_extractor_interface_with_an_exported_checkpoint(net, tmp_path):
    assert "lseg" in extractor_names()
    info = LSegInfo(text_encoder="synthetic", text_options={"dim": 8, "seed": 0}, label_set="scannet20")
    uri = save_lseg_export(str(tmp_path / "model"), net, info)
    extractor = build_extractor("lseg", checkpoint=uri, batch_size=2)
    assert isinstance(extractor, LSegExtractor) and extractor.name == "lseg"
    assert extractor.feature_dim == 8 and extractor.text_model == "synthetic:dim=8,seed=0"
    assert (extractor.text_encoder, extractor.text_encoder_options) == ("synthetic", {"dim": 8, "seed": 0})
    assert extractor.encode_text(["a chair in a scene"]).shape == (1, 8)
    colors = [_image(48, 64, s) for s in range(3)]
    out = extractor.extract(_views(colors), 48, 64)
    assert out.shape == (3, 48, 64, 8) and out.dtype == torch.float32 and out.device.type == "cpu"
    expected = lseg_features(net, torch.from_numpy(np.stack(colors))).permute(0, 2, 3, 1)
    assert torch.allclose(out, expected, atol=1e-5)  # batch size 2 + a rest of 1 = one batch of 3
    resized = extractor.extract(_views(colors[:1]), 24, 32)
    assert resized.shape == (1, 24, 32, 8)
    assert extractor.extract([], 48, 64).shape == (0, 48, 64, 8)


def test_extractor_options_are_checked():
    with pytest.raises(ValueError, match="no checkpoint given"):
        LSegExtractor()
    with pytest.raises(ValueError, match="needs a config name"):
        LSegExtractor(random_init=True)
    random = LSegExtractor(random_init=True, config="lseg-tiny", seed=3)
    assert random.text_model == "none" and random.feature_dim == 32
    with pytest.raises(ValueError, match="no text space"):
        random.encode_text(["a wall"])
