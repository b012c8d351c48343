"""``openscene-ray hierarchy``: Ultrametric Feature Fields over a manifest's scenes (locally or on a cluster)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openscene_ray.kernel.config import add_config_arguments

    add_config_arguments(parser, "train.steps=3000")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--output", help="output folder (overrides the config)")
    parser.add_argument("--masks", help="root of the mask hierarchies, <scene>/seg/<frame>/*.png (overrides the config)")
    parser.add_argument("--ground-truth", dest="ground_truth", help="root of <scene>/<level>/<frame>.png GT id maps: "
                        "scores NC/VC (sets metrics.ground_truth)")  # fmt: skip
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="reprocess scenes that are complete")
    parser.add_argument("--figure", metavar="PNG", help="after the run, draw one view at a few levels into this file")
    parser.add_argument("--figure-view", default=None, metavar="SCENE/FRAME",
                        help="the view to draw (default: the first view of the first scene)")  # fmt: skip
    parser.add_argument("--figure-thresholds", default="0.05,0.15,0.35", metavar="T1,T2,T3",
                        help="levels to draw, by threshold (their view PNGs must be written)")  # fmt: skip


def _figure(args: argparse.Namespace, config) -> None:
    from openscene_ray.hierarchy.figure import levels_figure
    from openscene_ray.kernel import storage
    from openscene_ray.kernel.manifest import read_manifest

    records = {r.scene_id: r for r in read_manifest(config.manifest)}
    first = next(iter(records.values()))
    scene_id, _, frame_id = (args.figure_view or f"{first.scene_id}/{first.views[0].frame_id}").partition("/")
    thresholds = [float(t) for t in args.figure_thresholds.split(",")]
    png = levels_figure(config.output, records[scene_id], frame_id, thresholds, config.segment.max_segments)
    storage.write_bytes(args.figure, png)
    print(f"figure: {args.figure} ({len(png) // 1024} kB)")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.hierarchy.config import HierarchyConfig
    from openscene_ray.hierarchy.job import run_hierarchy
    from openscene_ray.kernel.config import config_from_args

    flags = {key: getattr(args, key) for key in ("manifest", "output", "masks", "address", "overwrite")}
    if args.ground_truth is not None:
        flags["metrics.ground_truth"] = args.ground_truth
    config = config_from_args(HierarchyConfig, args, flags)
    summary = run_hierarchy(config)
    print(json.dumps(summary.as_dict(), indent=2))
    if args.figure:
        _figure(args, config)
    return 0 if summary.ok else 1
