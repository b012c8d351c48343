"""The evaluation job on the synthetic world: label-oracle fusion + a short in-process distillation."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from PIL import Image

from openscene_ray.evaluation.config import EvaluateConfig
from openscene_ray.evaluation.job import run_evaluate
from openscene_ray.evaluation.metrics import UNKNOWN, EvalCounts
from openscene_ray.evaluation.plots import (
    BAR_COLOR,
    confusion_heatmap_png,
    iou_bar_chart_png,
    normalize_confusion,
)
from openscene_ray.evaluation.predict import max_text_cosine
from openscene_ray.evaluation.scoring import scene_counts
from openscene_ray.kernel.config import ConfigError, load_config
from openscene_ray.kernel.features import read_features, shard_uri
from openscene_ray.kernel.manifest import load_points, write_manifest
from openscene_ray.kernel.ply import read_ply
from openscene_ray.kernel.text import TextSpaceConfig, build_text_space, text_model_spec
from openscene_ray.kernel.visual import label_palette
from openscene_ray.models.checkpoint import save_checkpoint
from openscene_ray.models.loss import cosine_distill_loss
from openscene_ray.models.minkunet import MinkUNet, MinkUNetConfig
from openscene_ray.models.voxelize import batch_voxels, voxelize

TEXT = {"label_set": "scannet20", "encoder": "synthetic", "options": {"dim": 32, "seed": 0}}
VOXEL = 0.1
MODES = ("fusion", "distill", "ensemble")
K = 20


def _scene(record, fused_root):
    xyz, rgb, labels = load_points(record.points_uri)
    f2d, has2d = read_features(shard_uri(fused_root, record.scene_id)).dense(len(xyz))
    return xyz, rgb, labels, f2d, has2d


@pytest.fixture(scope="module")
def checkpoint(fused, synthetic_world, tmp_path_factory) -> str:
    """A small MinkUNet distilled for 30 Adam steps on the train scenes' fused features."""
    torch.manual_seed(0)
    config = MinkUNetConfig(out_channels=32, init_dim=8, planes=(16,) * 8, layers=(1,) * 8)
    model = MinkUNet(config)
    coords, targets, masks = [], [], []
    for record in (r for r in synthetic_world.records if r.split == "train"):
        xyz, _, _, f2d, has2d = _scene(record, fused)
        voxels, rep, _ = voxelize(xyz, VOXEL)
        coords.append(voxels)
        targets.append(torch.from_numpy(f2d[rep]).float())
        masks.append(torch.from_numpy(has2d[rep]))
    coords_t = torch.from_numpy(batch_voxels(coords))
    target, mask = torch.cat(targets), torch.cat(masks)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        loss = cosine_distill_loss(model(coords_t, torch.ones(len(coords_t), 1), batch_size=len(coords)), target, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.4
    uri = str(tmp_path_factory.mktemp("ckpt") / "model")
    meta = {"voxel_size": VOXEL, "text_model": text_model_spec("synthetic", TEXT["options"]), "feature_dim": 32,
            "label_set": "scannet20"}  # fmt: skip
    return save_checkpoint(uri, model.eval(), config, meta)


def _config(world, fused, checkpoint, output, **overrides) -> EvaluateConfig:
    base = {
        "manifest": world.manifest, "output": str(output), "fused": fused, "checkpoint": checkpoint,
        "text": TEXT, "resources": {"min_actors": 1, "max_actors": 1, "gpus_per_actor": 1, "cpus_per_actor": 1},
    }  # fmt: skip
    return load_config(EvaluateConfig, base=base | overrides)


@pytest.fixture(scope="module")
def evaluated(synthetic_world, fused, checkpoint, tmp_path_factory):
    output = tmp_path_factory.mktemp("eval")
    summary = run_evaluate(_config(synthetic_world, fused, checkpoint, output, save_ply=True, save_point_features=True))
    return summary, output, json.loads((output / "metrics.json").read_text())


def _val(world):
    return [r for r in world.records if r.split == "val"]


def _in_process(world, fused, checkpoint, modes=MODES, openscene_compat=False, **kwargs) -> dict:
    """Per-mode counts of the val scenes computed directly with scene_counts (no Ray)."""
    from openscene_ray.models.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint)
    text = build_text_space(TextSpaceConfig(**TEXT), openscene_compat)
    totals = {m: EvalCounts.zeros(K) for m in modes}
    for record in _val(world):
        xyz, rgb, labels, f2d, has2d = _scene(record, fused)
        for mode in modes:
            totals[mode] = totals[mode] + scene_counts(mode, labels, text, f2d=f2d, has2d=has2d, model=model,
                                                       xyz=xyz, rgb=rgb, voxel_size=VOXEL, **kwargs)  # fmt: skip
    return totals


