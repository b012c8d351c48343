"""``openscene-ray demo``: every stage, for real, on one machine, on embedded defaults.

synthesise a small world → ingest → fuse (label oracle, local Ray) → distil (Ray Train, CPU
workers) → evaluate (fusion / distill / ensemble) → open-vocabulary queries → one markdown report.

By default the 2D model is an oracle built from ground-truth label maps and the text embeddings
are a seeded synthetic space, so the numbers show the machinery working, not OpenScene's
accuracy. ``--openseg`` (a SavedModel) and/or ``--clip-checkpoint`` run the real models instead.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from openscene_ray.demo.config import SYNTHETIC_VISIBILITY, DemoConfig, demo_models
from openscene_ray.demo.report import write_report
from openscene_ray.kernel import storage
from openscene_ray.kernel.stages import run_stage

__all__ = ["run_demo"]

LOCAL_ACTORS = {"min_actors": 1, "max_actors": 1, "cpus_per_actor": 1, "loader_cpus": 0.5}


class _Progress:
    def __init__(self, total: int):
        self.total, self.step, self.start = total, 0, time.perf_counter()
        self.timings: dict[str, float] = {}

    def begin(self, name: str) -> None:
        self.step += 1
        self._name, self._t0 = name, time.perf_counter()
        print(f"[{self.step}/{self.total}] {name} ...", flush=True)

    def end(self, detail: str = "") -> None:
        seconds = time.perf_counter() - self._t0
        self.timings[self._name] = seconds
        print(f"      done in {seconds:.1f} s {detail}", flush=True)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run every stage; returns the summary (also written as ``summary.json`` next to the report)."""
    out = os.path.abspath(config.output)
    extractor, text, feature_dim = demo_models(config)
    progress = _Progress(6)
    manifest = _world(config, out, progress)
    fused = storage.join(out, "fused")

    progress.begin(f"fusing 2D features with {extractor['name']} on a local Ray")
    fuse = run_stage("fuse", {"manifest": manifest, "fused": fused, "extractor": extractor, "resources": LOCAL_ACTORS})
    if not fuse.ok:
        raise RuntimeError(f"fusion failed: {fuse.failed}")
    progress.end(f"({len(fuse.done)} scenes, {fuse.as_dict()['scenes_per_minute']} scenes/min)")

    progress.begin(f"distilling MinkUNet18A with Ray Train ({config.distill_workers} CPU workers)")
    distill = run_stage("distill", {
        "manifest": manifest, "fused": fused, "storage_path": storage.join(out, "train"), "name": "demo",
        "model": {"out_channels": feature_dim}, "voxel_size": config.voxel_size, "epochs": config.distill_epochs,
        "batch_size": 2, "lr": 1e-3, "validate_every": 4, "text": text, "workers": config.distill_workers,
        "max_failures": 1,
    })  # fmt: skip
    history = distill.history
    progress.end(f"(loss {history[0]['train_loss']:.3f} → {history[-1]['train_loss']:.3f})")

    progress.begin("evaluating fusion / distill / ensemble")
    evaluation = run_stage("evaluate", {
        "manifest": manifest, "output": storage.join(out, "evaluation"), "fused": fused,
        "checkpoint": distill.model_uri, "text": text, "save_ply": True, "resources": LOCAL_ACTORS,
    })  # fmt: skip
    progress.end(" ".join(f"{m}={r['miou']:.3f}" for m, r in evaluation.modes.items()))

    progress.begin("answering open-vocabulary queries")
    queries = _run_queries(config, manifest, fused, text, storage.join(out, "queries"))
    progress.end(f"({len(queries)} queries)")

    summary = {
        "output": out,
        "report": os.path.join(out, "report.md"),
        "seconds": round(time.perf_counter() - progress.start, 1),
        "stage_seconds": {k: round(v, 1) for k, v in progress.timings.items()},
        "fusion": fuse.as_dict(),
        "distill": distill.as_dict(),
        "evaluation": evaluation.as_dict(),
        "queries": queries,
        "models": {"extractor": extractor["name"], "text": text["encoder"]},
    }
    write_report(summary, out)
    storage.write_bytes(os.path.join(out, "summary.json"), json.dumps(summary, indent=2).encode())
    return summary


def _world(config: DemoConfig, out: str, progress: _Progress) -> str:
    """Synthesise the rooms and ingest them; returns the manifest URI."""
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout
    from openscene_ray.synth.world import SynthConfig
    from openscene_ray.synth.writer import write_world

    progress.begin("synthesising the world")
    synth = SynthConfig(
        seed=config.seed, num_scenes=config.num_scenes, views_per_scene=config.views_per_scene,
        points_per_scene=config.points_per_scene, val_fraction=0.5,
    )  # fmt: skip
    write_world(synth, storage.join(out, "world"))
    progress.end(f"({config.num_scenes} rooms × {config.views_per_scene} views)")

    progress.begin("ingesting (scannet layout)")
    layout = build_layout("scannet", overrides=[f"visibility_threshold={SYNTHETIC_VISIBILITY}"])
    ingested = ingest(layout, storage.join(out, "world"), storage.join(out, "ingested"))
    if ingested.errors:
        raise RuntimeError(f"ingest failed for {[e.scene_id for e in ingested.errors]}")
    progress.end(f"(manifest {ingested.manifest_uri})")
    return ingested.manifest_uri


def _run_queries(config: DemoConfig, manifest: str, fused: str, text: dict, out: str) -> list[dict[str, Any]]:
    """Rare-object search over the feature database, then a heatmap of each query's best scene."""
    from openscene_ray.kernel.labels import get_label_set
    from openscene_ray.kernel.manifest import load_points, read_manifest

    common = {"texts": config.queries, "template": "a {} in a scene", "text": text, "manifest": manifest}
    search = run_stage("query", common | {"output": storage.join(out, "search"), "fused": fused})
    class_names = get_label_set(text["label_set"]).class_names
    scene_classes = {r.scene_id: set(load_points(r.points_uri)[2].tolist()) for r in read_manifest(manifest)}
    results = []
    for name, found in zip(config.queries, search["results"]):
        entry = {"query": name, "top_scenes": found["scenes"]}
        if name in class_names:  # the ground truth, so that a reader can check the ranking
            entry["scenes_with_class"] = sorted(s for s, c in scene_classes.items() if class_names.index(name) in c)
        if found["scenes"]:
            best = found["scenes"][0]["scene_id"]
            scene = run_stage("query", common | {"texts": [name], "output": storage.join(out, best), "scene": best,
                                                 "fused": fused})  # fmt: skip
            entry["heatmap_png"] = os.path.relpath(scene["heatmaps"][0]["png"], os.path.dirname(out))
        results.append(entry)
    return results


