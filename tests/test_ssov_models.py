"""SSOV's 3D side: Res16UNet34C beside MinkUNet18A in one model registry (spconv, CPU), the
cylindrical voxel grid, and SSOV's losses (TMP's InfoNCE + soft text target, CE + Lovász-softmax)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from openscene_ray.models import (
    CheckpointMetadata,
    MinkUNet,
    MinkUNetConfig,
    Res16UNet,
    Res16UNetConfig,
    build_model,
    load_checkpoint,
    model_kind,
    save_checkpoint,
    voxelize,
)
from openscene_ray.models.checkpoint import CONFIG_NAME
from openscene_ray.models.minkunet import build_model as build_minkunet
from openscene_ray.models.transforms import voxel_input
from openscene_ray.ssov.losses import (
    ce_lovasz_loss,
    info_nce,
    lovasz_softmax,
    soft_text_target,
    tmp_loss,
)


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """spconv's many small CPU matmuls slow down ~10x when OpenMP threads compete for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _reference_parameter_count(in_channels: int, out_channels: int) -> int:
    """Res16UNet34C counted from ME's description: stem k=3, LAYERS (2,3,4,6,2,2,2,2), PLANES
    (32,64,128,256,256,128,96,96), bias-free convs, BN weight+bias, a 1x1 head with a bias."""

    def conv(cin, cout, k):
        return cin * cout * k**3

    def block(cin, cout):
        n = conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3) + 2 * cout
        return n + (conv(cin, cout, 1) + 2 * cout if cin != cout else 0)

    total, ch = conv(in_channels, 32, 3) + 2 * 32, 32
    for planes, layers in ((32, 2), (64, 3), (128, 4), (256, 6)):
        total += conv(ch, ch, 2) + 2 * ch + block(ch, planes) + (layers - 1) * block(planes, planes)
        ch = planes
    for planes, skip, layers in ((256, 128, 2), (128, 64, 2), (96, 32, 2), (96, 32, 2)):
        total += conv(ch, planes, 2) + 2 * planes + block(planes + skip, planes) + (layers - 1) * block(planes, planes)
        ch = planes
    return total + conv(ch, out_channels, 1) + out_channels


@pytest.mark.parametrize(("in_channels", "out_channels", "expected"), [(1, 768, 37_917_472), (1, 17, 37_844_625)])
def test_parameter_count_matches_res16unet34c(in_channels, out_channels, expected):
    assert _reference_parameter_count(in_channels, out_channels) == expected
    model = build_model(Res16UNetConfig(in_channels=in_channels, out_channels=out_channels))
    assert isinstance(model, Res16UNet) and sum(p.numel() for p in model.parameters()) == expected
    head = sorted(n for n, _ in model.named_parameters() if "final." in n)
    assert head == ["final.bias", "final.conv.weight"]  # the reference's head group, its bias unfused


def test_one_registry_builds_both_networks_and_old_callers_still_work():
    assert model_kind(MinkUNetConfig()) == "minkunet18a" and model_kind(Res16UNetConfig()) == "res16unet34c"
    small = MinkUNetConfig(out_channels=8, planes=(8, 8, 8, 8, 8, 8, 8, 8), init_dim=8)
    assert type(build_model(small)) is MinkUNet and type(build_minkunet(small)) is MinkUNet
    assert type(build_model()) is MinkUNet  # the default stays MinkUNet18A
    with pytest.raises(TypeError, match="registered"):
        build_model(CheckpointMetadata(voxel_size=0.1, text_model="", feature_dim=1))


TINY = {"init_dim": 8, "planes": (8, 8, 8, 8, 8, 8, 8, 8), "layers": (1, 1, 1, 1, 1, 1, 1, 1)}


