"""Chaos helper: a fusion job on a multi-node Ray (``ray.cluster_utils.Cluster``) that loses a node.

Run as a script (it cannot share a process with another Ray)::

    python tests/chaos_cluster.py --manifest M --fused F [--workers 2] [--allow-graceful]

It starts a head with ``num_cpus=0`` (the driver's node: it schedules no work) and ``--workers``
worker nodes, runs :func:`openscene_ray.fusion.job.run_fuse` in a thread, waits for the run's
first index row (a scene finished), removes the worker node that holds a live fusion actor,
waits for the job and prints one JSON line: the summary, the removed node, the fusion actors'
nodes and the times. Ray's temp dir is private (``RAY_TMPDIR``), so no other ``ray.init()`` on
the machine attaches to this cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import traceback

FUSE_ACTOR = "FuseActor"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _live_fusion_actors(address: str) -> list[dict]:
    """``[{actor_id, node_id, class_name}]`` of the fusion pool's actors that are alive."""
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000,
                         raise_on_missing_output=False)  # fmt: skip
    return [
        {"actor_id": a.actor_id, "node_id": a.node_id, "class_name": a.class_name}
        for a in actors
        if FUSE_ACTOR in (a.class_name or "")
    ]


def _all_fusion_actor_nodes(address: str) -> list[str]:
    from ray.util.state import list_actors

    actors = list_actors(address=address, limit=1000, raise_on_missing_output=False)
    return sorted({a.node_id for a in actors if FUSE_ACTOR in (a.class_name or "") and a.node_id})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--fused", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=2)
    parser.add_argument("--allow-graceful", action="store_true", help="SIGTERM the node (default: SIGKILL)")
    parser.add_argument("--first-row-timeout-s", type=float, default=240)
    parser.add_argument("--job-timeout-s", type=float, default=300)
    args = parser.parse_args(argv)

    # A private Ray temp dir (short: Ray's Unix sockets live there) keeps the cluster address file
    # away from every other ray.init() on this machine.
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="/tmp/rcl")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray
    from ray.cluster_utils import Cluster

    from openscene_ray.fusion.config import FuseConfig
    from openscene_ray.fusion.job import run_fuse
    from openscene_ray.kernel.config import load_config
    from openscene_ray.kernel.features import index_dir

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conftest import ORACLE

    report: dict = {"events": {}}
    t0 = time.perf_counter()

    def mark(event: str) -> None:
        report["events"][event] = round(time.perf_counter() - t0, 2)

    cluster = Cluster(
        initialize_head=True,
        # the state API (which actor is where) needs the dashboard: on a free port, not 8265,
        # which another Ray on this machine may hold
        head_node_args={"num_cpus": 0, "include_dashboard": True, "dashboard_port": _free_port()},
    )
    try:
        workers = [cluster.add_node(num_cpus=args.cpus_per_node) for _ in range(args.workers)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        mark("cluster_up")
        config = load_config(FuseConfig, base={
            "manifest": args.manifest, "fused": args.fused, "address": cluster.address,
            "extractor": {"name": "label-oracle", "options": ORACLE},
            "resources": {"min_actors": 1, "max_actors": args.workers, "cpus_per_actor": 1},
            "data": {"progress_bars": False},
        })  # fmt: skip
        outcome: dict = {}

        def job() -> None:
            try:
                outcome["summary"] = run_fuse(config)
            except BaseException as exc:  # noqa: BLE001 - reported in the JSON line
                outcome["error"] = "".join(traceback.format_exception(exc))[-4000:]

        thread = threading.Thread(target=job, daemon=True)
        thread.start()
        rows = index_dir(args.fused)
        deadline = time.time() + args.first_row_timeout_s
        while time.time() < deadline and thread.is_alive():
            if os.path.isdir(rows) and any(n.endswith(".parquet") for n in os.listdir(rows)):
                break
            time.sleep(0.05)
        mark("first_index_row")
        report["rows_before_removal"] = sorted(os.listdir(rows)) if os.path.isdir(rows) else []
        victim = None
        for _ in range(100):  # the actor list lags a little behind the pool
            live = _live_fusion_actors(cluster.address)
            by_node = {n.node_id: n for n in workers}
            candidates = [a for a in live if a["node_id"] in by_node]
            if candidates:
                victim = by_node[candidates[0]["node_id"]]
                report["live_actors_before_removal"] = live
                break
            if not thread.is_alive():
                break
            time.sleep(0.1)
        if victim is not None:
            report["removed_node"] = victim.node_id
            cluster.remove_node(victim, allow_graceful=args.allow_graceful)
            mark("node_removed")
        thread.join(args.job_timeout_s)
        mark("job_returned")
        report["timed_out"] = thread.is_alive()
        if "summary" in outcome:
            summary = outcome["summary"]
            report["summary"] = summary.as_dict() | {"done_ids": summary.done, "skipped_ids": summary.skipped}
            report["run_id"] = summary.run_id
        report["error"] = outcome.get("error")
        try:
            report["fusion_actor_nodes"] = _all_fusion_actor_nodes(cluster.address)
        except Exception as exc:  # noqa: BLE001
            report["fusion_actor_nodes_error"] = repr(exc)
    finally:
        ray.shutdown()
        cluster.shutdown()
        mark("shutdown")
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
