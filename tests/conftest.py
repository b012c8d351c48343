"""Shared fixtures: the real sample data, a moto S3 server on loopback, a local Ray."""

from __future__ import annotations

# torchvision (and open_clip, which imports it) must load before TensorFlow in any process, or the
# process aborts (LLVM option registered twice). Test modules import TF, so pin the order here.
import torchvision  # noqa: F401  isort: skip

import os
import secrets
import time
from pathlib import Path

# As the CLI does: Ray workers use this venv's python directly instead of re-running `uv run`.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $OPENSCENE_SHARED_DATA). Skips outside CI if absent; fails in CI."""
    root = Path(os.environ.get("OPENSCENE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not root.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared sample data not found at {root}; CI must run the real-data tests")
        pytest.skip(f"shared sample data not found at {root} (set OPENSCENE_SHARED_DATA)")
    return root


class S3Server:
    """A moto S3 server on loopback with per-test buckets."""

    def __init__(self, endpoint: str):
        import boto3

        self.endpoint = endpoint
        self._client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def bucket(self, prefix: str = "bucket") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        self._client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server():
    """moto's real S3 protocol server; the environment points s3fs at it (workers inherit it)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
            "AWS_REGION": "us-east-1",
            "OPENSCENE_S3_ENDPOINT_URL": endpoint,
        }
    )
    try:
        yield S3Server(endpoint)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "OPENSCENE_S3_ENDPOINT_URL")


SYNTHETIC_VISIBILITY = 0.05
# The label-oracle extractor the Ray tests fuse with: 32-d seeded synthetic text space.
TEXT = {"label_set": "scannet20", "encoder": "synthetic", "options": {"dim": 32, "seed": 0}}
ORACLE = {"text": TEXT}


class SyntheticWorld:
    """A small synthetic world written in the scannet layout and ingested into a manifest."""

    def __init__(self, raw: str, ingested: str, records, config):
        self.raw = raw
        self.ingested = ingested
        self.manifest = os.path.join(ingested, "manifest.parquet")
        self.records = records
        self.config = config


def make_synthetic_world(root: str, **overrides) -> SyntheticWorld:
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout
    from openscene_ray.synth.world import SynthConfig
    from openscene_ray.synth.writer import write_world

    options = {"seed": 7, "num_scenes": 4, "views_per_scene": 10, "points_per_scene": 6000, "val_fraction": 0.5}
    config = SynthConfig(**(options | overrides))
    raw, ingested = os.path.join(root, "raw"), os.path.join(root, "ingested")
    write_world(config, raw)
    # The synthetic depth is exact, so the relative visibility threshold is tighter than the
    # reference's 0.25 for noisy sensor depth (tests/test_fusion_synthetic.py measures both).
    result = ingest(build_layout("scannet", overrides=[f"visibility_threshold={SYNTHETIC_VISIBILITY}"]), raw, ingested)
    assert not result.errors, result.errors
    return SyntheticWorld(raw, ingested, result.records, config)


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory) -> SyntheticWorld:
    """4 rooms x 10 views x 6000 points (2 train, 2 val), ingested; shared read-only by tests."""
    return make_synthetic_world(str(tmp_path_factory.mktemp("synthetic-world")))


RAY_TEST_CPUS, RAY_TEST_GPUS = 4, 2


def _start_ray():
    import ray

    if ray.is_initialized():  # a Ray some earlier test started for itself
        ray.shutdown()
    tests_dir = str(REPO_ROOT / "tests")  # workers import test plugins (fault_injection) from here
    ray.init(
        address="local",
        num_cpus=RAY_TEST_CPUS,
        num_gpus=RAY_TEST_GPUS,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([tests_dir, str(REPO_ROOT)])}},
    )
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """One local Ray for the session: 4 logical CPUs and 2 logical GPUs (exercises num_gpus
    scheduling on CPU machines). Started after the S3 fixture so workers inherit its settings."""
    ray = _start_ray()
    yield ray
    ray.shutdown()


def _ray_is_idle(ray, wait_s: float) -> bool:
    """Whether every logical CPU and GPU is free again within ``wait_s`` (actors and placement
    groups of a finished test release them asynchronously)."""
    deadline = time.monotonic() + wait_s
    while True:
        free = ray.available_resources()
        if free.get("CPU", 0) >= RAY_TEST_CPUS and free.get("GPU", 0) >= RAY_TEST_GPUS:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def _the_shared_ray_for_tests_that_ask(request):
    """A test that asks for ``ray_session`` gets the shared test Ray (4 CPUs, 2 GPUs) with nothing
    held. Another test may have shut it down or started a Ray of its own (the benchmark cases call
    ``init_ray``), and a failed test may leave actors or placement groups behind: without this, a
    job asking for a GPU would wait for one until its timeout."""
    if "ray_session" not in request.fixturenames:
        yield
        return
    _ensure_test_ray(request.node.nodeid, "before")
    yield
    _ensure_test_ray(request.node.nodeid, "after")


def _ensure_test_ray(test: str, when: str) -> None:
    import ray

    if ray.is_initialized():
        total = ray.cluster_resources()
        if total.get("CPU", 0) == RAY_TEST_CPUS and total.get("GPU", 0) == RAY_TEST_GPUS:
            if _ray_is_idle(ray, wait_s=30.0):
                return
            print(f"\nRay resources still held {when} {test} ({ray.available_resources()}); restarting Ray")
        else:
            print(f"\nanother Ray is running {when} {test} ({total}); starting the test Ray")
    _start_ray()  # shuts down the Ray that runs, if any


@pytest.fixture(scope="session")
def fused(ray_session, synthetic_world, tmp_path_factory) -> str:
    """The fusion job's output for the synthetic world (label-oracle features); read-only for tests."""
    from openscene_ray.fusion.config import FuseConfig
    from openscene_ray.fusion.job import run_fuse
    from openscene_ray.kernel.config import load_config

    output = str(tmp_path_factory.mktemp("fused"))
    config = load_config(FuseConfig, base={
        "manifest": synthetic_world.manifest, "fused": output,
        "extractor": {"name": "label-oracle", "options": ORACLE},
        "resources": {"min_actors": 1, "max_actors": 2, "gpus_per_actor": 1, "cpus_per_actor": 1},
    })  # fmt: skip
    assert run_fuse(config).ok
    return output
