"""Distillation: the sparse collate (no Ray), and 2-worker CPU Ray Train runs on the synthetic world."""

import io
import math
import os

import numpy as np
import pytest
import torch
from conftest import TEXT

from openscene_ray.distill.config import DistillConfig
from openscene_ray.distill.data import SparseCollate, training_rows
from openscene_ray.distill.job import export_model, run_distill
from openscene_ray.kernel import storage
from openscene_ray.kernel.config import load_config
from openscene_ray.kernel.features import read_metadata, shard_uri, write_features
from openscene_ray.kernel.manifest import load_points
from openscene_ray.kernel.train_runtime import poly_lambda
from openscene_ray.models import (
    AugmentConfig,
    CheckpointMetadata,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from openscene_ray.models.inference import distill_features
from openscene_ray.models.transforms import ChunkConfig

SMALL_NET = {"out_channels": 32, "init_dim": 16, "planes": [16, 32, 64, 64, 64, 32, 32, 32], "layers": [1] * 8}
VOXEL = 0.1
INDEX_DIM = 4


# ---------------------------------------------------------------- collate (no Ray Train)


def _encode(index: np.ndarray) -> np.ndarray:
    """A feature that names its point exactly in fp16: (i // 64, i % 64, 1, 0)."""
    return np.stack([index // 64, index % 64, np.ones_like(index), np.zeros_like(index)], 1).astype(np.float16)


def _decode(target: torch.Tensor) -> np.ndarray:
    t = target.numpy().astype(np.int64)
    return t[:, 0] * 64 + t[:, 1]


@pytest.fixture(scope="module")
def index_shards(synthetic_world, tmp_path_factory):
    """Feature shards for the train scenes whose feature encodes the point index; every third
    point (i % 3 == 0) is unseen."""
    root = str(tmp_path_factory.mktemp("index-shards"))
    for record in synthetic_world.records:
        if record.split != "train":
            continue
        index = np.arange(record.num_points)
        seen = index[index % 3 != 0]
        metadata = {"feature_dim": INDEX_DIM, "n_points": record.num_points, "text_model": "index", "extractor": {}}
        write_features(shard_uri(root, record.scene_id), record.scene_id, seen.astype(np.int32), _encode(seen),
                       np.ones(seen.size, np.uint16), metadata)  # fmt: skip
    return root


def _rows(world, root, chunks=None):
    return training_rows([r for r in world.records if r.split == "train"], root, chunks)


def _batch(rows) -> dict[str, np.ndarray]:
    """Rows as Ray Data hands them to a numpy collate (strings as object arrays)."""
    return {k: np.array([r[k] for r in rows], dtype=object if k.endswith(("id", "uri")) else None) for k in rows[0]}


def test_collate_targets_are_the_first_point_of_each_voxel(synthetic_world, index_shards):
    rows = _rows(synthetic_world, index_shards)
    out = SparseCollate(VOXEL, in_channels=4)(_batch(rows))
    coords, target, has = out["coords"], out["target"], out["has_target"]
    assert coords.dtype == torch.int32 and out["feats"].dtype == torch.float32 and target.dtype == torch.float16
    assert int(out["num_scenes"]) == 2 and sorted(set(coords[:, 0].tolist())) == [0, 1]
    assert target.shape == (coords.shape[0], INDEX_DIM) and has.shape == (coords.shape[0],)
    for b, row in enumerate(rows):
        xyz, rgb, _ = load_points(row["points_uri"])
        grid = np.floor(xyz.astype(np.float64) / VOXEL).astype(np.int64)
        grid -= grid.min(0)
        first: dict[tuple, int] = {}
        for i, key in enumerate(map(tuple, grid)):
            first.setdefault(key, i)
        mine = (coords[:, 0] == b).numpy()
        reps = np.array([first[tuple(c)] for c in coords[mine, 1:].tolist()])
        assert len(reps) == len(first) == len(set(reps.tolist()))  # one row per voxel, none missing
        assert np.array_equal(has[mine].numpy(), reps % 3 != 0)
        assert np.array_equal(_decode(target[mine][has[mine]]), reps[reps % 3 != 0])
        assert not target[mine][~has[mine]].any()
        assert np.allclose(out["feats"][mine][:, :3].numpy(), rgb[reps] / 127.5 - 1.0, atol=1e-6)
        assert np.all(out["feats"][mine][:, 3].numpy() == 1.0)


def test_collate_augmentation_is_seeded_per_epoch_and_independent_of_batching(synthetic_world, index_shards):
    rows = _rows(synthetic_world, index_shards)
    collate = SparseCollate(VOXEL, 1, AugmentConfig(), seed=3, epoch=1)
    both, again = collate(_batch(rows)), collate(_batch(rows))
    assert all(torch.equal(both[k], again[k]) for k in both)
    alone = collate(_batch(rows[:1]))
    first = both["coords"][:, 0] == 0
    assert torch.equal(alone["coords"], both["coords"][first]) and torch.equal(alone["target"], both["target"][first])
    other_epoch = SparseCollate(VOXEL, 1, AugmentConfig(), seed=3, epoch=2)(_batch(rows[:1]))
    assert not torch.equal(other_epoch["coords"][:100], alone["coords"][:100])
    reps = _decode(alone["target"][alone["has_target"]])
    assert len(set(reps.tolist())) == reps.size and np.all(reps % 3 != 0)
    assert torch.equal(alone["feats"], torch.ones(alone["coords"].shape[0], 1))


def test_collate_chunk_rows_use_only_their_chunk(synthetic_world, index_shards):
    chunks = ChunkConfig(n_split_points=1000, num_chunks=3)
    rows = _rows(synthetic_world, index_shards, chunks)
    assert len(rows) == 6 and [r["chunk"] for r in rows[:3]] == [0, 1, 2]
    out = SparseCollate(VOXEL, 1, chunks=chunks)(_batch(rows[1:2]))
    chunk = chunks.indices(rows[1]["num_points"], 1)
    reps = _decode(out["target"][out["has_target"]])
    assert out["coords"].shape[0] <= 1000 and np.isin(reps, chunk).all()
    assert int(out["has_target"].sum()) > 0.5 * out["coords"].shape[0]


def test_poly_schedule():
    factor = poly_lambda(100, 0.9)
    assert factor(0) == 1.0 and factor(100) == 0.0 and factor(150) == 0.0
    assert math.isclose(factor(50), 0.5**0.9)


def test_preflight_rejects_a_head_that_does_not_match_the_shards(synthetic_world, index_shards, tmp_path):
    base = {"manifest": synthetic_world.manifest, "fused": index_shards, "storage_path": str(tmp_path)}
    with pytest.raises(ValueError, match="model.out_channels=768 but the feature shards .* feature_dim=4"):
        run_distill(load_config(DistillConfig, base=base))
    with pytest.raises(ValueError, match="2 train scene\\(s\\) have no feature shard"):
        run_distill(load_config(DistillConfig, base=base | {"fused": str(tmp_path / "empty")}))
    assert not os.listdir(tmp_path)  # nothing started, nothing written


def test_export_prefers_best_and_falls_back_to_the_last_checkpoint(tmp_path):
    from ray.train import Checkpoint

    config = load_config(DistillConfig, base={
        "manifest": "unused", "fused": "unused", "storage_path": str(tmp_path), "name": "run", "model": SMALL_NET,
    })  # fmt: skip
    metadata = CheckpointMetadata(voxel_size=VOXEL, text_model="t", feature_dim=32, extra={"run": "run"})
    torch.manual_seed(1)
    last = build_model(config.model)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"model": last.state_dict(), "epoch": 4, "history": [{"train_loss": 0.25}]}, folder / "state.pt")
    uri, source = export_model(config, metadata, Checkpoint.from_directory(str(folder)))
    model, _, saved = load_checkpoint(uri)
    assert source == "last" and uri == str(tmp_path / "run" / "model")
    assert saved.extra == {"run": "run", "epoch": 4, "train_loss": 0.25, "source": "last"}
    assert all(torch.equal(v, last.state_dict()[k]) for k, v in model.state_dict().items())

    best = build_model(config.model)
    save_checkpoint(str(tmp_path / "run" / "best"), best, config.model,
                    metadata.model_copy(update={"extra": {"epoch": 2, "val_miou": 0.5}}))  # fmt: skip
    uri, source = export_model(config, metadata, Checkpoint.from_directory(str(folder)))
    model, _, saved = load_checkpoint(uri)
    assert source == "best" and saved.extra == {"epoch": 2, "val_miou": 0.5, "source": "best"}
    assert all(torch.equal(v, best.state_dict()[k]) for k, v in model.state_dict().items())
    assert not any(torch.equal(v, last.state_dict()[k]) for k, v in model.state_dict().items() if v.dim() == 5)


# ---------------------------------------------------------------- Ray Train (2 CPU workers)


def _config(world, fused, storage_path, name, **overrides) -> DistillConfig:
    base = {
        "manifest": world.manifest, "fused": fused, "storage_path": storage_path, "name": name,
        "model": SMALL_NET, "voxel_size": VOXEL, "batch_size": 1, "lr": 5e-3, "workers": 2, "cpus_per_worker": 1,
        "chunks": {"n_split_points": 3000, "num_chunks": 3}, "max_failures": 1,
        "text": TEXT,
    }  # fmt: skip
    return load_config(DistillConfig, base=base | overrides)


def _val_miou(model, world) -> float:
    """Val mIoU computed in this process with the evaluation code."""
    from openscene_ray.evaluation.metrics import EvalCounts, compute_metrics
    from openscene_ray.evaluation.scoring import scene_counts
    from openscene_ray.kernel.text import TextSpaceConfig, build_text_space

    text = build_text_space(TextSpaceConfig(**TEXT))
    counts = EvalCounts.zeros(text.num_classes)
    for record in (r for r in world.records if r.split == "val"):
        xyz, rgb, labels = load_points(record.points_uri)
        counts = counts + scene_counts("distill", labels, text, model=model, xyz=xyz, rgb=rgb, voxel_size=VOXEL)
    return compute_metrics(counts.confusion, counts.unknown)["miou"]


def _checkpoint_states(run_dir: str) -> dict[int, dict]:
    """The Ray checkpoints kept in a run folder (any storage URI), by epoch."""
    names = [u.rstrip("/").rsplit("/", 1)[-1] for u in storage.listdir(run_dir)]
    folders = [storage.join(run_dir, n) for n in names if n.startswith("checkpoint_") and not n.endswith(".json")]
    states = [torch.load(io.BytesIO(storage.read_bytes(f"{f}/state.pt")), weights_only=True) for f in folders]
    return {s["epoch"]: s for s in states}


@pytest.fixture(scope="module")
def trained(ray_session, s3_server, synthetic_world, fused, tmp_path_factory):
    """6 epochs on 2 workers with run storage in (moto) S3, validating at epochs 2 and 5; rank 0
    fails once at the start of epoch 4."""
    marker = str(tmp_path_factory.mktemp("marker") / "failed-once")
    hook = {"name": "fault_injection:fail_once", "options": {"at_epoch": 4, "marker": marker}}
    storage_path = f"s3://{s3_server.bucket('distill')}/runs"
    config = _config(synthetic_world, fused, storage_path, "learn", epochs=6, validate_every=3, keep_checkpoints=6,
                     epoch_hook=hook)  # fmt: skip
    return config, run_distill(config), marker


@pytest.mark.slow
def test_two_workers_learn_and_validate(synthetic_world, trained):
    config, summary, _ = trained
    history = summary.history
    # 2 scenes x 3 chunks = 6 rows: 3 per worker, batch 1 -> 3 steps each per epoch
    assert all(h["steps"] == 6 for h in history) and history[-1]["global_step"] == 18
    assert all(len(h["worker_voxels_per_s"]) == 2 and min(h["worker_voxels_per_s"]) > 0 for h in history)
    losses = [h["train_loss"] for h in history]
    print("distill losses", [round(v, 4) for v in losses], "val", [h.get("val_miou") for h in history])
    assert losses[-1] <= 0.6 * losses[0], losses
    assert [h["epoch"] for h in history if "val_miou" in h] == [2, 5]
    torch.manual_seed(0)
    untrained = _val_miou(build_model(config.model).eval(), synthetic_world)
    assert summary.best["val_miou"] > untrained + 0.05, (summary.best, untrained)


@pytest.mark.slow
def test_worker_failure_restarts_from_the_latest_checkpoint(trained):
    _, summary, marker = trained
    assert os.path.exists(marker), "the hook never failed a worker: recovery was not exercised"
    assert [(h["epoch"], h["resumed_from"]) for h in summary.history] == [
        (0, -1), (1, -1), (2, -1), (3, -1), (4, 3), (5, 3)
    ]
    assert sorted(_checkpoint_states(summary.run_dir)) == [0, 1, 2, 3, 4, 5]  # epoch 4 checkpointed once


@pytest.mark.slow
def test_exported_model_round_trips_without_ray(synthetic_world, fused, trained):
    config, summary, _ = trained
    assert summary.model_uri == f"{config.storage_path}/learn/model"
    model, model_config, metadata = load_checkpoint(summary.model_uri)
    best = summary.best
    assert summary.source == "best" and metadata.extra["source"] == "best" and best["epoch"] in (2, 5)
    assert metadata.extra["epoch"] == best["epoch"] and metadata.extra["val_miou"] == best["val_miou"]
    assert model_config == config.model and metadata.feature_dim == 32 and metadata.voxel_size == VOXEL
    assert metadata.label_set == "scannet20" and len(metadata.labels) == 20
    assert metadata.text_model == read_metadata(shard_uri(fused, synthetic_world.records[0].scene_id))["text_model"]

    reference = build_model(config.model)
    reference.load_state_dict(_checkpoint_states(summary.run_dir)[best["epoch"]]["model"])
    reference.eval()
    xyz, _, _ = load_points(synthetic_world.records[2].points_uri)
    assert torch.equal(distill_features(model, xyz, VOXEL), distill_features(reference, xyz, VOXEL))
    assert math.isclose(_val_miou(model, synthetic_world), best["val_miou"], rel_tol=1e-9)


@pytest.mark.slow
def test_rerun_with_the_same_name_continues_the_run(synthetic_world, trained):
    """Runs last: it extends the shared run to 7 epochs, now keeping only the 2 latest checkpoints."""
    config, summary, _ = trained
    again = run_distill(config.model_copy(update={"epochs": 7, "epoch_hook": None, "keep_checkpoints": 2}))
    assert again.history[:6] == summary.history  # restored, not retrained
    assert again.history[6]["epoch"] == 6 and again.history[6]["resumed_from"] == 5
    assert again.history[6]["global_step"] == 21 and "val_miou" in again.history[6]
    assert sorted(_checkpoint_states(again.run_dir)) == [5, 6]
