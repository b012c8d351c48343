"""``openscene-ray demo``: every stage, for real, on one machine, on embedded defaults.

synthesise a small world → ingest → train a tiny LSeg (Ray Train) → fuse its features (local
Ray) → distil (Ray Train, CPU workers) → evaluate (2D per view / fusion / distill / ensemble on the
held-out rooms) → open-vocabulary queries → pictures → one markdown report.

The text embeddings are a seeded synthetic space (random CLIP towers give nearly parallel
embeddings), so the LSeg learns to align its pixels with it from the train rooms' label maps: a
real, imperfect 2D model. ``--oracle`` fuses ground-truth label maps instead (the machinery with
exact 2D features); ``--openseg`` (a SavedModel) and/or ``--clip-checkpoint`` run the real models.
The console shows one line per stage; everything else goes to ``<output>/logs/demo.log``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from openscene_ray.demo.config import (
    DEMO_DISTILL_LR,
    SYNTHETIC_VISIBILITY,
    DemoConfig,
    demo_lseg_run,
    demo_models,
    demo_stage_count,
)
from openscene_ray.demo.figures import demo_figures
from openscene_ray.demo.report import write_report
from openscene_ray.kernel import storage
from openscene_ray.kernel.stages import run_stage

__all__ = ["run_demo"]

LOCAL_ACTORS = {"min_actors": 1, "max_actors": 1, "cpus_per_actor": 1, "loader_cpus": 0.5}


class _Progress:
    """One console line per stage; everything else the stages print (Python logging, Ray's and its
    workers' output, native logs) goes to ``log_file``: while a stage runs, this process's stdout
    and stderr are redirected there at the file-descriptor level, which child processes inherit."""

    def __init__(self, total: int, log_file: str):
        self.total, self.step, self.start = total, 0, time.perf_counter()
        self.timings: dict[str, float] = {}
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        self.log_file = log_file
        self._console = os.fdopen(os.dup(1), "w", buffering=1)
        self._saved: tuple | None = None  # the console's fds and streams while a stage runs

    def begin(self, name: str) -> None:
        self.step += 1
        self._name, self._t0 = name, time.perf_counter()
        self._console.write(f"[{self.step}/{self.total}] {name} ...\n")
        sys.stdout.flush(), sys.stderr.flush()
        log = open(self.log_file, "a", buffering=1)  # noqa: SIM115 - closed by _restore
        log.write(f"\n===== [{self.step}/{self.total}] {name}\n")
        log.flush()
        self._saved = (os.dup(1), os.dup(2), sys.stdout, sys.stderr, log)
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log  # also where Python's own streams do not write to fd 1/2

    def end(self, detail: str = "") -> None:
        self._restore()
        seconds = time.perf_counter() - self._t0
        self.timings[self._name] = seconds
        self._console.write(f"      done in {seconds:.1f} s {detail}\n")

    def _restore(self) -> None:
        if self._saved is not None:
            out_fd, err_fd, sys.stdout, sys.stderr, log = self._saved
            log.flush()
            os.dup2(out_fd, 1), os.dup2(err_fd, 2)
            os.close(out_fd), os.close(err_fd)
            log.close()
            self._saved = None

    def close(self) -> None:
        """Restore the console (also after a failed stage, whose output is in the log file)."""
        self._restore()
        if not self._console.closed:
            self._console.close()


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run every stage; returns the summary (also written as ``summary.json`` next to the report)."""
    out = os.path.abspath(config.output)
    progress = _Progress(demo_stage_count(config), os.path.join(out, "logs", "demo.log"))
    try:
        return _run_stages(config, out, progress)
    except BaseException:
        progress.close()
        print(f"the demo failed: its full output is in {progress.log_file}", file=sys.stderr)
        raise
    finally:
        progress.close()  # idempotent


def _run_stages(config: DemoConfig, out: str, progress: _Progress) -> dict[str, Any]:
    extractor, text, feature_dim = demo_models(config)
    manifest = _world(config, out, progress)
    fused = storage.join(out, "fused")
    train_2d = None
    if extractor is None:  # the default: an LSeg this demo trains
        train_2d, extractor = _train_lseg(config, manifest, storage.join(out, "train-2d"), text, progress)

    progress.begin(f"fusing 2D features with {extractor['name']} on a local Ray")
    fuse = run_stage("fuse", {"manifest": manifest, "fused": fused, "extractor": extractor, "resources": LOCAL_ACTORS})
    if not fuse.ok:
        raise RuntimeError(f"fusion failed: {fuse.failed}")
    progress.end(f"({len(fuse.done)} scenes, {fuse.as_dict()['scenes_per_minute']} scenes/min)")

    progress.begin(f"distilling MinkUNet18A with Ray Train ({config.distill_workers} CPU workers)")
    distill = run_stage("distill", {
        "manifest": manifest, "fused": fused, "storage_path": storage.join(out, "train"), "name": "demo",
        "model": {"out_channels": feature_dim}, "voxel_size": config.voxel_size, "epochs": config.distill_epochs,
        "batch_size": 2, "lr": DEMO_DISTILL_LR, "validate_every": 4, "text": text,
        "workers": config.distill_workers, "max_failures": 1,
    })  # fmt: skip
    history = distill.history
    progress.end(f"(loss {history[0]['train_loss']:.3f} → {history[-1]['train_loss']:.3f})")

    progress.begin("evaluating 2D per view / fusion / distill / ensemble on the held-out rooms")
    evaluation = run_stage("evaluate", {
        "manifest": manifest, "output": storage.join(out, "evaluation"), "fused": fused,
        "checkpoint": distill.model_uri, "text": text, "modes": ["2d", "fusion", "distill", "ensemble"],
        "save_point_features": True, "resources": LOCAL_ACTORS,
    })  # fmt: skip
    progress.end(" ".join(f"{m}={r['miou']:.3f}" for m, r in evaluation.modes.items()))

    progress.begin("answering open-vocabulary queries")
    queries = _run_queries(config, manifest, fused, text, storage.join(out, "queries"))
    progress.end(f"({len(queries)} queries)")

    progress.begin("drawing the pictures")
    figures = demo_figures(manifest, fused, storage.join(out, "evaluation"), queries, text, out)
    progress.end(f"({len(figures)} pictures)")

    summary = {
        "output": out,
        "report": os.path.join(out, "report.md"),
        "seconds": round(time.perf_counter() - progress.start, 1),
        "stage_seconds": {k: round(v, 1) for k, v in progress.timings.items()},
        "train_2d": train_2d.as_dict() if train_2d is not None else None,
        "fusion": fuse.as_dict(),
        "distill": distill.as_dict(),
        "evaluation": evaluation.as_dict(),
        "queries": queries,
        "figures": figures,
        "models": {"extractor": extractor["name"], "text": text["encoder"]},
        "text_options": text.get("options", {}),
        "log": progress.log_file,
    }
    write_report(summary, out)
    storage.write_bytes(os.path.join(out, "summary.json"), json.dumps(summary, indent=2).encode())
    return summary


def _train_lseg(config: DemoConfig, manifest: str, storage_path: str, text: dict, progress: _Progress):
    """Train the tiny LSeg; ``(the train-2d summary, the extractor config that loads its export)``."""
    progress.begin(f"training a tiny LSeg on the train rooms' views with Ray Train ({config.lseg_epochs} epochs)")
    summary = run_stage("train-2d", demo_lseg_run(config, manifest, storage_path, text))
    val = summary.history[-1].get("val_miou")
    progress.end(f"(held-out views: 2D mIoU {100 * val:.1f})" if val is not None else "")
    return summary, {"name": "lseg", "options": {"checkpoint": summary.model_uri}}


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
    """Rare-object search over the feature database, with the ground truth next to each ranking
    (the heatmaps of the best rooms are drawn with the pictures)."""
    from openscene_ray.kernel.labels import get_label_set
    from openscene_ray.kernel.manifest import load_points, read_manifest

    search = run_stage("query", {"texts": config.queries, "template": "a {} in a scene", "text": text,
                                 "manifest": manifest, "output": storage.join(out, "search"), "fused": fused})  # fmt: skip
    class_names = get_label_set(text["label_set"]).class_names
    scene_classes = {r.scene_id: set(load_points(r.points_uri)[2].tolist()) for r in read_manifest(manifest)}
    results = []
    for name, found in zip(config.queries, search["results"]):
        entry = {"query": name, "top_scenes": found["scenes"]}
        if name in class_names:  # the ground truth, so that a reader can check the ranking
            entry["scenes_with_class"] = sorted(s for s, c in scene_classes.items() if class_names.index(name) in c)
        results.append(entry)
    return results
