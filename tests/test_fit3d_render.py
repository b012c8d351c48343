"""FiT3D's pure cores without Ray: the decoder, the losses, the Gaussian rasteriser (against
closed forms and gsplat's own pure-torch projection), the z-buffer renderer against the fusion
geometry, flips, and the per-scene files."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from openscene_ray.fit3d.camera import Camera
from openscene_ray.fit3d.finetune.data import Sample, flip_sample
from openscene_ray.fit3d.finetune.loop import student_loss
from openscene_ray.fit3d.gaussians import FeatureDecoder, GaussianModel
from openscene_ray.fit3d.losses import masked_l1, ssim, stage1_loss
from openscene_ray.fit3d.raster import EPS2D, project_gaussians, rasterize
from openscene_ray.fit3d.representation import (
    GaussianScene,
    PointScene,
    load_representation,
    save_representation,
)
from openscene_ray.fit3d.splat import render_points, zbuffer
from openscene_ray.fusion.core import FusionParams, project, visible_points
from openscene_ray.kernel.manifest import load_scene

# A 40x30 pinhole camera at the origin looking down +z (OpenCV frame = world frame).
K = np.array([[50.0, 0, 19.5], [0, 50.0, 14.5], [0, 0, 1]])
CAMERA = Camera(np.eye(4), K, 40, 30)


def _gaussians(means, scale, opacity):
    n = len(means)
    means = torch.tensor(means, dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64)
    scales = torch.full((n, 3), scale, dtype=torch.float64)
    return means, quats, scales, torch.full((n,), opacity, dtype=torch.float64)


# ---------------------------------------------------------------- decoder and losses


def test_decoder_is_a_biasless_3x3_conv_with_fit3d_state_key():
    decoder = FeatureDecoder(64, 8)
    assert list(decoder.state_dict()) == ["0.weight"] and decoder[0].weight.shape == (8, 64, 3, 3)
    with torch.no_grad():
        decoder[0].weight.copy_(torch.arange(8 * 64 * 9, dtype=torch.float32).reshape(8, 64, 3, 3))
    impulse = torch.zeros(64, 5, 6)
    impulse[3, 2, 2] = 1.0
    out = decoder(impulse)  # [64, H, W] -> [8, H, W]
    assert out.shape == (8, 5, 6)
    # cross-correlation with padding 1: an impulse at (2, 2) writes w[:, c, k, l] at (2 - k + 1, 2 - l + 1)
    for k in range(3):
        for ll in range(3):
            assert torch.equal(out[:, 3 - k, 3 - ll], decoder[0].weight[:, 3, k, ll])
    assert torch.count_nonzero(out.abs().sum(0)) == 9
    batched = decoder(impulse[None].expand(2, -1, -1, -1))
    assert torch.equal(batched[1], out)


def test_masked_l1_matches_fit3d_formula():
    out = torch.zeros(2, 4, 3, 3)
    target = torch.full((2, 4, 3, 3), 10.0)
    mask = torch.zeros(2, 3, 3)
    mask[0, :, 0] = 1.0
    target[0, :, :, 0] = 2.0  # only the masked column counts: |0 - 2| everywhere there
    assert masked_l1(out, target, mask).item() == pytest.approx(2.0)
    half = mask * 0.5  # soft masks weight the pixels: sum(|d| m) / (sum(m) D)
    assert masked_l1(out, target, half).item() == pytest.approx(2.0)
    assert masked_l1(out, target, torch.ones(2, 1, 3, 3)).item() == pytest.approx((2 * 3 + 10 * 15) / 18)
    empty = masked_l1(out.requires_grad_(), target, torch.zeros(2, 3, 3))
    empty.backward()
    assert empty.item() == 0.0 and torch.count_nonzero(out.grad) == 0


def test_student_loss_downsamples_target_and_mask_bilinearly():
    class Identity(torch.nn.Module):
        mean = torch.zeros(1, 3, 1, 1)

        def preprocess(self, images):
            return images.permute(0, 3, 1, 2).float()[:, :, ::2, ::2]  # "tokens" at half resolution

        def forward(self, x):
            return x

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (2, 8, 12, 3), dtype=np.uint8))
    targets = torch.from_numpy(rng.normal(size=(2, 3, 8, 12)).astype(np.float32))
    masks = torch.from_numpy((rng.random((2, 8, 12)) > 0.3).astype(np.float32))
    samples = [Sample(images[i], targets[i], masks[i], False) for i in range(2)]
    model = Identity()
    loss, covered = student_loss(model, model, samples)
    small_t = F.interpolate(targets, size=(4, 6), mode="bilinear", align_corners=False)
    small_m = F.interpolate(masks[:, None], size=(4, 6), mode="bilinear", align_corners=False)
    expected = masked_l1(model.preprocess(images), small_t, small_m)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert covered == pytest.approx(float(small_m.mean()), rel=1e-6)


def test_stage1_loss_weights_and_ssim():
    rng = torch.Generator().manual_seed(0)
    image = torch.rand(3, 16, 16, generator=rng)
    assert ssim(image, image).item() == pytest.approx(1.0, abs=1e-5)
    features, target = torch.zeros(5, 16, 16), torch.full((5, 16, 16), 0.5)
    rgb = (image + 0.1).clamp(0, 1)
    total, parts = stage1_loss(features, target, rgb, image)
    assert parts["feature_l1"] == pytest.approx(0.5)
    assert total.item() == pytest.approx(0.5 + 0.8 * parts["rgb_l1"] + 0.2 * parts["dssim"], rel=1e-6)
    assert 0 < parts["dssim"] < 1


# ---------------------------------------------------------------- Gaussian rasteriser (CPU, pure torch)


def test_single_gaussian_matches_the_closed_form():
    # An isotropic Gaussian (sigma 0.02 m) 2 m in front of the camera at the principal point:
    # its image covariance is (f sigma / z)^2 + 0.3 px^2 (3DGS's dilation), alpha = o exp(-d^2 / 2 s^2).
    means, quats, scales, opacity = _gaussians([[0.0, 0.0, 2.0]], 0.02, 0.8)
    colors = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    out = rasterize(means, quats, scales, opacity, colors, CAMERA, backend="torch")
    var = (50.0 * 0.02 / 2.0) ** 2 + EPS2D
    u, v = np.meshgrid(np.arange(40), np.arange(30))
    expected = 0.8 * np.exp(-((u - 19.5) ** 2 + (v - 14.5) ** 2) / (2 * var))
    expected[expected < 1 / 255] = 0.0
    assert np.abs(out.alpha.numpy() - expected).max() < 1e-9
    assert torch.allclose(out.image[1], 0.5 * out.alpha)
    assert out.radii.tolist() == [math.ceil(math.sqrt(2 * math.log(0.8 * 255)) * math.sqrt(var))]


def test_front_to_back_compositing_of_two_gaussians():
    means, quats, scales, opacity = _gaussians([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0]], 0.05, 0.6)
    colors = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)  # far: channel 1, near: channel 0
    out = rasterize(means, quats, scales, opacity, colors, CAMERA, backend="torch")
    # at the shared centre pixel both alphas are 0.6 * exp(-d^2/2s^2) with the near one in front
    u, v = 19, 14
    d2 = 0.5**2 + 0.5**2
    a_near = 0.6 * math.exp(-d2 / (2 * ((50 * 0.05 / 2) ** 2 + EPS2D)))
    a_far = 0.6 * math.exp(-d2 / (2 * ((50 * 0.05 / 3) ** 2 + EPS2D)))
    assert out.image[0, v, u].item() == pytest.approx(a_near, rel=1e-9)
    assert out.image[1, v, u].item() == pytest.approx(a_far * (1 - a_near), rel=1e-9)
    assert out.alpha[v, u].item() == pytest.approx(a_near + a_far * (1 - a_near), rel=1e-9)


def test_projection_matches_gsplat_pure_torch_reference():
    from gsplat.cuda._torch_impl import (
        _fully_fused_projection,
        _quat_scale_to_covar_preci,
    )

    rng = np.random.default_rng(1)
    n = 50
    means = torch.from_numpy(np.c_[rng.uniform(-0.4, 0.4, (n, 2)), rng.uniform(1.5, 3.0, n)])
    quats = torch.from_numpy(rng.normal(size=(n, 4)))
    scales = torch.from_numpy(rng.uniform(0.005, 0.05, (n, 3)))
    cam_to_world = np.eye(4)  # rolled 8 degrees about the optical axis, shifted sideways
    c, s = math.cos(0.14), math.sin(0.14)
    cam_to_world[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    cam_to_world[:3, 3] = [0.05, -0.02, 0.0]
    camera = Camera(cam_to_world, K, 40, 30)
    ours = project_gaussians(means, quats, scales, camera)
    covars, _ = _quat_scale_to_covar_preci(F.normalize(quats, dim=-1), scales, compute_preci=False)
    w2c, k = camera.tensors()
    k = k.double().clone()
    k[:2, 2] += 0.5  # gsplat's pixel centres sit at +0.5
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, w2c.double()[None], k[None], 40, 30)
    assert ours.index.numel() > 40  # nearly all are on the image
    idx = ours.index
    assert torch.allclose(ours.means2d + 0.5, means2d[0, idx], atol=1e-4)
    assert torch.allclose(ours.depths, depths[0, idx], atol=1e-6)
    assert torch.allclose(ours.conics, conics[0, idx], rtol=1e-3, atol=1e-6)
    assert bool((radii[0, idx] > 0).all())


def test_gaussian_render_of_a_flipped_camera_is_the_flipped_render():
    rng = np.random.default_rng(2)
    means = torch.from_numpy(np.c_[rng.uniform(-0.5, 0.5, (80, 2)), rng.uniform(1.5, 3.0, 80)])
    quats = torch.from_numpy(rng.normal(size=(80, 4)))
    scales = torch.from_numpy(rng.uniform(0.01, 0.04, (80, 3)))
    opacity = torch.from_numpy(rng.uniform(0.2, 0.9, 80))
    colors = torch.from_numpy(rng.normal(size=(80, 6)))
    out = rasterize(means, quats, scales, opacity, colors, CAMERA, backend="torch")
    flipped = rasterize(means, quats, scales, opacity, colors, CAMERA.flipped(), backend="torch")
    assert out.alpha.mean() > 0.1  # measured 0.142: a good part of the image is covered
    assert torch.allclose(flipped.image, out.image.flip(-1), atol=1e-9)
    assert torch.allclose(flipped.alpha, out.alpha.flip(-1), atol=1e-9)


def test_rasteriser_backends():
    means, quats, scales, opacity = _gaussians([[0.0, 0.0, 2.0]], 0.02, 0.8)
    with pytest.raises(ValueError, match="CUDA"):
        rasterize(means, quats, scales, opacity, opacity[:, None], CAMERA, backend="gsplat")
    with pytest.raises(ValueError, match="unknown rasteriser"):
        rasterize(means, quats, scales, opacity, opacity[:, None], CAMERA, backend="vulkan")
    auto = rasterize(means, quats, scales, opacity, opacity[:, None], CAMERA)  # CPU tensors: torch
    reference = rasterize(means, quats, scales, opacity, opacity[:, None], CAMERA, backend="torch")
    assert auto.alpha.max() > 0.5 and torch.equal(auto.alpha, reference.alpha)


# ---------------------------------------------------------------- z-buffered points vs the fusion geometry


def test_zbuffer_picks_the_nearest_point_per_pixel():
    xyz = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0], [0.1, 0.0, 2.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    winner, depth = zbuffer(xyz, CAMERA)
    centre = 14 * 40 + 20  # u = 50 * 0 / z + 19.5 -> 20 (half to even), v = 14.5 -> 14
    assert winner[centre] == 1 and depth[centre] == 2.0
    assert winner[14 * 40 + 22] == 2  # 50 * 0.1 / 2 + 19.5 = 22
    assert int((winner >= 0).sum()) == 2  # the far point is hidden, the point behind is dropped
    wide, _ = zbuffer(xyz, CAMERA, radius=1)
    assert int((wide >= 0).sum()) == 15  # two 3x3 squares sharing a column; the nearer wins it
    features = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    image, mask = render_points(xyz, features, CAMERA, radius=1)
    assert image[0, 14, 21].item() == 2.0 and image[0, 14, 23].item() == 3.0 and int(mask.sum()) == 15


def test_zbuffer_agrees_with_fusion_visibility(synthetic_world):
    record = synthetic_world.records[0]
    scene = load_scene(record)
    xyz = torch.from_numpy(np.asarray(scene.xyz, np.float64))
    params = FusionParams(record.cut_bound, record.visibility_threshold)
    checked = 0
    for view in scene.views[:4]:
        camera = Camera.from_view(view.cam_to_world, view.intrinsics, view.width, view.height)
        winner, _ = zbuffer(xyz, camera)
        proj = project(xyz, view.cam_to_world, view.intrinsics, view.height, view.width)
        # every winner projects (fusion's projection) to its pixel
        hit = torch.nonzero(winner >= 0).squeeze(1)
        pixel_of = dict(zip(proj.index.tolist(), (proj.v * view.width + proj.u).tolist()))
        assert all(pixel_of[w] == p for w, p in zip(winner[hit].tolist(), hit.tolist()))
        # where fusion sees a point (depth test against the exact depth), the winner is one it sees there
        idx, pix = visible_points(xyz, view, params)
        seen = {}
        for i, p in zip(idx.tolist(), pix.tolist()):
            seen.setdefault(p, set()).add(i)
        assert all(int(winner[p]) in points for p, points in seen.items())
        checked += len(seen)
    assert checked > 1000


def test_point_render_at_a_render_scale_resamples_the_image_plane():
    xyz = torch.tensor([[0.3, -0.2, 2.0]], dtype=torch.float64)
    big = Camera.from_view(np.eye(4), K, 40, 30, scale=2.0)
    assert (big.width, big.height) == (80, 60)
    _, mask = render_points(xyz, torch.ones(1, 1), big)
    u, v = 50 * 0.3 / 2 + 19.5, 50 * -0.2 / 2 + 14.5  # 27.0, 9.5 at 40x30
    (row, col) = torch.nonzero(mask)[0].tolist()
    assert (col, row) == (round((u + 0.5) * 2 - 0.5), round((v + 0.5) * 2 - 0.5))


# ---------------------------------------------------------------- flips and files


def test_flip_sample_flips_image_target_and_mask_together():
    rng = np.random.default_rng(3)
    xyz = torch.from_numpy(np.c_[rng.uniform(-0.5, 0.5, (300, 2)), rng.uniform(1.5, 3.0, 300)])
    points = PointScene(xyz, torch.from_numpy(rng.normal(size=(300, 4))), torch.arange(300), torch.ones(300), radius=1)
    target, mask = points.render_features(CAMERA)
    image = torch.from_numpy(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    sample = flip_sample(Sample(image, target, mask.float(), False))
    flipped_target, flipped_mask = points.render_features(CAMERA.flipped())
    assert sample.flipped and torch.equal(sample.image, image.flip(1))
    assert torch.equal(sample.target, flipped_target) and torch.equal(sample.mask, flipped_mask.float())
    assert torch.equal(flip_sample(sample).target, target)


def test_scene_files_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    xyz = rng.uniform(-0.5, 0.5, (60, 3)) + [0, 0, 2.0]
    model = GaussianModel.from_points(xyz.astype(np.float32), rng.integers(0, 255, (60, 3)), sh_degree=1, feature_dim=8)
    with torch.no_grad():
        model.sem.normal_()
        model.opacity.fill_(1.0)
    decoder = FeatureDecoder(8, 5)
    gaussians = GaussianScene(model.requires_grad_(False), decoder.requires_grad_(False), min_alpha=0.3)
    uri = str(tmp_path / "g.safetensors")
    save_representation(uri, gaussians, {"scene_id": "s", "settings": {"min_alpha": 0.3}})
    loaded, header = load_representation(uri)
    assert header["kind"] == "gaussians" and header["feature_dim"] == 5
    a, mask_a = gaussians.render_features(CAMERA)
    b, mask_b = loaded.render_features(CAMERA)
    assert mask_a.any() and torch.equal(mask_a, mask_b) and torch.allclose(a, b, atol=1e-5)
    points = PointScene(torch.from_numpy(xyz), torch.from_numpy(rng.normal(size=(60, 5))), torch.arange(60),
                        torch.ones(60), radius=1)  # fmt: skip
    save_representation(str(tmp_path / "p.safetensors"), points, {"settings": {"radius": 1}})
    loaded, _ = load_representation(str(tmp_path / "p.safetensors"))
    a, _ = points.render_features(CAMERA)
    b, _ = loaded.render_features(CAMERA)
    assert torch.allclose(a, b, atol=2e-3)  # features are stored as float16
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_representation(str(tmp_path / "bad.safetensors"))


def test_features_at_pixels_equal_the_bilinearly_upsampled_map():
    from openscene_ray.fit3d.consistency import sample_features
    from openscene_ray.fit3d.views import upsample

    tokens = torch.from_numpy(np.random.default_rng(5).normal(size=(6, 5, 7)))
    pixels = torch.tensor([0, 17, 40 * 30 - 1, 40 * 12 + 33])
    dense = upsample(tokens, 30, 40).reshape(6, -1)
    assert torch.allclose(sample_features(tokens, pixels, 40, 30), dense[:, pixels].T, atol=1e-9)
