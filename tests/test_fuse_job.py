"""The distributed fusion job on a local Ray (logical GPUs), local disk and moto S3."""

import dataclasses
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ORACLE, SYNTHETIC_VISIBILITY

from openscene_ray.evaluation.metrics import EvalCounts, compute_metrics
from openscene_ray.extractors import build_extractor
from openscene_ray.fusion.config import ExtractorConfig, FuseConfig, FusionSettings
from openscene_ray.fusion.core import fuse_views
from openscene_ray.fusion.job import run_fuse
from openscene_ray.fusion.scene import fuse_scene, fusion_params, plan_scenes
from openscene_ray.kernel import storage
from openscene_ray.kernel.config import load_config
from openscene_ray.kernel.features import read_features, shard_uri
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.manifest import (
    SceneRecord,
    load_scene,
    read_manifest,
)
from openscene_ray.kernel.text import build_text_encoder


def _config(manifest, fused, **overrides) -> FuseConfig:
    base = {
        "manifest": manifest,
        "fused": fused,
        "extractor": {"name": "label-oracle", "options": ORACLE},
        "resources": {"min_actors": 1, "max_actors": 2, "gpus_per_actor": 1, "cpus_per_actor": 1},
    }
    return load_config(FuseConfig, base=base | overrides)


def _in_process(record: SceneRecord, extractor_options=ORACLE):
    """The single-process fusion core on the same scene (the reference for the job's output)."""
    scene = load_scene(record)
    extractor = build_extractor("label-oracle", **extractor_options)
    return fuse_views(scene.xyz, scene.views, extractor, fusion_params(record, FusionSettings())), scene


def _fused_counts(records, output) -> EvalCounts:
    text = build_text_encoder("synthetic", dim=32, seed=0).encode(get_label_set("scannet20").prompts())
    total = EvalCounts.zeros(20)
    for record in records:
        shard = read_features(shard_uri(output, record.scene_id))
        labels = storage.read_parquet(record.points_uri, columns=["label"]).column(0).to_numpy()
        pred = (shard.features.astype(np.float32) @ text.T).argmax(1)
        total = total + EvalCounts.from_predictions(pred, labels[shard.point_index], 20)
    return total


def test_fuse_job_matches_core_and_oracle_miou(ray_session, synthetic_world, tmp_path):
    output = str(tmp_path / "out")
    summary = run_fuse(_config(synthetic_world.manifest, output))
    records = synthetic_world.records
    assert summary.ok and sorted(summary.done) == sorted(r.scene_id for r in records)
    for record in records:
        shard = read_features(shard_uri(output, record.scene_id))
        expected, _ = _in_process(record)
        assert np.array_equal(shard.point_index, np.flatnonzero(expected.mask))
        assert np.array_equal(shard.features, expected.features.numpy())
        assert np.array_equal(shard.n_views, expected.n_views[expected.mask])
        assert shard.metadata["feature_dim"] == 32 and shard.metadata["n_points"] == record.num_points
    metrics = compute_metrics(_fused_counts(records, output).confusion)
    assert metrics["miou"] >= 0.9, metrics
    index = pq.read_table(os.path.join(output, "index")).to_pylist()
    assert {r["scene_id"] for r in index} == {r.scene_id for r in records}
    assert all(r["status"] == "done" and r["n_seen"] > 0.5 * r["n_points"] for r in index)

    again = run_fuse(_config(synthetic_world.manifest, output))  # resume: nothing left to do
    assert again.done == [] and sorted(again.skipped) == sorted(summary.done)


