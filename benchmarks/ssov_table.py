"""SSOV's measured table on the synthetic world (README, SSOV section): every stage through Ray.

A synthetic world (train rooms and held-out val rooms) is segmented by a 2D segmenter chosen by
name (any registered extractor: ``label-oracle`` with noise and blur by default, ``lseg`` with a
trained checkpoint via ``--segmenter-options``), lifted, then three networks are trained on the
train rooms' pseudo-labels (annotation-free from scratch, TMP, annotation-free from TMP). The val
rooms score the pseudo-labels and each network, with and without AFI. One JSON document and a
Markdown table are printed (and written under ``--out``).

    python -m benchmarks.ssov_table --out /tmp/ssov-table
    python -m benchmarks.ssov_table --out /tmp/ssov-lseg --segmenter lseg \\
        --segmenter-options '{checkpoint: /path/to/lseg-tiny/model}' \\
        --dictionary configs/ssov/dictionaries/scannet20-classes.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import yaml

__all__ = ["main", "measure", "table_rows"]

DICTIONARY = "configs/ssov/dictionaries/scannet20.yaml"
TEXT = {"encoder": "synthetic", "options": {"dim": 32, "seed": 0}}
ORACLE = {"text": {"label_set": "scannet20", **TEXT}, "noise": 0.4, "blur": 1}
SMALL_NET = {"init_dim": 16, "planes": [16, 32, 48, 64, 64, 48, 32, 32], "layers": [1, 1, 1, 1, 1, 1, 1, 1]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the world, every stage's output and table.json")
    parser.add_argument("--segmenter", default="label-oracle", help="registered extractor used as the segmenter")
    parser.add_argument("--segmenter-options", default=None,
                        help="YAML mapping of the extractor's options (default for label-oracle: noise 0.4, blur 1)")
    parser.add_argument("--dictionary", default=DICTIONARY,
                        help="phrase dictionary (scannet20-classes.yaml for a segmenter trained on the synthetic "
                             "text space, whose synonyms are random directions)")
    parser.add_argument("--text-options", default=yaml.safe_dump(TEXT, default_flow_style=True).strip(),
                        help="YAML {encoder, options}: the text space the vocabulary is embedded in")
    parser.add_argument("--scenes", type=int, default=12, help="synthetic rooms (a third held out as val)")
    parser.add_argument("--views", type=int, default=12, help="views per room")
    parser.add_argument("--points", type=int, default=8000, help="points per room")
    parser.add_argument("--seed", type=int, default=11, help="synthetic world seed")
    parser.add_argument("--epochs", type=int, default=100, help="annotation-free training epochs")
    parser.add_argument("--tmp-epochs", type=int, default=40, help="TMP pre-training epochs")
    parser.add_argument("--in-channels", type=int, default=3, choices=(1, 3), help="1: geometry only, 3: colour")
    parser.add_argument("--full-net", action="store_true", help="Res16UNet34C at full width (default: a slim one)")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray")
    return parser


def _world(args) -> str:
    """Write and ingest the synthetic world once; returns the manifest URI."""
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout
    from openscene_ray.synth.world import SynthConfig
    from openscene_ray.synth.writer import write_world

    raw, ingested = os.path.join(args.out, "world", "raw"), os.path.join(args.out, "world", "ingested")
    manifest = os.path.join(ingested, "manifest.parquet")
    if not os.path.exists(manifest):
        config = SynthConfig(seed=args.seed, num_scenes=args.scenes, views_per_scene=args.views,
                             points_per_scene=args.points, val_fraction=0.34)  # fmt: skip
        write_world(config, raw)
        result = ingest(build_layout("scannet", overrides=["visibility_threshold=0.05"]), raw, ingested)
        if result.errors:
            raise RuntimeError(f"ingest failed: {result.errors}")
    return manifest


def _networks(args, manifest: str, paths: dict[str, str]) -> dict[str, Any]:
    """Train annotation-free (scratch), TMP, annotation-free from TMP; returns the summaries.

    The slim network and the learning rates (trunk 0.1, head 1.0; TMP 0.1) are what learns in
    a few hundred steps on a handful of rooms; the reference's 0.02 / 2.0 / 0.5 are for nuScenes."""
    from openscene_ray.kernel.stages import run_stage
    from openscene_ray.ssov.store import read_vocabulary

    net = {"in_channels": args.in_channels, **({} if args.full_net else SMALL_NET)}
    common = {"manifest": manifest, "lifted": paths["lifted"], "storage_path": paths["train"], "workers": 1,
              "cpus_per_worker": 1, "grid": {"coordinates": "cartesian", "voxel_size": 0.05}, "batch_size": 2,
              "data": {"progress_bars": False}}  # fmt: skip
    free = {**common, "model": {**net, "out_channels": 20}, "epochs": args.epochs, "lr": 0.1, "lr_head": 1.0,
            "validate_split": None}  # fmt: skip
    runs = {"scratch": run_stage("train-free", {**free, "name": "scratch"})}
    dim = int(read_vocabulary(paths["segments"]).embeddings.shape[1])  # the segmenter's embedding width
    runs["tmp"] = run_stage("pretrain", {**common, "name": "tmp", "segments": paths["segments"], "lr": 0.1,
                                         "epochs": args.tmp_epochs,
                                         "model": {**net, "out_channels": dim, "normalize": True}})  # fmt: skip
    runs["from-tmp"] = run_stage("train-free", {**free, "name": "from-tmp", "init_from": runs["tmp"].model_uri})
    return runs


