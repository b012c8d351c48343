"""What every chaos test checks after a fault, and how it runs the fusion job as a separate process.

The invariants of a fused output (local or ``s3://``) after any fault:

* nothing lost: every scene that a run reports (or an index row records) as done has its shard;
* nothing duplicated: one ``features/<scene>.parquet`` per scene and nothing else there (no temp
  files), at most one index row per scene and run;
* shards identical to an uninterrupted run: the in-process core (:func:`fuse_scene`, i.e.
  :func:`~openscene_ray.fusion.core.fuse_views` on :func:`~openscene_ray.kernel.manifest.load_scene`)
  writes the reference shards, byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import yaml
from conftest import ORACLE

from openscene_ray.extractors import build_extractor
from openscene_ray.fusion.config import ExtractorConfig, FusionSettings
from openscene_ray.fusion.scene import fuse_scene
from openscene_ray.kernel import storage
from openscene_ray.kernel.features import (
    features_dir,
    index_dir,
    read_features,
    shard_uri,
)
from openscene_ray.kernel.manifest import SceneRecord, load_scene

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORACLE_EXTRACTOR = {"name": "label-oracle", "options": ORACLE}


# ---------------------------------------------------------------------------- reference shards


def reference_shards(records: list[SceneRecord], root: str) -> str:
    """The shards of an uninterrupted, single-process fusion of ``records`` (label-oracle) in ``root``."""
    extractor = build_extractor("label-oracle", **ORACLE)
    config = ExtractorConfig(**ORACLE_EXTRACTOR)
    for record in records:
        scene = load_scene(record)
        fuse_scene(record, scene.xyz, scene.views, extractor, config, FusionSettings(), root, "reference")
    return root


def assert_same_shard(uri: str, reference_root: str, scene_id: str, same_bytes: bool = True) -> None:
    """The shard at ``uri`` holds exactly the reference's points, features and view counts (and,
    when the job ran the same extractor config, the same table and metadata: the same shard)."""
    expected_uri = shard_uri(reference_root, scene_id)
    got, expected = read_features(uri), read_features(expected_uri)
    assert got.scene_id == scene_id
    assert np.array_equal(got.point_index, expected.point_index), scene_id
    assert np.array_equal(got.features, expected.features), scene_id
    assert np.array_equal(got.n_views, expected.n_views), scene_id
    assert got.metadata["scene_digest"] == expected.metadata["scene_digest"], scene_id
    if same_bytes:  # the same table and the same metadata (JSON values compared as values)
        got_table, expected_table = storage.read_parquet(uri), storage.read_parquet(expected_uri)
        assert got_table.equals(expected_table), f"{scene_id}: the shard's table differs"
        assert _metadata(got_table) == _metadata(expected_table), f"{scene_id}: the shard's metadata differs"


def _metadata(table) -> dict:
    return {k.decode(): json.loads(v) for k, v in (table.schema.metadata or {}).items() if k != b"ARROW:schema"}


# ---------------------------------------------------------------------------- the fused output


def _names(uri: str) -> list[str]:
    return sorted(u.rstrip("/").rsplit("/", 1)[-1] for u in storage.listdir(uri))


def shard_names(fused: str) -> list[str]:
    """Every entry of ``features/`` (temp files included)."""
    return _names(features_dir(fused))


def index_rows(fused: str) -> list[dict]:
    """Every index row of every run, each with the name of its file."""
    rows = []
    for name in _names(index_dir(fused)):
        assert name.endswith(".parquet") and not name.startswith("."), f"not an index row: {name}"
        for row in storage.read_parquet(storage.join(index_dir(fused), name)).to_pylist():
            rows.append(row | {"file": name})
    return rows


def check_fused(
    fused: str,
    reference_root: str,
    complete: list[str],
    absent: tuple[str, ...] = (),
    same_bytes: bool = True,
) -> list[dict]:
    """Assert the invariants (module docstring) for a fused output in which the scenes ``complete``
    have shards and the scenes ``absent`` have none; returns the index rows."""
    names = shard_names(fused)
    assert names == sorted(f"{s}.parquet" for s in complete), f"features/ holds {names}, expected {sorted(complete)}"
    for scene_id in absent:
        assert f"{scene_id}.parquet" not in names
    for scene_id in complete:
        assert_same_shard(shard_uri(fused, scene_id), reference_root, scene_id, same_bytes)
    rows = index_rows(fused)
    per_run = Counter((r["run_id"], r["scene_id"]) for r in rows)
    assert max(per_run.values(), default=1) == 1, f"duplicated index rows: {per_run}"
    for row in rows:
        assert row["file"] == f"{row['run_id']}.{row['scene_id']}.parquet", row
        if row["status"] == "done":  # nothing lost: a done row always has its (complete) shard
            assert row["scene_id"] in complete, row
    return rows


def done_rows(rows: list[dict], run_id: str) -> list[str]:
    return sorted(r["scene_id"] for r in rows if r["run_id"] == run_id and r["status"] == "done")


def run_ids(rows: list[dict]) -> list[str]:
    return sorted({r["run_id"] for r in rows})


# ---------------------------------------------------------------------------- the job as a process


def write_job_config(folder: str, manifest: str, fused: str, **overrides) -> str:
    """A ``jobs/fuse.py`` config: label-oracle, one fusion actor."""
    path = os.path.join(folder, f"fuse-{len(os.listdir(folder))}.yaml")
    config = {
        "manifest": manifest, "fused": fused, "extractor": ORACLE_EXTRACTOR,
        "resources": {"min_actors": 1, "max_actors": 1, "cpus_per_actor": 1},
        "data": {"progress_bars": False},
    } | overrides  # fmt: skip
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def job_env(**extra: str) -> dict[str, str]:
    """The environment of a job process: this checkout and the test plugins importable, and a
    private Ray temp dir (short: Ray's sockets live there) so that the job's local Ray never
    meets another Ray on this machine and its processes can be found (and ended) by that path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
    env.update(RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="/tmp/rchaos")
    env.update(extra)
    return env


@dataclass
class JobResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def summary(self) -> dict:
        return json.loads(self.stdout[self.stdout.index("{") :])

    def tail(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.1f}s\n{self.stdout[-2000:]}\n{self.stderr[-4000:]}"


def start_job(config: str, env: dict[str, str]) -> subprocess.Popen:
    """``jobs/fuse.py --config config --address local`` in a new session (its own local Ray); its
    output goes to ``<config>.out`` / ``<config>.err`` (a pipe nobody reads would block it)."""
    with open(f"{config}.out", "w") as out, open(f"{config}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, "jobs/fuse.py", "--config", config, "--address", "local"],
            cwd=REPO, env=env, start_new_session=True, stdout=out, stderr=err, text=True,
        )  # fmt: skip


def job_result(proc: subprocess.Popen, config: str, seconds: float) -> JobResult:
    with open(f"{config}.out") as out, open(f"{config}.err") as err:
        return JobResult(proc.returncode, out.read(), err.read(), seconds)


def run_job(config: str, env: dict[str, str], timeout: float = 300) -> JobResult:
    """Run the job to its end (killed after ``timeout``: then the result says so)."""
    start = time.perf_counter()
    proc = start_job(config, env)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        kill_session(proc)
    return job_result(proc, config, time.perf_counter() - start)


def session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (the job and the local Ray it started: Ray puts each
    worker in its own process group, but they stay in the job's session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def kill_session(proc: subprocess.Popen, limit_s: float = 30.0) -> None:
    """SIGKILL the job's process group, then every other process of its session, by pid, until
    none is left: the job and its whole local Ray die at once, as on a lost machine."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.time() + limit_s
    while (pids := session_pids(proc.pid)) and time.time() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    assert not session_pids(proc.pid), "processes of the killed job are still alive"


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll_s: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value (returned); fail after ``timeout``, or
    as soon as ``proc`` exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job exited ({proc.returncode}) before {what}")
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def first_index_row(fused: str):
    """A predicate: the names of the index rows written so far (falsy until the first)."""

    def predicate():
        try:
            return [n for n in _names(index_dir(fused)) if n.endswith(".parquet")]
        except storage.StorageError:
            return []

    return predicate


def record(case: str, **values) -> None:
    """Append a measured outcome to ``$OPENSCENE_CHAOS_LOG`` (a JSON line per case), when set:
    the numbers behind the README's table of faults."""
    path = os.environ.get("OPENSCENE_CHAOS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"case": case, **values}, default=str) + "\n")
