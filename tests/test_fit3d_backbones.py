"""FiT3D's backbone registry: timm names, the feature definition, preprocessing, weights from
files (local and S3), the fine-tuned export loaded as ``<backbone>-fit3d``, and the extractors."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from openscene_ray.extractors import build_extractor
from openscene_ray.models.backbone_io import build_backbone, save_backbone_export
from openscene_ray.models.backbones import BACKBONES, BackboneConfig, BackboneError

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}  # a 1-block ViT: real code paths, fast on CPU
FACTS = {  # seed-systems facts §2.1
    "dinov2_small": ("vit_small_patch14_dinov2.lvd142m", 384, 14),
    "dinov2_base": ("vit_base_patch14_dinov2.lvd142m", 768, 14),
    "dinov2_reg_small": ("vit_small_patch14_reg4_dinov2.lvd142m", 384, 14),
    "clip_base": ("vit_base_patch16_clip_384.laion2b_ft_in12k_in1k", 768, 16),
    "mae_base": ("vit_base_patch16_224.mae", 768, 16),
    "deit3_base": ("deit3_base_patch16_224.fb_in1k", 768, 16),
}


def _tiny(name="dinov2_small", **extra):
    return build_backbone({"name": name, "random_init": True, "options": TINY, **extra})


def _images(n=2, h=61, w=75, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (n, h, w, 3), dtype=np.uint8))


def test_registry_has_the_facts_timm_names_and_fine_tuned_twins():
    from openscene_ray.kernel.model_specs import model_spec

    for name, (timm_name, dim, patch) in FACTS.items():
        entry = BACKBONES.get(name)
        assert entry.timm_name == timm_name and not entry.fine_tuned
        twin = BACKBONES.get(name + "-fit3d")
        assert twin.base == name and twin.timm_name == timm_name
        spec = model_spec(name)
        assert (spec.feature_dim, spec.patch_size) == (dim, patch)
        assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)  # CLIP included


@pytest.mark.parametrize("name", ["dinov2_reg_small", "clip_base", "deit3_base"])
def test_features_are_the_last_blocks_normed_patch_tokens(name):
    backbone = _tiny(name).eval()
    patch = FACTS[name][2]
    images = _images()
    x = backbone.preprocess(images)
    assert x.shape[-2:] == (61 // patch * patch, 75 // patch * patch)  # floor to the patch multiple
    feats = backbone(x)
    assert feats.shape == (2, 32, 61 // patch, 75 // patch)
    model = backbone.model
    tokens = model.norm(_blocks(model, x))
    tokens = tokens[:, model.num_prefix_tokens :]  # class token (and registers) dropped
    expected = tokens.reshape(2, 61 // patch, 75 // patch, 32).permute(0, 3, 1, 2)
    assert torch.allclose(feats, expected, atol=1e-5)
    assert model.num_prefix_tokens == (5 if name == "dinov2_reg_small" else 1)


def _blocks(model, x):
    x = model._pos_embed(model.patch_embed(x))
    x = model.norm_pre(model.patch_drop(x))
    return model.blocks(x)


def test_preprocess_resizes_and_normalises_with_imagenet_statistics():
    backbone = _tiny()
    grey = torch.full((1, 28, 42, 3), 128, dtype=torch.uint8)
    x = backbone.preprocess(grey)
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert x.shape == (1, 3, 28, 42) and torch.allclose(x[0, :, 5, 7], expected, atol=1e-6)
    with pytest.raises(ValueError, match="smaller than one 14-pixel patch"):
        backbone.preprocess(torch.zeros(1, 10, 40, 3, dtype=torch.uint8))


def test_weights_are_explicit():
    with pytest.raises(ValueError, match="random_init: true"):
        BackboneConfig(name="dinov2_small")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        BackboneConfig(name="dinov2_small-fit3d", random_init=True)
    with pytest.raises(ValueError, match="unknown backbone|not registered|lseg"):
        BackboneConfig(name="lseg", random_init=True)
    a, b = _tiny(seed=3), _tiny(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_weights_from_a_local_file_and_from_s3(tmp_path, s3_server):
    from openscene_ray.kernel import storage

    source = _tiny(seed=1).eval()
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    torch.save({"model": {"module." + k: v for k, v in state.items()}}, tmp_path / "ddp.pth")
    images = _images()
    expected = source.features(images)
    for uri in (str(path), str(tmp_path / "ddp.pth")):
        loaded = build_backbone({"name": "dinov2_small", "checkpoint": uri, "options": TINY}).eval()
        assert torch.allclose(loaded.features(images), expected, atol=1e-6)
    bucket = s3_server.bucket("fit3d")
    storage.write_bytes(f"s3://{bucket}/w/weights.safetensors", path.read_bytes())
    remote = build_backbone({"name": "dinov2_small", "checkpoint": f"s3://{bucket}/w/weights.safetensors",
                             "options": TINY, "model_cache": str(tmp_path / "cache")}).eval()  # fmt: skip
    assert torch.allclose(remote.features(images), expected, atol=1e-6)
    wrong = build_backbone({"name": "clip_base", "random_init": True, "options": TINY})
    save_file({k: v.contiguous() for k, v in wrong.model.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    with pytest.raises(BackboneError, match="clip.safetensors"):
        build_backbone({"name": "dinov2_small", "checkpoint": str(tmp_path / "clip.safetensors"), "options": TINY})


def test_fine_tuned_export_loads_as_fit3d_and_concatenates(tmp_path):
    original_config = BackboneConfig(name="dinov2_small", random_init=True, seed=0, options=TINY)
    original = build_backbone(original_config).eval()
    tuned = build_backbone(original_config)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01)
    uri = save_backbone_export(str(tmp_path / "model"), tuned, original_config, {"run": "test"})
    images = _images()
    loaded = build_backbone({"name": "dinov2_small-fit3d", "checkpoint": uri}).eval()
    assert loaded.name == "dinov2_small-fit3d"
    assert torch.allclose(loaded.features(images), tuned.eval().features(images), atol=1e-6)
    concat = build_backbone({"name": "dinov2_small-fit3d", "checkpoint": uri, "concat_original": True}).eval()
    both = concat.features(images)
    assert concat.feature_dim == 64 and both.shape[1] == 64
    assert torch.allclose(both[:, :32], original.features(images), atol=1e-6)
    assert torch.allclose(both[:, 32:], loaded.features(images), atol=1e-6)
    with pytest.raises(BackboneError, match="fine-tuned 'dinov2_small'"):
        build_backbone({"name": "clip_base-fit3d", "checkpoint": uri})
    (tmp_path / "model" / "model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(BackboneError, match="digest"):
        build_backbone({"name": "dinov2_small-fit3d", "checkpoint": uri})


def test_backbones_are_extractors(synthetic_world):
    from openscene_ray.kernel.manifest import load_scene

    views = load_scene(synthetic_world.records[0]).views[:2]
    extractor = build_extractor("dinov2_small", random_init=True, options=TINY, batch_size=2)
    feats = extractor.extract(views, 60, 80)
    assert feats.shape == (2, 60, 80, 32) and extractor.text_model == "none"
    tokens = extractor.backbone.features(torch.from_numpy(np.stack([v.color for v in views])))
    assert tokens.shape == (2, 32, 240 // 14, 320 // 14)
    small = torch.nn.functional.interpolate(tokens, size=(60, 80), mode="bilinear", align_corners=False)
    assert torch.allclose(feats.permute(0, 3, 1, 2), small, atol=1e-5)
