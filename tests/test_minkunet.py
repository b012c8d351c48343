"""spconv's CPU path against dense convolutions, the MinkUNet18A network, the loss and the export."""

from __future__ import annotations

import numpy as np
import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F

from openscene_ray.kernel import storage
from openscene_ray.models import (
    CheckpointError,
    CheckpointMetadata,
    MinkUNetConfig,
    build_model,
    cosine_distill_loss,
    load_checkpoint,
    prepare_indices,
    save_checkpoint,
)
from openscene_ray.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME

NATIVE = spconv.ConvAlgo.Native
GRID = 6
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """spconv's many small CPU matmuls slow down ~10x when OpenMP threads compete for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- spconv vs dense convolution


def _sites(seed: int, batch: int = 2, density: float = 0.4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    occupied = torch.rand(batch, GRID, GRID, GRID, generator=g) < density
    # nonzero() is column-major; spconv silently misreads non-contiguous indices.
    return occupied.nonzero().to(torch.int32).contiguous()


def _scatter(indices: torch.Tensor, feats: torch.Tensor, batch: int, size: int) -> torch.Tensor:
    """A dense ``[B, C, size, size, size]`` tensor holding ``feats`` at ``indices`` (differentiable)."""
    idx = indices.long()
    dense = torch.zeros(batch, size, size, size, feats.shape[1], dtype=feats.dtype)
    dense = dense.index_put((idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]), feats)
    return dense.permute(0, 4, 1, 2, 3)


def _gather(dense: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    idx = indices.long()
    return dense.permute(0, 2, 3, 4, 1)[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]]


def _grads(output: torch.Tensor, upstream: torch.Tensor, *leaves: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad((output * upstream).sum(), leaves)


def test_spconv_weight_layout_is_out_k_k_k_in():
    conv = spconv.SubMConv3d(2, 5, 3, bias=False, algo=NATIVE)
    assert tuple(conv.weight.shape) == (5, 3, 3, 3, 2)
    inverse = spconv.SparseInverseConv3d(4, 3, 2, indice_key="k", bias=False, algo=NATIVE)
    assert tuple(inverse.weight.shape) == (3, 2, 2, 2, 4)


def test_submconv_equals_dense_conv3d_at_active_sites_forward_and_backward():
    torch.manual_seed(0)
    indices = _sites(1)
    feats = torch.randn(indices.shape[0], 3, requires_grad=True)
    conv = spconv.SubMConv3d(3, 4, 3, bias=False, algo=NATIVE)
    out = conv(spconv.SparseConvTensor(feats, indices, [GRID] * 3, 2))
    assert torch.equal(out.indices, indices)  # submanifold: outputs exactly on the inputs

    weight = conv.weight.detach().clone().requires_grad_(True)
    dense_in = _scatter(indices, feats, 2, GRID)
    # spconv is a cross-correlation: weight[o, kx, ky, kz, i] multiplies x[p + k - 1].
    reference = _gather(F.conv3d(dense_in, weight.permute(0, 4, 1, 2, 3), padding=1), indices)
    torch.testing.assert_close(out.features, reference, **TOL)
    flipped = _gather(F.conv3d(dense_in, weight.detach().permute(0, 4, 1, 2, 3).flip(2, 3, 4), padding=1), indices)
    assert (flipped - out.features).abs().max() > 0.1  # the orientation test can tell the two apart

    upstream = torch.randn_like(reference)
    g_feats, g_weight = _grads(out.features, upstream, feats, conv.weight)
    r_feats, r_weight = _grads(reference, upstream, feats, weight)
    torch.testing.assert_close(g_feats, r_feats, **TOL)
    torch.testing.assert_close(g_weight, r_weight, **TOL)


def test_strided_sparseconv_equals_dense_conv3d_forward_and_backward():
    torch.manual_seed(1)
    indices = _sites(2)
    feats = torch.randn(indices.shape[0], 3, requires_grad=True)
    conv = spconv.SparseConv3d(3, 4, 2, stride=2, bias=False, indice_key="d", algo=NATIVE)
    out = conv(spconv.SparseConvTensor(feats, indices, [GRID] * 3, 2))
    assert out.spatial_shape == [GRID // 2] * 3
    coarse = torch.cat([indices[:, :1], indices[:, 1:] // 2], 1)
    assert sorted(map(tuple, out.indices.tolist())) == sorted(set(map(tuple, coarse.tolist())))

    weight = conv.weight.detach().clone().requires_grad_(True)
    dense_in = _scatter(indices, feats, 2, GRID)
    reference = _gather(F.conv3d(dense_in, weight.permute(0, 4, 1, 2, 3), stride=2), out.indices)
    torch.testing.assert_close(out.features, reference, **TOL)

    upstream = torch.randn_like(reference)
    g_feats, g_weight = _grads(out.features, upstream, feats, conv.weight)
    r_feats, r_weight = _grads(reference, upstream, feats, weight)
    torch.testing.assert_close(g_feats, r_feats, **TOL)
    torch.testing.assert_close(g_weight, r_weight, **TOL)


def test_inverse_conv_equals_conv_transpose3d_on_the_original_sites_forward_and_backward():
    torch.manual_seed(2)
    indices = _sites(3)
    feats = torch.randn(indices.shape[0], 3)
    down = spconv.SparseConv3d(3, 4, 2, stride=2, bias=False, indice_key="d", algo=NATIVE)
    coarse = down(spconv.SparseConvTensor(feats, indices, [GRID] * 3, 2))
    coarse_feats = coarse.features.detach().clone().requires_grad_(True)
    up = spconv.SparseInverseConv3d(4, 5, 2, indice_key="d", bias=False, algo=NATIVE)
    out = up(coarse.replace_feature(coarse_feats))
    assert torch.equal(out.indices, indices)  # lands exactly on the skip's coordinates, in order
    assert out.spatial_shape == [GRID] * 3

    weight = up.weight.detach().clone().requires_grad_(True)
    dense_in = _scatter(coarse.indices, coarse_feats, 2, GRID // 2)
    # conv_transpose3d weights are [in, out, k, k, k]; spconv's inverse kernel is not flipped.
    reference = _gather(F.conv_transpose3d(dense_in, weight.permute(4, 0, 1, 2, 3), stride=2), indices)
    torch.testing.assert_close(out.features, reference, **TOL)

    upstream = torch.randn_like(reference)
    g_feats, g_weight = _grads(out.features, upstream, coarse_feats, up.weight)
    r_feats, r_weight = _grads(reference, upstream, coarse_feats, weight)
    torch.testing.assert_close(g_feats, r_feats, **TOL)
    torch.testing.assert_close(g_weight, r_weight, **TOL)


# ---------------------------------------------------------------- MinkUNet18A


def _reference_parameter_count(in_channels: int, out_channels: int) -> int:
    """MinkUNet18A counted from its description (bias-free convs, BN weight+bias)."""

    def conv(cin, cout, k):
        return cin * cout * k**3

    def block(cin, cout):
        n = conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3) + 2 * cout
        return n + (conv(cin, cout, 1) + 2 * cout if cin != cout else 0)

    total, channels = conv(in_channels, 32, 5) + 2 * 32, 32
    for planes in (32, 64, 128, 256):
        total += conv(channels, channels, 2) + 2 * channels + block(channels, planes) + block(planes, planes)
        channels = planes
    for planes, skip in ((128, 128), (128, 64), (96, 32), (96, 32)):
        total += conv(channels, planes, 2) + 2 * planes + block(planes + skip, planes) + block(planes, planes)
        channels = planes
    return total + conv(channels, out_channels, 1)


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "expected"),
    [(1, 768, 15_556_960), (3, 768, 15_564_960), (1, 512, 15_532_384)],
)
def test_parameter_count_matches_minkunet18a(in_channels, out_channels, expected):
    assert _reference_parameter_count(in_channels, out_channels) == expected
    model = build_model(MinkUNetConfig(in_channels=in_channels, out_channels=out_channels))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    model = build_model()
    # Kaiming normal, fan_out = out * kernel volume: block4 conv2 is 256 -> 256, k=3.
    w = model.block4[1].conv2.weight
    assert abs(w.std().item() - (2.0 / (256 * 27)) ** 0.5) < 0.02 * (2.0 / (256 * 27)) ** 0.5
    # Transposed convs keep ME's default U(+-1/sqrt(out * 8)).
    w = model.convtr4p16s2.weight
    bound = 1.0 / (128 * 8) ** 0.5
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.95 * bound
    assert torch.equal(model.bn0.weight, torch.ones(32)) and torch.equal(model.bntr7.bias, torch.zeros(96))


def _room(rng: np.random.Generator, n: int) -> np.ndarray:
    """Voxel coords of points on the floor and three walls of a small room (surface-like, like scans)."""
    pts = rng.uniform(0, 1, (n, 3)) * [1.6, 1.2, 0.8]
    face = rng.integers(0, 4, n)
    pts[face == 0, 2] = 0.0
    pts[face == 1, 0] = 0.0
    pts[face == 2, 1] = 0.0
    pts[face == 3, 0] = 1.6
    return np.unique(np.floor(pts / 0.02).astype(np.int32), axis=0)


def _batch(seed: int, n: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    scenes = [_room(rng, n), _room(rng, n) + 7]  # the second one off the origin
    return torch.from_numpy(
        np.concatenate([np.concatenate([np.full((len(s), 1), b, np.int32), s], 1) for b, s in enumerate(scenes)])
    )


def test_minkunet18a_forward_backward_and_one_adam_step_reduce_the_loss():
    torch.manual_seed(0)
    coords = _batch(0, 1500)
    m = coords.shape[0]
    assert 2000 < m < 3500
    model = build_model()
    feats = torch.ones(m, 1)
    target = F.normalize(torch.randn(m, 768), dim=1).half()
    mask = torch.rand(m) < 0.8
    out = model(coords, feats, batch_size=2)
    assert out.shape == (m, 768) and out.dtype == torch.float32 and torch.isfinite(out).all()
    loss = cosine_distill_loss(out, target, mask)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without gradient: {missing}"
    optimizer.step()
    with torch.no_grad():
        after = cosine_distill_loss(model(coords, feats, batch_size=2), target, mask)
    assert after.item() < loss.item() - 0.01, (loss.item(), after.item())


def test_output_rows_follow_input_order_and_batch_items_are_independent():
    torch.manual_seed(0)
    model = build_model(MinkUNetConfig(out_channels=16)).eval()
    coords = _batch(1, 250)
    feats = torch.ones(coords.shape[0], 1)
    with torch.no_grad():
        out = model(coords, feats, 2)
        perm = torch.randperm(coords.shape[0])
        torch.testing.assert_close(model(coords[perm], feats[perm], 2), out[perm], rtol=1e-4, atol=1e-5)
        # Scene 1 alone (as batch item 0) gives the same rows as inside the batch.
        second = coords[:, 0] == 1
        alone = coords[second].clone()
        alone[:, 0] = 0
        torch.testing.assert_close(model(alone, feats[second], 1), out[second], rtol=1e-4, atol=1e-5)


def test_prepare_indices_shifts_each_item_and_validates():
    coords = torch.tensor([[0, -3, 5, 2], [0, -1, 6, 2], [1, 40, 40, 40], [1, 41, 40, 40]], dtype=torch.int64)
    strided = coords.t().contiguous().t()  # column-major like nonzero(); must come out contiguous
    indices, shape = prepare_indices(strided, 2)
    assert indices.dtype == torch.int32 and indices.is_contiguous()
    assert indices.tolist() == [[0, 0, 0, 0], [0, 2, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]]
    assert shape == [16, 16, 16]
    with pytest.raises(ValueError, match="duplicate"):
        prepare_indices(torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]]), 1)
    with pytest.raises(ValueError, match="batch indices"):
        prepare_indices(torch.tensor([[2, 1, 1, 1]]), 2)
    with pytest.raises(ValueError, match="integer"):
        prepare_indices(torch.zeros(3, 4), 1)


def test_explicit_gpu_algorithm_is_refused_on_cpu():
    model = build_model(MinkUNetConfig(out_channels=8, algo="mask_implicit_gemm"))
    with pytest.raises(ValueError, match="needs CUDA"):
        model(torch.tensor([[0, 0, 0, 0]], dtype=torch.int32), torch.ones(1, 1), 1)


def test_config_validation():
    with pytest.raises(ValueError):
        MinkUNetConfig(stem_kernel=4)
    with pytest.raises(ValueError):
        MinkUNetConfig(planes=(32, 64, 128))
    with pytest.raises(ValueError):
        MinkUNetConfig(algo="fast")


# ---------------------------------------------------------------- loss


def test_cosine_distill_loss_values_mask_and_fp16_target():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[2.0, 0.0], [0.0, -1.0], [0.0, 5.0], [7.0, 0.0]], dtype=torch.float16)
    # cosines: 1, -1, 0, 1/sqrt(2)
    expected = torch.tensor([0.0, 2.0, 1.0, 1.0 - 2**-0.5])
    loss = cosine_distill_loss(pred, target, torch.ones(4, dtype=torch.bool))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.mean().item(), abs=1e-6)
    mask = torch.tensor([False, True, True, False])
    assert cosine_distill_loss(pred, target, mask).item() == pytest.approx(1.5, abs=1e-6)
    cosine_distill_loss(pred, target, mask).backward()
    assert pred.grad[0].abs().sum() == 0 and pred.grad[3].abs().sum() == 0 and pred.grad[2].abs().sum() > 0
    with pytest.raises(ValueError, match="no voxel"):
        cosine_distill_loss(pred, target, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        cosine_distill_loss(pred, target, torch.ones(4))


# ---------------------------------------------------------------- checkpoint export


@pytest.fixture(scope="module")
def trained():
    """A MinkUNet18A whose weights and BN statistics differ from any fresh initialisation."""
    torch.manual_seed(3)
    model = build_model(MinkUNetConfig(out_channels=512))
    coords = _batch(2, 150)
    feats = torch.ones(coords.shape[0], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = F.normalize(torch.randn(coords.shape[0], 512), dim=1)
    loss = cosine_distill_loss(model(coords, feats, 2), target)
    loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        expected = model(coords, feats, 2)
    return model, coords, feats, expected


@pytest.mark.parametrize("where", ["local", "memory"])
def test_checkpoint_round_trip_gives_identical_outputs(trained, tmp_path, where):
    model, coords, feats, expected = trained
    uri = str(tmp_path / "export") if where == "local" else f"memory://ckpt-{tmp_path.name}/export"
    metadata = CheckpointMetadata(
        voxel_size=0.02, text_model="ViT-B-32", feature_dim=512, label_set="scannet20", labels=["wall", "floor"]
    )
    save_checkpoint(uri, model, model.config, metadata)
    assert storage.exists(storage.join(uri, WEIGHTS_NAME)) and storage.exists(storage.join(uri, CONFIG_NAME))
    torch.manual_seed(99)
    loaded, config, meta = load_checkpoint(uri)
    assert config == model.config and meta == metadata and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(coords, feats, 2), expected)
        fresh = build_model(config).eval()
        assert not torch.allclose(fresh(coords, feats, 2), expected, atol=1e-3)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_checkpoint_rejects_incomplete_mismatched_or_inconsistent_exports(trained, tmp_path):
    model, *_ = trained
    uri = f"memory://ckpt-bad-{tmp_path.name}/export"
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(uri)
    with pytest.raises(CheckpointError, match="feature_dim"):
        save_checkpoint(uri, model, model.config, CheckpointMetadata(voxel_size=0.02, text_model="x", feature_dim=768))
    plain = {"voxel_size": 0.02, "text_model": "x", "feature_dim": 512}
    with pytest.raises(CheckpointError, match="built from"):
        save_checkpoint(uri, model, MinkUNetConfig(out_channels=512, in_channels=3), plain)
    save_checkpoint(uri, model, model.config, plain)
    weights = bytearray(storage.read_bytes(storage.join(uri, WEIGHTS_NAME)))
    weights[-1] ^= 0xFF
    storage.write_bytes(storage.join(uri, WEIGHTS_NAME), bytes(weights))
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(uri)


def test_auto_algorithm_follows_the_device_of_the_input():
    model = build_model(MinkUNetConfig(out_channels=8))
    convs = {name: m for name, m in model.named_modules() if hasattr(m, "algo") and hasattr(m, "kernel_size")}
    model._select_algo(torch.device("cuda"))  # what a forward on a GPU tensor does first
    assert convs["conv0p1s1"].algo == spconv.ConvAlgo.Native  # k=5: 125 offsets, Native as spconv picks it
    assert convs["block1.0.conv1"].algo == spconv.ConvAlgo.MaskImplicitGemm
    assert convs["convtr7p2s2"].algo == spconv.ConvAlgo.MaskImplicitGemm
    coords = _batch(4, 60)
    out = model(coords, torch.ones(coords.shape[0], 1), 2)  # back on CPU: every conv runs Native again
    assert out.shape == (coords.shape[0], 8)
    assert all(m.algo == spconv.ConvAlgo.Native for m in convs.values())


def test_checkpoint_of_a_wrapped_model_stores_the_bare_state_dict(tmp_path):
    torch.manual_seed(5)
    config = MinkUNetConfig(out_channels=8, planes=(8, 8, 8, 8, 8, 8, 8, 8), init_dim=8)
    model = build_model(config)
    uri = str(tmp_path / "wrapped")
    metadata = CheckpointMetadata(voxel_size=0.05, text_model="t", feature_dim=8)
    save_checkpoint(uri, torch.nn.DataParallel(model), config, metadata)
    loaded, _, meta = load_checkpoint(uri)
    assert meta.voxel_size == 0.05 and set(loaded.state_dict()) == set(model.state_dict())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