def test_all_modes_sum_every_point_exactly(evaluated, synthetic_world, fused, checkpoint):
    summary, _, metrics = evaluated
    assert summary.ok and not summary.warnings and sorted(summary.scenes) == [r.scene_id for r in _val(synthetic_world)]
    expected = _in_process(synthetic_world, fused, checkpoint)
    gt_points = unseen = 0
    for record in _val(synthetic_world):
        _, _, labels, _, has2d = _scene(record, fused)
        gt_points += int((labels < K).sum())
        unseen += int(((labels < K) & ~has2d).sum())
    for mode in MODES:
        m = metrics["modes"][mode]
        np.testing.assert_array_equal(m["confusion"], expected[mode].confusion)  # distributed sum is exact
        np.testing.assert_array_equal(m["unknown"], expected[mode].unknown)
        assert m["num_points"] == gt_points == sum(c["points"] for c in m["per_class"].values())
        assert m["num_scenes"] == 2 and m["num_present"] == 10
        assert all(0 <= v <= 1 for v in (m["miou"], m["macc"], m["oacc"]))
        assert all(v is None or 0 <= v <= 1 for v in m["iou"] + m["acc"])
    fusion, distill, ensemble = (metrics["modes"][m] for m in MODES)
    assert fusion["miou"] >= 0.9 and fusion["num_unknown"] == unseen > 0
    assert fusion["coverage"] == pytest.approx(1 - unseen / gt_points) and distill["coverage"] == 1.0
    assert distill["num_unknown"] == ensemble["num_unknown"] == 0
    # distill learnt wall and floor from two bathrooms; chance (all "wall") would be ~0.05 mIoU
    assert distill["miou"] > 0.12 and distill["per_class"]["wall"]["iou"] > 0.5 and distill["per_class"]["floor"]["iou"] > 0.5
    assert ensemble["miou"] >= min(fusion["miou"], distill["miou"]) - 0.01
    assert ensemble["miou"] > distill["miou"] + 0.3  # the oracle's 2D features win where they exist
    assert metrics["tta_repeats"] == 1 and metrics["text_model"] == "synthetic:dim=32,seed=0"
    assert metrics["config"]["checkpoint"] == checkpoint and metrics["code_version"]


def test_2d_mode_scores_the_fusions_2d_model_per_view(synthetic_world, fused, checkpoint, tmp_path):
    """The job's 2d row equals the per-view counts computed in process, and its coverage (points
    some view sees) is the fusion's."""
    from openscene_ray.evaluation.views2d import per_view_counts, shard_extractor, shard_fusion_params
    from openscene_ray.kernel.manifest import load_scene

    summary = run_evaluate(_config(synthetic_world, fused, checkpoint, tmp_path, modes=["2d", "fusion"]))
    assert summary.ok and list(summary.modes) == ["2d", "fusion"]
    text = build_text_space(TextSpaceConfig(**TEXT))
    expected = EvalCounts.zeros(K)
    for record in _val(synthetic_world):
        metadata = read_features(shard_uri(fused, record.scene_id)).metadata
        scene = load_scene(record)
        counts, _ = per_view_counts(scene.xyz, scene.labels, scene.views, shard_extractor(metadata, "cpu"),
                                    shard_fusion_params(metadata), text)  # fmt: skip
        expected = expected + counts
    views, fusion = summary.modes["2d"], summary.modes["fusion"]
    np.testing.assert_array_equal(views["confusion"], expected.confusion)
    np.testing.assert_array_equal(views["unknown"], expected.unknown)
    assert views["coverage"] == pytest.approx(fusion["coverage"]) and 0.5 < views["coverage"] < 1
    # the exact oracle per view: right except near object borders (measured 0.969, fusion 0.968)
    assert views["miou"] > 0.9 and fusion["miou"] > 0.9