def test_fuse_job_on_s3(ray_session, s3_server, tmp_path):
    """Raw world, manifest, points, views and features all live in moto's S3."""
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout
    from openscene_ray.synth.world import SynthConfig
    from openscene_ray.synth.writer import write_world

    bucket = s3_server.bucket("fuse")
    raw, ingested, output = (f"s3://{bucket}/{p}" for p in ("raw", "ingested", "out"))
    write_world(SynthConfig(seed=3, num_scenes=2, views_per_scene=6, points_per_scene=3000), raw)
    result = ingest(build_layout("scannet", overrides=[f"visibility_threshold={SYNTHETIC_VISIBILITY}"]), raw, ingested)
    assert not result.errors and result.records[0].views[0].color_uri.startswith("s3://")
    summary = run_fuse(_config(result.manifest_uri, output))
    assert summary.ok and len(summary.done) == 2
    keys = s3_server.keys(bucket)
    assert sorted(k for k in keys if k.startswith("out/features/")) == [
        f"out/features/{r.scene_id}.parquet" for r in sorted(result.records, key=lambda r: r.scene_id)
    ]
    assert any(k.startswith("out/index/") for k in keys)
    metrics = compute_metrics(_fused_counts(result.records, output).confusion)
    assert metrics["miou"] >= 0.9


def test_manifest_read_back_through_ray_rows(ray_session, synthetic_world):
    """Manifest rows as Ray Data delivers them (numpy-typed lists) parse back to the same records."""
    import ray.data

    rows = ray.data.read_parquet(synthetic_world.manifest).take_all()
    assert [SceneRecord.from_row(r) for r in rows] == read_manifest(synthetic_world.manifest)


def test_plan_fuses_exactly_the_todo_scenes_from_the_drivers_rows(ray_session, synthetic_world, tmp_path):
    """The plan starts from the driver's manifest rows (Arrow columns, no second read of the
    manifest) and fuses just the scenes to do."""
    from openscene_ray.fusion.job import build_dataset

    todo = read_manifest(synthetic_world.manifest)[1:3]
    rows = build_dataset(_config(synthetic_world.manifest, str(tmp_path)), todo, "run").take_all()
    assert sorted((r["scene_id"], r["status"]) for r in rows) == [(r.scene_id, "done") for r in todo]
    assert sorted(os.listdir(tmp_path / "features")) == [f"{r.scene_id}.parquet" for r in todo]


def test_a_shard_is_complete_only_for_the_same_row_extractor_and_fusion_parameters(synthetic_world, tmp_path):
    """Resume skips a scene only when its shard came from the same manifest row, extractor and
    output-affecting fusion parameters; batching does not matter."""
    record = synthetic_world.records[0]
    config = _config(synthetic_world.manifest, str(tmp_path))
    scene = load_scene(record)
    fuse_scene(record, scene.xyz, scene.views, build_extractor("label-oracle", **ORACLE),
               ExtractorConfig(name="label-oracle", options=ORACLE), FusionSettings(), str(tmp_path), "run")  # fmt: skip

    def skipped(config, rec=record) -> bool:
        return plan_scenes(config, [rec])[1] == [rec.scene_id]

    assert skipped(config)
    assert skipped(load_config(FuseConfig, base=config.model_dump() | {"fusion": {"views_per_batch": 3}}))
    assert not skipped(load_config(FuseConfig, base=config.model_dump() | {"fusion": {"visibility_threshold": 0.2}}))
    assert not skipped(load_config(FuseConfig, base=config.model_dump() | {"fusion": {"depth_test": False}}))
    other_options = dict(ORACLE, noise=0.1)
    assert not skipped(load_config(FuseConfig, base=config.model_dump() | {
        "extractor": {"name": "label-oracle", "options": other_options}}))  # fmt: skip
    assert not skipped(config, dataclasses.replace(record, views=record.views[:-1]))  # re-ingested with fewer views
    assert plan_scenes(load_config(FuseConfig, base=config.model_dump() | {"overwrite": True}), [record])[1] == []


def test_a_shard_fused_for_another_point_count_refuses_to_densify():
    """Every reader (training, evaluation, queries) densifies through FeatureShard.dense, which
    names the scene when the shard is stale instead of scattering into the wrong points."""
    from openscene_ray.kernel.features import FeatureShard

    shard = FeatureShard("scene0007_00", np.array([0, 2], np.int32), np.ones((2, 4), np.float16),
                         np.array([1, 3], np.uint16), {"n_points": 3})  # fmt: skip
    features, seen = shard.dense(3)
    assert seen.tolist() == [True, False, True] and features[1].tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="scene0007_00: the feature shard was fused for 3 points, the scene has 5"):
        shard.dense(5)
