"""open_clip text encoder and the clip-dense (MaskCLIP) extractor, with a real ViT-B-32.

No weights can be downloaded here, so the "release checkpoint" is a seeded random ViT-B-32 saved
as a state dict: loading it back through the checkpoint path must reproduce that model exactly.
"""

from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from openscene_ray.extractors import build_extractor
from openscene_ray.kernel.clip import OpenClipTextEncoder
from openscene_ray.kernel.scene import View
from openscene_ray.kernel.text import build_text_encoder, text_encoder_names

ARCH = "ViT-B-32"
PROMPTS = ["a wall in a scene", "a chair in a scene", "a refrigerator in a scene"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A seeded random ViT-B-32 (QuickGELU, like OpenAI CLIP) and its state dict on disk."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = open_clip.create_model(ARCH, force_quick_gelu=True).eval().requires_grad_(False)
    path = tmp_path_factory.mktemp("clip") / "vit_b_32_state_dict.pt"
    torch.save(model.state_dict(), path)
    return model, str(path)


def _view(color: np.ndarray) -> View:
    h, w = color.shape[:2]
    k = np.array([[100.0, 0, w / 2], [0, 100.0, h / 2], [0, 0, 1]])
    return View("f", color, None, k, np.eye(4))


def _colors(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)]


def _reference_tokens(model, images: torch.Tensor) -> torch.Tensor:
    """MaskCLIP through the model's own modules: the last block's real attention, restricted by a
    mask so that every token attends only to itself, then the global head (ln_post, proj)."""
    visual = model.visual
    with torch.no_grad():
        x = visual._embeds(images)
        n = x.shape[1]
        self_only = torch.full((n, n), float("-inf"))
        self_only.fill_diagonal_(0.0)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        x = visual.transformer.resblocks[-1](x, attn_mask=self_only)
        tokens = visual.ln_post(x[:, 1:]) @ visual.proj
    grid = round((n - 1) ** 0.5)
    return F.normalize(tokens, dim=-1).reshape(images.shape[0], grid, grid, -1)


# ---- text encoder -------------------------------------------------------------------------------


def test_registered_kind():
    assert "open_clip" in text_encoder_names()


def test_refuses_without_checkpoint(saved_model):
    with pytest.raises(ValueError, match="random_init=True"):
        build_text_encoder("open_clip", arch=ARCH)
    with pytest.raises(ValueError, match="conflicts"):
        OpenClipTextEncoder(ARCH, checkpoint=saved_model[1], random_init=True)
    with pytest.raises(ValueError, match="openai"):  # lists the arch's known tags
        OpenClipTextEncoder(ARCH, checkpoint="no-such-tag-or-file")
    with pytest.raises(ValueError, match="no architecture"):
        OpenClipTextEncoder("ViT-X-99", random_init=True)