def _png(path):
    image = Image.open(path)
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(np.int64)


VIRIDIS = colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255


def test_figures_and_table_show_the_reported_numbers(evaluated, tmp_path):
    _, output, metrics = evaluated
    names = metrics["class_names"]
    table = (output / "metrics.md").read_text()
    for mode in MODES:
        m = metrics["modes"][mode]
        assert f"| {mode} | {100 * m['miou']:.1f} | {100 * m['macc']:.1f} |" in table
        assert f"| wall | {100 * m['iou'][0]:.1f} | {100 * m['acc'][0]:.1f} |" in table
        iou = np.array([np.nan if v is None else v for v in m["iou"]])
        # the data area of the job's figure: the same call on a scratch path reports its pixel box
        info = iou_bar_chart_png(iou, names, str(tmp_path / "box.png"), miou=m["miou"])
        img = _png(output / f"iou_{mode}.png")
        assert img.shape == (info.height, info.width, 3) == (600, 1200, 3) and img.std() > 20
        left, top, right, bottom = info.axes_box
        bar = np.abs(img - np.asarray(to_rgb(BAR_COLOR)) * 255).sum(axis=2) < 40
        width = (right - left) / K
        for k in range(K):
            rows = np.flatnonzero(bar[int(top) : int(bottom), int(left + (k + 0.5) * width)])
            if not np.isfinite(iou[k]) or iou[k] < 0.01:
                assert rows.size == 0, names[k]
            else:
                assert (bottom - top) - rows.min() == pytest.approx(iou[k] * (bottom - top), abs=2.5), names[k]
        info = confusion_heatmap_png(np.asarray(m["confusion"]), names, str(tmp_path / "c.png"))
        img = _png(output / f"confusion_{mode}.png")
        assert img.shape == (900, 1000, 3) and img.std() > 20
        expected = normalize_confusion(np.asarray(m["confusion"]))
        left, top, right, bottom = info.axes_box
        cw, ch = (right - left) / K, (bottom - top) / K
        for i, j in [(0, 0), (1, 1), (0, 1), (9, 9), (9, 0), (4, 4)]:
            rgb = img[int(top + (i + 0.2) * ch), int(left + (j + 0.15) * cw)]
            value = np.argmin(((VIRIDIS - rgb) ** 2).sum(axis=1)) / 255
            assert value == pytest.approx(expected[i, j], abs=0.02), (mode, i, j)


def _labels_from_colours(rgb):
    palette = np.concatenate([label_palette(K), [[128, 128, 128]]]).astype(np.int64)
    match = (rgb[:, None, :].astype(np.int64) == palette[None]).all(axis=2)
    assert (match.sum(axis=1) == 1).all()
    out = match.argmax(axis=1)
    out[out == K] = UNKNOWN
    return out