def _scene(seed: int = 0, n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    coords = np.unique(np.random.default_rng(seed).integers(0, 12, size=(n, 3)), axis=0)
    both = np.concatenate([np.c_[np.zeros(len(coords)), coords], np.c_[np.ones(len(coords)), coords]])
    return torch.from_numpy(both.astype(np.int32)), torch.ones(len(both), 1)


def test_res16unet_normalised_features_and_a_training_step():
    torch.manual_seed(0)
    model = build_model(Res16UNetConfig(out_channels=6, normalize=True, **TINY))
    coords, feats = _scene()
    out = model(coords, feats, 2)
    assert out.shape == (len(coords), 6) and torch.allclose(out.norm(dim=1), torch.ones(len(coords)), atol=1e-5)
    logits_model = build_model(Res16UNetConfig(out_channels=5, **TINY))
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 5, len(coords)))
    optimizer = torch.optim.SGD(logits_model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = ce_lovasz_loss(logits_model(coords, feats, 2), labels)
        optimizer.zero_grad()
        loss.backward()
        assert logits_model.final.bias.grad is not None and logits_model.final.bias.grad.abs().sum() > 0
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_res16unet_checkpoint_round_trip_and_old_checkpoints_load(tmp_path):
    torch.manual_seed(0)
    config = Res16UNetConfig(out_channels=4, **TINY)
    model = build_model(config).eval()
    meta = CheckpointMetadata(voxel_size=0.1, text_model="", feature_dim=4, extra={"head": "classes"})
    save_checkpoint(str(tmp_path / "res"), model, config, meta)
    loaded, loaded_config, _ = load_checkpoint(str(tmp_path / "res"))
    coords, feats = _scene(2)
    assert type(loaded) is Res16UNet and loaded_config == config
    assert torch.allclose(loaded(coords, feats, 2), model(coords, feats, 2), atol=1e-6)
    mink_config = MinkUNetConfig(out_channels=4, **{k: v for k, v in TINY.items()})
    save_checkpoint(str(tmp_path / "mink"), build_model(mink_config), mink_config, meta)
    document = (tmp_path / "mink" / CONFIG_NAME).read_text()
    (tmp_path / "mink" / CONFIG_NAME).write_text(document.replace('"model": "minkunet18a",', ""))  # an older export
    assert type(load_checkpoint(str(tmp_path / "mink"))[0]) is MinkUNet


def test_cylindrical_grid_bins_rho_and_z_at_the_voxel_size_and_phi_at_one_degree():
    def at(rho, phi_deg, z):
        a = math.radians(phi_deg)
        return [rho * math.cos(a), rho * math.sin(a), z]

    xyz = np.array([at(10.05, 30.2, 0.05), at(10.08, 30.8, 0.02), at(10.05, 31.2, 0.05), at(10.15, 30.2, 0.05),
                    at(10.05, 30.2, 0.15)])  # fmt: skip
    coords, rep, inverse = voxelize(xyz, 0.1, "cylindrical", 1.0)
    assert inverse[0] == inverse[1]  # same ρ cell (100), φ cell (30) and z cell (0)
    assert len({inverse[0], inverse[2], inverse[3], inverse[4]}) == 4  # φ 31, ρ 101, z 1: other voxels
    assert rep[inverse[0]] == 0
    cells = np.floor(np.c_[np.hypot(xyz[:, 0], xyz[:, 1]) / 0.1, np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])),
                           xyz[:, 2] / 0.1]).astype(int)  # fmt: skip
    assert np.array_equal(coords[inverse], cells - cells.min(0))
    assert voxel_input(xyz, None, 0.1, 1, coordinates="cylindrical").voxel_coords.shape[0] == 4
    assert np.array_equal(voxelize(xyz, 0.1)[2], voxelize(xyz, 0.1, "cartesian")[2])  # the default grid
    with pytest.raises(ValueError, match="unknown voxel coordinates"):
        voxelize(xyz, 0.1, "spherical")


def test_info_nce_and_the_soft_text_target():
    k = torch.eye(4)
    assert float(info_nce(k, k, 0.07)) < 1e-5 and float(info_nce(k, k.roll(1, 0), 0.07)) > 10
    text = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    same = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]).bool()
    target = soft_text_target(torch.tensor([0, 2, 4]), text, same)
    assert torch.allclose(target.sum(1), torch.ones(3))
    assert (target[0, 2:] == 0).all() and (target[1] == torch.tensor([0, 0, 1.0, 0, 0])).all()
    cos = float(text[0] @ text[1])
    assert torch.isclose(target[0, 1] / target[0, 0], torch.tensor(0.8 * cos / (0.2 + 0.8)))


def test_tmp_loss_means_paired_points_and_drops_superpixels_without_points():
    torch.manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(10, 8), dim=1).requires_grad_(True)
    text = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    same = torch.eye(5, dtype=torch.bool)
    masks = torch.randn(3, 8)
    pair_point, pair_sp = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 0, 1, 1, 1])  # superpixel 2 got no point
    loss, parts = tmp_loss(feats, pair_point, pair_sp, masks, torch.tensor([0, 3, 4]), text, same)
    assert parts["superpixels"] == 2
    k = torch.stack([feats[:2].mean(0), feats[2:5].mean(0)])
    q = torch.nn.functional.normalize(masks[:2], dim=1)
    expected_image = info_nce(k, q, 0.07)
    expected_text = info_nce(k, text, 0.07, soft_text_target(torch.tensor([0, 3]), text, same))
    assert torch.isclose(loss, 0.5 * expected_image + 0.5 * expected_text)
    loss.backward()
    assert feats.grad[:5].abs().sum() > 0 and feats.grad[5:].abs().sum() == 0


def _jaccard_loss(pred_probs: torch.Tensor, labels: torch.Tensor, c: int) -> float:
    """1 - IoU of class c for hard 0/1 predictions (the Lovász extension agrees there)."""
    fg, pred = labels == c, pred_probs[:, c] > 0.5
    return 1.0 - float((fg & pred).sum()) / float((fg | pred).sum())


def test_lovasz_softmax_is_the_jaccard_loss_on_hard_predictions_and_ce_ignores_255():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    for wrong in itertools.combinations(range(6), 2):
        pred = labels.clone()
        pred[list(wrong)] = (pred[list(wrong)] + 1) % 3
        probs = torch.nn.functional.one_hot(pred, 3).float()
        expected = np.mean([_jaccard_loss(probs, labels, c) for c in range(3)])
        assert float(lovasz_softmax(probs, labels)) == pytest.approx(expected)
    logits = torch.randn(6, 3, requires_grad=True)
    ignored = torch.tensor([0, 255, 1, 255, 2, 255])
    loss = ce_lovasz_loss(logits, ignored)
    loss.backward()
    assert logits.grad[[1, 3, 5]].abs().sum() == 0 and logits.grad[[0, 2, 4]].abs().sum() > 0
    assert float(ce_lovasz_loss(logits, torch.full((6,), 255))) == 0.0
