"""FiT3D end to end on the synthetic world with Ray: Stage I lifts (points for every room, feature
Gaussians for the training rooms), Stage II fine-tunes on the Gaussians with Ray Train (and resumes),
and the probe scores the original, fine-tuned and concatenated features on the held-out rooms.

The backbone is a random-init 2-block ViT (dinov2_small's architecture, width 48): no pretrained
weights exist offline, and the pipeline's behaviour does not depend on them. Thresholds come from
runs on a loaded 2-core machine, with margin (see each assertion)."""

import json
from pathlib import Path

import pytest

from openscene_ray.kernel.config import load_config

BACKBONE = {"name": "dinov2_small", "random_init": True, "seed": 0, "options": {"depth": 2, "embed_dim": 48, "num_heads": 2}}
GAUSSIANS = {"iterations": 100, "sh_degree": 1, "sh_increase_every": 50, "sem_lr": 0.02, "decoder_lr": 0.02,
             "densify": None, "position_lr_max_steps": 100, "log_every": 50}  # fmt: skip
ACTORS = {"min_actors": 1, "max_actors": 2, "cpus_per_actor": 1}
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fit3d"


def _lift(world, lifted, representation, **extra):
    from openscene_ray.fit3d.lift.config import LiftConfig

    scale = 0.125 if representation == "gaussians" else 0.25
    return load_config(LiftConfig, base={
        "manifest": world.manifest, "lifted": lifted, "representation": representation, "backbone": BACKBONE,
        "render_scale": scale, "holdout_every": 4, "gaussians": GAUSSIANS, "resources": ACTORS, **extra,
    })  # fmt: skip


def _finetune(world, lifted, storage_path, **extra):
    from openscene_ray.fit3d.finetune.config import FinetuneConfig

    return load_config(FinetuneConfig, base={
        "manifest": world.manifest, "lifted": lifted, "storage_path": storage_path, "name": "tune",
        "backbone": BACKBONE, "render_scale": 0.125, "lr": 1e-4, "rounds_per_epoch": 2, "workers": 2,
        "cpus_per_worker": 1, **extra,
    })  # fmt: skip


@pytest.fixture(scope="module")
def lifted(ray_session, synthetic_world, tmp_path_factory):
    from openscene_ray.fit3d.lift.job import run_lift

    root = tmp_path_factory.mktemp("fit3d")
    points = run_lift(_lift(synthetic_world, str(root / "points"), "points"))
    gaussians = run_lift(_lift(synthetic_world, str(root / "gaussians"), "gaussians", splits=["train"]))
    return root, points, gaussians


@pytest.fixture(scope="module")
def tuned(lifted, synthetic_world):
    from openscene_ray.fit3d.finetune.job import run_finetune

    root, _, _ = lifted
    first = run_finetune(_finetune(synthetic_world, str(root / "gaussians"), str(root / "runs")))
    again = run_finetune(_finetune(synthetic_world, str(root / "gaussians"), str(root / "runs"), epochs=2))
    return first, again


@pytest.mark.slow
def test_lift_writes_both_representations_and_scores_held_out_views(lifted, synthetic_world):
    from openscene_ray.fit3d.lift.job import run_lift
    from openscene_ray.fit3d.representation import read_header

    root, points, gaussians = lifted
    assert points.ok and len(points.done) == 4 and gaussians.ok and len(gaussians.done) == 2
    for summary in (points, gaussians):
        stats = summary.as_dict()
        print(summary.representation, {k: stats[k] for k in ("heldout_l1", "heldout_cosine", "heldout_coverage")})
    # Measured means (every 4th view held out): points L1 0.21, cosine 0.93 on 32 % of the pixels (4
    # rooms, 160x120); Gaussians (100 iterations at 40x30, 2 training rooms) L1 0.40, cosine 0.86 on 81 %.
    p, g = points.as_dict(), gaussians.as_dict()
    assert p["heldout_cosine"] > 0.85 and p["heldout_l1"] < 0.3 and p["heldout_coverage"] > 0.15
    assert g["heldout_cosine"] > 0.75 and g["heldout_l1"] < 0.55 and g["heldout_coverage"] > 0.6
    header = read_header(str(root / "gaussians" / "scenes" / f"{gaussians.done[0]}.safetensors"))
    assert header["kind"] == "gaussians" and header["feature_dim"] == 48 and header["history"]
    assert header["history"][-1]["feature_l1"] < header["history"][0]["feature_l1"]  # the fit learns
    rerun = run_lift(_lift(synthetic_world, str(root / "points"), "points"))
    assert rerun.ok and not rerun.done and len(rerun.skipped) == 4  # complete scenes are skipped


