"""Chaos suite, fusion job: processes and nodes die, the disk fills up; nothing is lost, nothing is
duplicated and the shards equal an uninterrupted run's (the checks: ``tests/chaos_checks.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from chaos_checks import (
    ORACLE_EXTRACTOR,
    REPO,
    check_fused,
    done_rows,
    first_index_row,
    job_env,
    kill_session,
    record,
    reference_shards,
    run_ids,
    shard_names,
    start_job,
    wait_for,
    write_job_config,
)
from conftest import ORACLE

from openscene_ray.fusion.config import FuseConfig
from openscene_ray.fusion.job import run_fuse
from openscene_ray.kernel.config import load_config
from openscene_ray.kernel.features import shard_uri


@pytest.fixture(scope="module")
def reference(synthetic_world, tmp_path_factory) -> str:
    """The synthetic world's shards from the in-process core (an uninterrupted run)."""
    return reference_shards(synthetic_world.records, str(tmp_path_factory.mktemp("reference")))


def _ids(world) -> list[str]:
    return sorted(r.scene_id for r in world.records)


def _config(manifest: str, fused: str, **overrides) -> FuseConfig:
    base = {
        "manifest": manifest, "fused": fused, "extractor": ORACLE_EXTRACTOR,
        "resources": {"min_actors": 1, "max_actors": 2, "gpus_per_actor": 1, "cpus_per_actor": 1},
    }  # fmt: skip
    return load_config(FuseConfig, base=base | overrides)


# ---------------------------------------------------------------------------- 1. actor SIGKILLed


@pytest.mark.slow
def test_fusion_actor_sigkilled_mid_scene_still_writes_every_scene_once(ray_session, synthetic_world, reference,
                                                                       tmp_path):  # fmt: skip
    """``extract`` SIGKILLs its actor process once: Ray restarts the actor, retries the scene, and
    every scene ends with one shard, equal to the uninterrupted run's, and one done row."""
    marker = tmp_path / "killed"
    fused = str(tmp_path / "out")
    config = _config(synthetic_world.manifest, fused,
                     extractor={"name": "fault_injection:crash_once", "options": ORACLE | {"marker": str(marker)}})  # fmt: skip
    start = time.perf_counter()
    summary = run_fuse(config)
    seconds = time.perf_counter() - start
    assert marker.exists(), "the actor was never killed: the test did not exercise recovery"
    assert summary.ok and sorted(summary.done) == _ids(synthetic_world), summary.as_dict()
    # the extractor's config (name, marker) is in the shard metadata: compare contents, not bytes
    rows = check_fused(fused, reference, _ids(synthetic_world), same_bytes=False)
    assert run_ids(rows) == [summary.run_id] and done_rows(rows, summary.run_id) == _ids(synthetic_world)
    record("actor SIGKILLed mid-scene", seconds=round(seconds, 1), done=len(summary.done), failed=len(summary.failed))


# ---------------------------------------------------------------------------- 2. driver SIGKILLed


@pytest.mark.slow
def test_driver_sigkilled_after_a_scene_then_the_rerun_fuses_exactly_the_rest(ray_session, synthetic_world, reference,
                                                                              tmp_path):  # fmt: skip
    """``jobs/fuse.py --address local`` is SIGKILLed with its whole local Ray once its first index
    row exists. What it wrote is complete and clean; the rerun (here, on the session's Ray) skips
    it and fuses only the rest."""
    fused = str(tmp_path / "out")
    config = write_job_config(str(tmp_path), synthetic_world.manifest, fused)
    start = time.perf_counter()
    proc = start_job(config, job_env())
    try:
        wait_for(first_index_row(fused), 300, "the killed run's first index row", proc)
    finally:
        kill_session(proc)
    killed_after = time.perf_counter() - start
    shards = [n[: -len(".parquet")] for n in shard_names(fused)]
    rows = check_fused(fused, reference, shards)  # also: no temp files, shards equal the reference
    (killed_run,) = run_ids(rows)
    killed_done = done_rows(rows, killed_run)
    # every row of the killed run names a scene whose shard exists (and equals the clean result);
    # a shard without a row is possible only for a kill between the shard's write and its row's
    assert killed_done and set(killed_done) <= set(shards), (killed_done, shards)
    assert len(rows) == len(killed_done), rows
    assert 1 <= len(shards) < len(_ids(synthetic_world)), shards

    start = time.perf_counter()
    summary = run_fuse(load_config(FuseConfig, paths=config))
    rerun_seconds = time.perf_counter() - start
    rest = sorted(set(_ids(synthetic_world)) - set(shards))
    assert summary.ok and sorted(summary.skipped) == shards and sorted(summary.done) == rest, summary.as_dict()
    rows = check_fused(fused, reference, _ids(synthetic_world))
    assert run_ids(rows) == sorted([killed_run, summary.run_id])
    assert done_rows(rows, summary.run_id) == rest  # exactly the missing scenes
    assert done_rows(rows, killed_run) == killed_done  # the killed run's rows are untouched
    record("driver SIGKILLed, rerun", killed_after_s=round(killed_after, 1), rerun_s=round(rerun_seconds, 1),
           shards_before=len(shards), rows_before=len(killed_done), rerun_done=len(summary.done))  # fmt: skip