def measure(args) -> dict[str, Any]:
    """Run every stage; returns the figures (lift diagnostics, per-mode val metrics, timings)."""
    import ray

    from openscene_ray.kernel.stages import run_stage

    started = time.perf_counter()
    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    manifest = _world(args)
    paths = {k: os.path.join(args.out, k) for k in ("segments", "lifted", "train", "eval")}
    text = yaml.safe_load(args.text_options)
    options = yaml.safe_load(args.segmenter_options) if args.segmenter_options else (
        ORACLE if args.segmenter == "label-oracle" else {})  # fmt: skip
    segmented = run_stage("segment", {"manifest": manifest, "segments": paths["segments"],
                                      "dictionary": args.dictionary, "text": text,
                                      "extractor": {"name": args.segmenter, "options": options},
                                      "data": {"progress_bars": False}})  # fmt: skip
    lifted = run_stage("lift", {"manifest": manifest, "segments": paths["segments"], "lifted": paths["lifted"],
                                "settings": {"min_depth": 0.0}, "data": {"progress_bars": False}})  # fmt: skip
    runs = _networks(args, manifest, paths)
    modes: dict[str, Any] = {}
    for name, run in runs.items():
        report = run_stage("evaluate", {"manifest": manifest, "output": os.path.join(paths["eval"], name),
                                        "lifted": paths["lifted"], "checkpoint": run.model_uri,
                                        "modes": ["pseudo", "classify"], "afi": {}, "split": "val",
                                        "text": {"label_set": "scannet20", **text}})  # fmt: skip
        if not report.ok:
            raise RuntimeError(f"evaluation of {name} failed: {report.failed}")
        for mode, result in report.modes.items():
            modes[mode if mode.startswith("pseudo") else mode.replace("classify", name)] = result
    return {"segmenter": args.segmenter, "segmenter_options": options, "dictionary": args.dictionary,
            "lift": lifted.as_dict(), "segment": segmented.as_dict(),
            "training": {k: {"epochs": len(r.history), "first_loss": r.history[0]["train_loss"],
                             "last_loss": r.history[-1]["train_loss"], "seconds": round(r.seconds, 1)}
                         for k, r in runs.items()},
            "modes": {m: _scores(r) for m, r in modes.items()}, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def _scores(result: dict[str, Any]) -> dict[str, float]:
    """mIoU, mAcc, overall accuracy, coverage (points with a prediction) and accuracy where covered."""
    known = result["num_points"] - result["num_unknown"]
    correct = result["oacc"] * result["num_points"]
    return {"miou": round(100 * result["miou"], 2), "macc": round(100 * result["macc"], 2),
            "oacc": round(100 * result["oacc"], 2), "coverage": round(100 * known / result["num_points"], 2),
            "accuracy_covered": round(100 * correct / known, 2) if known else None}  # fmt: skip


LABELS = {"pseudo": "pseudo-labels (lifted)", "tmp": "TMP network, zero-shot via the dictionary",
          "scratch": "annotation-free network (from scratch)", "from-tmp": "annotation-free network (from TMP)"}


def table_rows(figures: dict[str, Any]) -> list[str]:
    """The Markdown table of the val rooms' figures (with and without AFI)."""
    rows = ["| predictions | mIoU | mIoU +AFI | mAcc | coverage | accuracy where covered |", "|---|---|---|---|---|---|"]
    for key, label in LABELS.items():
        base, afi = figures["modes"].get(key), figures["modes"].get(f"{key}+afi")
        if base is None:
            continue
        rows.append(f"| {label} | {base['miou']:.1f} | {afi['miou']:.1f} | {base['macc']:.1f} | "
                    f"{base['coverage']:.1f} % | {base['accuracy_covered']:.1f} % |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.makedirs(args.out, exist_ok=True)
    figures = measure(args)
    with open(os.path.join(args.out, "table.json"), "w") as handle:
        json.dump(figures, handle, indent=2)
    print(json.dumps(figures))
    print("\n".join(table_rows(figures)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
