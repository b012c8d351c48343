"""The fusion job submitted through the Ray Jobs CLI to a real head on loopback.

``ray start --head`` (from the venv, own temp dir, ports, token and HOME: tests/ray_head.py) and
``ray job submit --working-dir <repo> --runtime-env cluster/runtime_env.yaml -- python
jobs/fuse.py --config <yaml>``, the way cluster/submit.sh submits it. A clean manifest gives a
SUCCEEDED job whose shards equal the in-process fusion core's; a manifest with a broken scene
gives a FAILED job (non-zero exit) that still wrote every good scene. The head is stopped through
its own process, never with ``ray stop``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ORACLE
from ray_head import LoopbackHead

from openscene_ray.extractors import build_extractor
from openscene_ray.fusion.config import ExtractorConfig, FusionSettings
from openscene_ray.fusion.scene import fuse_scene
from openscene_ray.kernel import storage
from openscene_ray.kernel.features import read_features, shard_uri
from openscene_ray.kernel.manifest import load_scene, write_manifest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def head():
    head = LoopbackHead(num_cpus=2)
    try:
        head.start()
        yield head
    finally:
        left = head.stop()
    assert not left, "processes of the test head survived its stop:\n" + "\n".join(head.stop_log)
    print("\n".join(["test head stopped:", *head.stop_log]))


def _write_config(path, manifest: str, output: str) -> str:
    # 1 actor on 1 CPU; the head's other CPU runs Ray Data's read and the scene-loading tasks.
    path.write_text(yaml.safe_dump({
        "manifest": manifest,
        "fused": output,
        "extractor": {"name": "label-oracle", "options": ORACLE},
        "resources": {"min_actors": 1, "max_actors": 1, "cpus_per_actor": 1, "loader_cpus": 0.5},
        "data": {"progress_bars": False},
    }))  # fmt: skip
    return str(path)


def _submit(head: LoopbackHead, config: str) -> tuple[str, subprocess.CompletedProcess]:
    job_id = f"osr-test-fuse-{uuid.uuid4().hex[:8]}"
    proc = head.ray(
        "job", "submit",
        "--address", head.address,
        "--submission-id", job_id,
        "--working-dir", REPO,
        "--runtime-env", os.path.join(REPO, "cluster", "runtime_env.yaml"),
        "--", "python", "jobs/fuse.py", "--config", config,
        timeout=300,
    )  # fmt: skip
    return job_id, proc


def _finished(head: LoopbackHead, job_id: str) -> dict:
    """The job server's record of a job that `ray job submit` (which waits) saw finish."""
    info = head.job_info(job_id)
    assert info["submission_id"] == job_id and info["end_time"], info
    return info


def _summary(job_output: str) -> dict:
    """The run summary that jobs/fuse.py prints (indented JSON) in the job's logs."""
    start = job_output.index('{\n  "run_id"')
    return json.loads(job_output[start : job_output.index("\n}", start) + 2])


def _assert_matches_core(record, output: str, reference: str) -> None:
    """The job's shard equals fuse_scene run here, in-process, on the same scene."""
    extractor_config = ExtractorConfig(name="label-oracle", options=ORACLE)
    scene = load_scene(record)
    fuse_scene(
        record, scene.xyz, scene.views, build_extractor("label-oracle", **ORACLE), extractor_config,
        FusionSettings(), reference, "in-process",
    )  # fmt: skip
    got, want = read_features(shard_uri(output, record.scene_id)), read_features(shard_uri(reference, record.scene_id))
    assert got.features.shape[0] > 0.5 * record.num_points, record.scene_id
    assert np.array_equal(got.point_index, want.point_index), record.scene_id
    assert np.array_equal(got.features, want.features), record.scene_id
    assert np.array_equal(got.n_views, want.n_views), record.scene_id
    assert got.metadata["extractor"] == want.metadata["extractor"]


def test_submitted_fuse_job_succeeds_with_complete_outputs(head, synthetic_world, tmp_path):
    output = str(tmp_path / "out")
    config = _write_config(tmp_path / "fuse.yaml", synthetic_world.manifest, output)
    job_id, proc = _submit(head, config)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    info = _finished(head, job_id)
    assert (info["status"], info["driver_exit_code"]) == ("SUCCEEDED", 0), info

    records = synthetic_world.records
    summary = _summary(proc.stdout)
    assert (summary["done"], summary["failed"], summary["skipped"]) == (len(records), 0, 0), summary
    assert sorted(os.listdir(os.path.join(output, "features"))) == sorted(f"{r.scene_id}.parquet" for r in records)
    index = pq.read_table(os.path.join(output, "index")).to_pylist()
    assert sorted(r["scene_id"] for r in index) == sorted(r.scene_id for r in records)
    assert all(r["status"] == "done" and r["error"] == "" and r["run_id"] == summary["run_id"] for r in index)
    assert storage.exists(storage.join(output, "runs", f"{summary['run_id']}.json"))
    for record in records:
        _assert_matches_core(record, output, str(tmp_path / "in-process"))


def test_submitted_fuse_job_with_a_broken_scene_fails_and_keeps_the_good_ones(head, synthetic_world, tmp_path):
    good = synthetic_world.records[:2]
    bad_jpeg = str(tmp_path / "broken.jpg")
    storage.write_bytes(bad_jpeg, b"\xff\xd8\xff\xe0 not really a jpeg")
    views = list(good[0].views)
    views[1] = dataclasses.replace(views[1], color_uri=bad_jpeg)
    broken = dataclasses.replace(good[0], scene_id=f"{good[0].scene_id}_broken", views=tuple(views))
    manifest = str(tmp_path / "mixed.parquet")
    write_manifest(manifest, [*good, broken])

    output = str(tmp_path / "out")
    job_id, proc = _submit(head, _write_config(tmp_path / "fuse.yaml", manifest, output))
    assert proc.returncode != 0, proc.stdout[-4000:]
    info = _finished(head, job_id)
    assert (info["status"], info["driver_exit_code"]) == ("FAILED", 1), info  # jobs/fuse.py: 1 = a scene failed

    summary = _summary(proc.stdout)
    assert (summary["done"], summary["failed"]) == (2, 1), summary
    assert list(summary["failures"]) == [broken.scene_id]
    assert "cannot decode image" in summary["failures"][broken.scene_id]
    assert sorted(os.listdir(os.path.join(output, "features"))) == sorted(f"{r.scene_id}.parquet" for r in good)
    index = {r["scene_id"]: r for r in pq.read_table(os.path.join(output, "index")).to_pylist()}
    assert set(index) == {r.scene_id for r in [*good, broken]}
    assert index[broken.scene_id]["status"] == "failed" and broken.scene_id in index[broken.scene_id]["error"]
    for record in good:
        assert index[record.scene_id]["status"] == "done"
        _assert_matches_core(record, output, str(tmp_path / "in-process"))