def test_ply_and_point_feature_outputs_match_the_metrics(evaluated, synthetic_world, fused):
    _, output, metrics = evaluated
    text = build_text_space(TextSpaceConfig(**TEXT))
    from_ply = {m: EvalCounts.zeros(K) for m in MODES}
    from_parquet = {m: EvalCounts.zeros(K) for m in MODES}
    chose_2d = unseen_to_3d = 0
    for record in _val(synthetic_world):
        xyz, _, labels, f2d, has2d = _scene(record, fused)
        gt_xyz, gt_rgb = read_ply((output / "ply" / record.scene_id / "gt.ply").read_bytes())
        np.testing.assert_array_equal(gt_xyz, xyz)
        keep = labels < K
        np.testing.assert_array_equal(_labels_from_colours(gt_rgb[keep]), labels[keep])
        table = pq.read_table(output / "point_features" / f"{record.scene_id}.parquet")
        assert table.num_rows == len(xyz) and table.schema.field("feature").type.list_size == 32
        f3d = table.column("feature").combine_chunks().flatten().to_numpy().reshape(-1, 32).astype(np.float32)
        for mode in MODES:
            _, rgb = read_ply((output / "ply" / record.scene_id / f"{mode}.ply").read_bytes())
            pred = _labels_from_colours(rgb)
            from_ply[mode] = from_ply[mode] + EvalCounts.from_predictions(pred, labels, K)
            stored = table.column(f"pred_{mode}").to_numpy()
            np.testing.assert_array_equal(stored, pred)
            from_parquet[mode] = from_parquet[mode] + EvalCounts.from_predictions(stored, labels, K)
        # stored 3D features reproduce the distill predictions (fp16 rounding aside)
        again = (f3d @ text.embeddings.T).argmax(1)
        assert (again == table.column("pred_distill").to_numpy()).mean() > 0.99
        # ensemble: the fused 2D prediction where 2D is clearly more confident, the 3D one where 3D is
        s2d = max_text_cosine(f2d, text.embeddings).numpy()
        s3d = max_text_cosine(f3d, text.embeddings).numpy()
        fus, dis, ens = (table.column(f"pred_{m}").to_numpy() for m in MODES)
        two = has2d & (s2d > s3d + 1e-2)
        three = ~has2d | (s3d > s2d + 1e-2)
        np.testing.assert_array_equal(ens[two], fus[two])
        np.testing.assert_array_equal(ens[three], dis[three])
        chose_2d, unseen_to_3d = chose_2d + two.sum(), unseen_to_3d + (~has2d).sum()
    # both branches are exercised: confident 2D points, and points no view saw (3D only)
    assert chose_2d > 1000 and unseen_to_3d > 0
    for mode in MODES:
        np.testing.assert_array_equal(from_ply[mode].confusion, metrics["modes"][mode]["confusion"])
        np.testing.assert_array_equal(from_parquet[mode].unknown, metrics["modes"][mode]["unknown"])
    # the point features are a query database: the best "wall" points are walls
    from openscene_ray.kernel.labels import PROMPT_TEMPLATE
    from openscene_ray.query.database import search_database
    from openscene_ray.query.embed import embed_texts

    query = embed_texts(["wall"], "synthetic", TEXT["options"], template=PROMPT_TEMPLATE)
    found = search_database(str(output / "point_features"), query, ["wall"], text=TextSpaceConfig(**TEXT))
    assert found["scanned"] == 2 and not found["failed"] and not found["warnings"]
    labels = {r.scene_id: load_points(r.points_uri)[2] for r in _val(synthetic_world)}
    top = found["results"][0]["points"]
    assert len(top) == 20 and all(labels[p["scene_id"]][p["point_index"]] == 0 for p in top)


def test_deterministic_reruns_and_the_compat_protocol(evaluated, synthetic_world, fused, checkpoint, tmp_path):
    _, _, first = evaluated
    # a fresh run on a CPU-only actor: identical metrics
    config = _config(synthetic_world, fused, checkpoint, tmp_path / "again",
                     resources={"min_actors": 1, "max_actors": 1, "gpus_per_actor": 0, "cpus_per_actor": 1})
    assert run_evaluate(config).ok
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["modes"] == first["modes"]

    assert run_evaluate(_config(synthetic_world, fused, checkpoint, tmp_path / "compat", openscene_compat=True,
                                tta_seed=3)).ok  # fmt: skip
    compat = json.loads((tmp_path / "compat" / "metrics.json").read_text())
    assert compat["tta_repeats"] == 5 and compat["prompts"][19] == "other"
    # a second run of the seeded test repeats (in-process, same scoring function) gives the same counts
    expected = _in_process(synthetic_world, fused, checkpoint, openscene_compat=True, tta_repeats=5, tta_seed=3)
    for mode in MODES:
        np.testing.assert_array_equal(compat["modes"][mode]["confusion"], expected[mode].confusion)
    other_seed = _in_process(synthetic_world, fused, checkpoint, ["distill"], openscene_compat=True, tta_repeats=5,
                             tta_seed=4)  # fmt: skip
    assert not np.array_equal(other_seed["distill"].confusion, compat["modes"]["distill"]["confusion"])
    fusion, fusion_compat = first["modes"]["fusion"], compat["modes"]["fusion"]
    # 2D fusion has no test repeats; no otherfurniture point is in val, so only the division changes
    assert fusion_compat["confusion"] == fusion["confusion"]
    assert fusion_compat["miou"] == pytest.approx(fusion["miou"] * fusion["num_present"] / K)
    assert fusion_compat["macc"] == pytest.approx(fusion["macc"] * fusion["num_present"] / K)
    # the 3D modes sum logits over 5 rotated/scaled repeats: other predictions, same point total
    distill, distill_compat = first["modes"]["distill"], compat["modes"]["distill"]
    assert distill_compat["confusion"] != distill["confusion"]
    assert distill_compat["num_points"] == distill["num_points"]
    assert distill_compat["per_class"]["wall"]["iou"] > 0.5