# ---------------------------------------------------------------------------- 3. node removed


@pytest.mark.slow
def test_node_removed_mid_job_every_scene_fused_exactly_once(synthetic_world, reference, tmp_path):
    """A 3-node Ray (head with no CPUs, two workers) loses the worker node holding a live fusion
    actor after the first scene: Ray restarts the actor on the other node, retries its scene and
    rebuilds the lost blocks; the job finishes with every scene fused once."""
    import json

    fused = str(tmp_path / "out")
    log = str(tmp_path / "cluster")
    env = job_env()
    start = time.perf_counter()
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, os.path.join("tests", "chaos_cluster.py"), "--manifest", synthetic_world.manifest,
             "--fused", fused],
            cwd=REPO, env=env, start_new_session=True, stdout=out, stderr=err,
        )  # fmt: skip
    try:
        proc.wait(timeout=540)
    except subprocess.TimeoutExpired:
        pass
    finally:
        kill_session(proc)
    seconds = time.perf_counter() - start
    with open(f"{log}.out") as out, open(f"{log}.err") as err:
        stdout, stderr = out.read(), err.read()
    assert proc.returncode == 0 and stdout.strip(), f"exit {proc.returncode}\n{stdout[-2000:]}\n{stderr[-6000:]}"
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report.get("removed_node"), f"no worker node held a fusion actor: nothing was removed\n{report}"
    assert not report["timed_out"] and report["error"] is None, report
    summary = report["summary"]
    assert (summary["done"], summary["failed"]) == (len(_ids(synthetic_world)), 0), summary
    assert len(report["rows_before_removal"]) < len(_ids(synthetic_world)), "the node went after the job"
    rows = check_fused(fused, reference, _ids(synthetic_world))
    assert run_ids(rows) == [report["run_id"]] and done_rows(rows, report["run_id"]) == _ids(synthetic_world)
    assert set(report["fusion_actor_nodes"]) - {report["removed_node"]}, "no fusion actor ran on the surviving node"
    record("node removed mid-job", seconds=round(seconds, 1), events=report["events"],
           rows_before_removal=len(report["rows_before_removal"]))  # fmt: skip


# ---------------------------------------------------------------------------- 5. full disk


PAGE = 4096


def _pages(nbytes: int) -> int:
    return -(-nbytes // PAGE)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs mount (``resize(bytes)`` changes its size); skips where mounting is not permitted."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("the full-disk test mounts a tmpfs: needs root (CAP_SYS_ADMIN)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={64 * PAGE}", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")

    def resize(nbytes: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={nbytes}", str(mount_point)], check=True)

    try:
        yield mount_point, resize
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow
def test_full_disk_fails_the_scenes_that_do_not_fit_and_a_rerun_with_room_finishes(
    ray_session, synthetic_world, reference, small_tmpfs
):
    """The fused output is a tmpfs with room for two shards and the small index rows: the scenes
    that do not fit fail with an error naming their shard file, no partial or temp file stays,
    and a rerun on a disk with room fuses exactly the failed scenes."""
    mount_point, resize = small_tmpfs
    ids = _ids(synthetic_world)
    sizes = sorted(_pages(os.path.getsize(shard_uri(reference, s))) for s in ids)
    # two (of the largest) shards, an index row per scene and the run summary; never a third shard
    room = (sizes[-1] + sizes[-2] + len(ids) + 1) * PAGE
    assert room - (sizes[0] + sizes[1] + 2) * PAGE < sizes[0] * PAGE
    resize(room)
    fused = str(mount_point / "fused")
    config = _config(synthetic_world.manifest, fused)
    start = time.perf_counter()
    summary = run_fuse(config)
    seconds = time.perf_counter() - start
    assert summary.failed, f"every scene fitted on the small disk: {summary.as_dict()}"
    assert sorted(summary.done + list(summary.failed)) == ids
    for scene_id, error in summary.failed.items():
        assert shard_uri(fused, scene_id) in error and "No space left on device" in error, error
    rows = check_fused(fused, reference, sorted(summary.done))  # no partial shard, no temp file
    assert done_rows(rows, summary.run_id) == sorted(summary.done)
    assert sorted(r["scene_id"] for r in rows if r["status"] == "failed") == sorted(summary.failed)
    assert not [n for n in os.listdir(os.path.join(fused, "index")) if not n.endswith(".parquet")]

    resize(64 * 1024 * 1024)
    start = time.perf_counter()
    rerun = run_fuse(config)
    rerun_seconds = time.perf_counter() - start
    assert rerun.ok and sorted(rerun.done) == sorted(summary.failed) and sorted(rerun.skipped) == sorted(summary.done)
    rows = check_fused(fused, reference, ids)
    assert done_rows(rows, rerun.run_id) == sorted(summary.failed)
    record("full disk, rerun with room", seconds=round(seconds, 1), rerun_s=round(rerun_seconds, 1),
           done=len(summary.done), failed=len(summary.failed), disk_bytes=room)  # fmt: skip