@pytest.mark.slow
def test_finetune_resumes_and_exports_a_fit3d_backbone(tuned):
    from openscene_ray.models.backbone_io import build_backbone, read_backbone_export

    first, again = tuned
    assert [(h["epoch"], h["round"]) for h in first.history] == [(0, 0), (0, 1)]
    # the rerun with epochs=2 continues after the last round's checkpoint: the first epoch is not redone
    assert [(h["epoch"], h["round"]) for h in again.history] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert again.history[:2] == first.history and again.history[2]["resumed_from"] == 1
    assert all(0 < h["mask_fraction"] <= 1 for h in again.history)
    document, _ = read_backbone_export(again.model_uri)
    assert document["backbone"] == "dinov2_small" and document["extra"]["representation"] == "gaussians"
    backbone = build_backbone({"name": "dinov2_small-fit3d", "checkpoint": again.model_uri})
    assert backbone.name == "dinov2_small-fit3d" and backbone.feature_dim == 48


@pytest.mark.slow
def test_probe_scores_original_fine_tuned_and_concatenated(tuned, synthetic_world, tmp_path):
    from openscene_ray.fit3d.probe.config import ProbeConfig
    from openscene_ray.fit3d.probe.job import run_probe

    _, again = tuned
    config = load_config(ProbeConfig, base={
        "manifest": synthetic_world.manifest, "output": str(tmp_path),
        "backbone": {"name": "dinov2_small-fit3d", "checkpoint": again.model_uri},
        "probe": {"iterations": 200, "warmup_iterations": 20, "batch_size": 4, "lr": 0.01, "label_scale": 0.25},
        "consistency_pairs": 500,
    })  # fmt: skip
    summary = run_probe(config)
    print(summary.table())
    v = summary.variants
    assert [v[k]["feature_dim"] for k in ("original", "fine_tuned", "concat")] == [48, 48, 96]
    # Measured: multi-view cosine 0.838 -> 0.868 after fine-tuning (held-out rooms) while the same
    # pixels paired at random move 0.412 -> 0.420 (no collapse); mIoU 7-10 % for every variant (a
    # random-init backbone on 20 classes).
    gain = v["fine_tuned"]["consistency"] - v["original"]["consistency"]
    gain_shuffled = v["fine_tuned"]["consistency_shuffled"] - v["original"]["consistency_shuffled"]
    assert gain > 0.01 and gain > gain_shuffled + 0.01
    assert all(v[k]["consistency_shuffled"] < v[k]["consistency"] - 0.3 for k in v)
    assert all(v[k]["miou"] > 0.04 for k in v)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["variants"]) == {"original", "fine_tuned", "concat"}


def test_a_bad_scene_becomes_a_failed_row_naming_it(synthetic_world, tmp_path):
    import dataclasses

    import pyarrow as pa

    from openscene_ray.fit3d.lift.job import LiftActor

    good = synthetic_world.records[0]
    bad = dataclasses.replace(synthetic_world.records[1], points_uri=str(tmp_path / "missing.parquet"))
    config = _lift(synthetic_world, str(tmp_path / "lifted"), "points")
    actor = LiftActor(config, use_gpu=False)
    rows = actor(pa.Table.from_pylist([good.to_row(), bad.to_row()]))
    assert rows["status"] == ["done", "failed"]
    assert bad.scene_id in rows["error"][1] and "missing.parquet" in rows["error"][1]
    assert (tmp_path / "lifted" / "scenes" / f"{good.scene_id}.json").exists()
    assert not (tmp_path / "lifted" / "scenes" / f"{bad.scene_id}.json").exists()


def test_shipped_configs_validate():
    from openscene_ray.fit3d.finetune.config import FinetuneConfig
    from openscene_ray.fit3d.lift.config import LiftConfig
    from openscene_ray.fit3d.probe.config import ProbeConfig

    models = {"lift": LiftConfig, "finetune": FinetuneConfig, "probe": ProbeConfig}
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert {p.stem.rsplit("-", 1)[-1] for p in paths} == set(models)
    for path in paths:
        model = models[path.stem.rsplit("-", 1)[-1]]
        required = {"manifest": "m.parquet", "lifted": "out", "output": "out", "storage_path": "runs"}
        base = {k: v for k, v in required.items() if k in model.model_fields}
        overrides = ["backbone.checkpoint=runs/tune/model"] if model is ProbeConfig else []  # probe's --checkpoint
        config = load_config(model, [str(path)], overrides, base=base)
        assert config.backbone.name.startswith("dinov2_small")