def test_random_init_is_explicit_and_seeded():
    encoder = build_text_encoder("open_clip", arch=ARCH, random_init=True, seed=3)
    assert encoder.name == "open_clip:ViT-B-32" and encoder.dim == 512
    emb = encoder.encode(PROMPTS)
    assert emb.shape == (3, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        same = open_clip.create_model(ARCH, force_quick_gelu=True).eval()
    with torch.no_grad():
        expected = same.encode_text(open_clip.get_tokenizer(ARCH)(PROMPTS), normalize=True).numpy()
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    assert encoder.encode([]).shape == (0, 512)


def test_checkpoint_round_trip(saved_model):
    model, path = saved_model
    encoder = OpenClipTextEncoder(ARCH, checkpoint=path)
    assert encoder.weights.source == "file" and encoder.weights.quick_gelu
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer(ARCH)(PROMPTS), normalize=True).numpy()
    emb = encoder.encode(PROMPTS)
    np.testing.assert_allclose(emb, expected, atol=1e-6)
    other = OpenClipTextEncoder(ARCH, random_init=True, seed=0).encode(PROMPTS)
    assert np.abs(emb - other).max() > 0.1  # really the saved weights, not a fresh random init


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated, still writes archives
def test_refuses_torchscript_archives(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "ViT-B-32.pt"
    scripted.save(str(path))
    with pytest.raises(ValueError, match="TorchScript"):
        OpenClipTextEncoder(ARCH, checkpoint=str(path))


def test_lru_and_disk_cache(tmp_path, saved_model):
    cache = str(tmp_path / "text-cache")
    encoder = OpenClipTextEncoder(ARCH, random_init=True, embedding_cache=cache)
    first = encoder.encode(PROMPTS)
    first[:] = 0.0  # callers get copies; the cached value is untouched
    again = encoder.encode(PROMPTS)
    assert np.abs(again).sum() > 0
    stored = tmp_path / "text-cache" / f"{encoder.cache_key(PROMPTS)}.npy"
    np.testing.assert_array_equal(np.load(stored), again)

    # A new encoder with the same weights reads the file instead of recomputing.
    marker = np.eye(3, 512, dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, marker)
    stored.write_bytes(buffer.getvalue())
    fresh = OpenClipTextEncoder(ARCH, random_init=True, embedding_cache=cache)
    np.testing.assert_array_equal(fresh.encode(PROMPTS), marker)

    keys = {
        encoder.cache_key(PROMPTS),
        encoder.cache_key(PROMPTS[:2]),
        OpenClipTextEncoder(ARCH, random_init=True, seed=1).cache_key(PROMPTS),
        OpenClipTextEncoder(ARCH, checkpoint=saved_model[1]).cache_key(PROMPTS),
    }
    assert len(keys) == 4
    assert encoder.weights.identity() == "random-init:seed=0"
    assert OpenClipTextEncoder(ARCH, checkpoint=saved_model[1]).weights.identity().startswith("sha256:")


# ---- clip-dense ---------------------------------------------------------------------------------


def test_dense_refuses_without_checkpoint():
    with pytest.raises(ValueError, match="random_init=True"):
        build_extractor("clip-dense", arch=ARCH)


def test_dense_shapes_and_unit_norm():
    extractor = build_extractor("clip-dense", arch=ARCH, random_init=True)
    assert (extractor.name, extractor.feature_dim, extractor.text_model) == ("clip-dense", 512, "open_clip:ViT-B-32")
    views = [_view(c) for c in _colors()]
    out = extractor.extract(views, 30, 40)
    assert out.shape == (2, 30, 40, 512) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    grid = extractor.patch_features(extractor.preprocess([v.color for v in views]))
    assert grid.shape == (2, 7, 7, 512)
    torch.testing.assert_close(grid.norm(dim=-1), torch.ones(2, 7, 7), atol=1e-5, rtol=0)
    # At the patch-grid size, bilinear upsampling is the identity.
    torch.testing.assert_close(extractor.extract(views, 7, 7), grid)


def test_dense_value_path_is_self_attention_through_the_global_head():
    extractor = build_extractor("clip-dense", arch=ARCH, random_init=True)
    images = extractor.preprocess(_colors(1))
    ours = extractor.patch_features(images)
    torch.testing.assert_close(ours, _reference_tokens(extractor.model, images), atol=1e-5, rtol=1e-4)
    # The ordinary last block (full attention) gives different tokens, so the check has teeth.
    visual = extractor.model.visual
    with torch.no_grad():
        x = visual.transformer(visual._embeds(images))
        full = F.normalize(visual.ln_post(x[:, 1:]) @ visual.proj, dim=-1).reshape(ours.shape)
    assert (ours - full).abs().max() > 1e-2


def test_dense_checkpoint_round_trip_and_matching_text_encoder(saved_model):
    model, path = saved_model
    extractor = build_extractor("clip-dense", arch=ARCH, checkpoint=path)
    images = extractor.preprocess(_colors(2))
    torch.testing.assert_close(extractor.patch_features(images), _reference_tokens(model, images), atol=1e-5, rtol=1e-4)
    text = build_text_encoder("open_clip", **extractor.text_encoder_options)
    assert text.name == extractor.text_model and text.dim == extractor.feature_dim
    assert text.model is extractor.model  # one loaded model serves both towers
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer(ARCH)(PROMPTS), normalize=True).numpy()
    np.testing.assert_allclose(text.encode(PROMPTS), expected, atol=1e-6)


def test_dense_non_square_input_size():
    extractor = build_extractor("clip-dense", arch=ARCH, random_init=True, input_size=(224, 320))
    views = [_view(c) for c in _colors()]
    grid = extractor.patch_features(extractor.preprocess([v.color for v in views]))
    assert grid.shape == (2, 7, 10, 512)
    torch.testing.assert_close(grid.norm(dim=-1), torch.ones(2, 7, 10), atol=1e-5, rtol=0)
    assert extractor.extract(views, 24, 32).shape == (2, 24, 32, 512)
    native = build_extractor("clip-dense", arch=ARCH, random_init=True, input_size=(224, 224))
    default = build_extractor("clip-dense", arch=ARCH, random_init=True)
    images = default.preprocess([v.color for v in views])
    torch.testing.assert_close(native.patch_features(images), default.patch_features(images))
    with pytest.raises(ValueError, match="multiples of the patch size"):
        build_extractor("clip-dense", arch=ARCH, random_init=True, input_size=(224, 300))