def test_bad_scenes_are_error_rows_and_the_cli_exits_nonzero(synthetic_world, fused, checkpoint, tmp_path):
    """Also runs in another text space (seed 1) with on_mismatch=warn: both sources get flagged."""
    import dataclasses

    from openscene_ray.cli import main

    good = _val(synthetic_world)[0]
    no_points = dataclasses.replace(good, scene_id="broken_points", points_uri=str(tmp_path / "nope.parquet"))
    no_shard = dataclasses.replace(good, scene_id="no_shard")  # same points, no fusion shard
    manifest = str(tmp_path / "manifest.parquet")
    write_manifest(manifest, [good, no_points, no_shard])
    output = tmp_path / "out"
    argv = ["evaluate", "--manifest", manifest, "--output", str(output), "--fused", fused,
            "--checkpoint", checkpoint, "--set", "text.encoder=synthetic", "--set", "text.options={dim: 32, seed: 1}",
            "--set", "text.on_mismatch=warn", "--set", "resources.gpus_per_actor=1"]  # fmt: skip
    assert main(argv) == 1
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics["failed"]) == {"broken_points", "no_shard"}
    assert set(metrics["failed"]["broken_points"]) == set(MODES)
    assert "no such object" in metrics["failed"]["broken_points"]["fusion"]
    assert set(metrics["failed"]["no_shard"]) == {"fusion", "ensemble"}  # distill needs no shard
    assert "no_shard" in metrics["failed"]["no_shard"]["fusion"]
    assert metrics["modes"]["fusion"]["num_scenes"] == 1 and metrics["modes"]["distill"]["num_scenes"] == 2
    labels = load_points(good.points_uri)[2]
    assert metrics["modes"]["distill"]["num_points"] == 2 * int((labels < K).sum())
    assert metrics["modes"]["fusion"]["miou"] < 0.5  # the other text space really is another space
    warnings = metrics["warnings"]
    assert len(warnings) == 2 and all("'synthetic:dim=32,seed=0'" in w and "different spaces" in w for w in warnings)
    assert any(w.startswith(f"checkpoint {checkpoint}") for w in warnings)
    table = (output / "metrics.md").read_text()
    assert "Failed scenes" in table and "Warnings" in table


def test_config_checks_and_text_model_mismatch(synthetic_world, fused, checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="need a 3D checkpoint"):
        _config(synthetic_world, fused, None, tmp_path, modes=["fusion", "distill"])
    with pytest.raises(ConfigError, match="need the fused features"):
        _config(synthetic_world, None, checkpoint, tmp_path, modes=["ensemble"])
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        _config(synthetic_world, fused, None, tmp_path, save_point_features=True)
    assert _config(synthetic_world, None, checkpoint, tmp_path).resolved_modes() == ["distill"]
    assert _config(synthetic_world, fused, None, tmp_path).resolved_modes() == ["fusion"]
    assert _config(synthetic_world, fused, None, tmp_path).resolved_tta_repeats() == 1
    assert _config(synthetic_world, fused, None, tmp_path, openscene_compat=True).resolved_tta_repeats() == 5
    assert _config(synthetic_world, fused, None, tmp_path, tta_repeats=3).resolved_tta_repeats() == 3
    with pytest.raises(ValueError, match="no scene of split 'test'"):
        run_evaluate(_config(synthetic_world, fused, checkpoint, tmp_path, split="test"))
    with pytest.raises(ValueError, match="not in the manifest"):
        run_evaluate(_config(synthetic_world, fused, checkpoint, tmp_path, scenes=["scene9999_00"]))
    other = TEXT | {"options": {"dim": 32, "seed": 1}, "on_mismatch": "error"}
    with pytest.raises(ValueError, match="different spaces.*on_mismatch=warn"):
        run_evaluate(_config(synthetic_world, fused, checkpoint, tmp_path, text=other))
    assert not os.path.exists(tmp_path / "metrics.json")
