"""``openscene-ray demo``: every stage, for real, on one machine, on embedded defaults."""

from __future__ import annotations

import argparse
import os

from openscene_ray.kernel.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "num_scenes=4")
    parser.add_argument("--output", help="output folder (default demo-output)")
    parser.add_argument("--oracle", action="store_true", default=None,
                        help="fuse ground-truth label maps (exact 2D features) instead of training a tiny LSeg")
    parser.add_argument("--openseg", help="OpenSeg SavedModel folder or URI (real 2D model)")
    parser.add_argument("--clip-checkpoint", help="CLIP checkpoint file/URI or open_clip tag (real text side)")


def run(args: argparse.Namespace) -> int:
    flags = {key: getattr(args, key) for key in ("output", "oracle", "openseg", "clip_checkpoint")}
    from openscene_ray.demo.config import DemoConfig
    from openscene_ray.demo.job import run_demo

    summary = run_demo(config_from_args(DemoConfig, args, flags))
    from openscene_ray.demo.report import table_rows

    print()
    print(f"demo finished in {summary['seconds']} s (held-out rooms)")
    print(f"  {'source':34s} {'mIoU':>6s} {'mAcc':>6s} {'coverage':>9s}")
    for name, miou, macc, coverage in table_rows(summary):
        print(f"  {name:34s} {miou:>6s} {macc:>6s} {coverage:>9s}")
    for q in summary["queries"]:
        top = q["top_scenes"][0]["scene_id"] if q["top_scenes"] else "-"
        truth = ""
        if "scenes_with_class" in q:
            truth = f" (in the ground truth: {', '.join(q['scenes_with_class']) or 'none'})"
        print(f"  query 'a {q['query']} in a scene': best scene {top}{truth}")
    print(f"report:  {summary['report']}")
    print(f"logs:    {summary['log']}")
    print(f"browse:  {viewer_command(summary)}")
    return 0


def viewer_command(summary: dict) -> str:
    """The ``openscene-ray view`` command line that opens the demo's outputs in the browser viewer."""
    out = os.path.relpath(summary["output"])
    command = (f"uv run openscene-ray view --manifest {out}/ingested/manifest.parquet --fused {out}/fused "
               f"--checkpoint {out}/train/demo/model --template 'a {{}} in a scene'")  # fmt: skip
    if summary["models"]["text"] != "synthetic":
        return command  # the viewer's default text encoder is the real CLIP one
    options = summary["text_options"]
    return f"{command} --set text.encoder=synthetic --set 'text.options={{dim: {options['dim']}, seed: {options['seed']}}}'"
