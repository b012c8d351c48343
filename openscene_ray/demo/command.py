"""``openscene-ray demo``: every stage, for real, on one machine, on embedded defaults."""

from __future__ import annotations

import argparse

from openscene_ray.kernel.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "num_scenes=4")
    parser.add_argument("--output", help="output folder (default demo-output)")
    parser.add_argument("--openseg", help="OpenSeg SavedModel folder or URI (real 2D model)")
    parser.add_argument("--clip-checkpoint", help="CLIP checkpoint file/URI or open_clip tag (real text side)")


def run(args: argparse.Namespace) -> int:
    flags = {key: getattr(args, key) for key in ("output", "openseg", "clip_checkpoint")}
    from openscene_ray.demo.config import DemoConfig
    from openscene_ray.demo.job import run_demo

    summary = run_demo(config_from_args(DemoConfig, args, flags))
    print()
    print(f"demo finished in {summary['seconds']} s")
    for mode, row in summary["evaluation"]["modes"].items():
        print(f"  {mode:9s} mIoU {100 * (row['miou'] or 0):5.1f}  mAcc {100 * (row['macc'] or 0):5.1f}")
    for q in summary["queries"]:
        top = q["top_scenes"][0]["scene_id"] if q["top_scenes"] else "-"
        truth = ""
        if "scenes_with_class" in q:
            truth = f" (in the ground truth: {', '.join(q['scenes_with_class']) or 'none'})"
        print(f"  query 'a {q['query']} in a scene': best scene {top}{truth}")
    print(f"report:  {summary['report']}")
    print(f"outputs: {summary['output']}")
    return 0
