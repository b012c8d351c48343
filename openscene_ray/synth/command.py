"""``openscene-ray synth``: write a synthetic posed RGB-D world with ground truth to a storage URI."""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="root URI of the world (local path, s3://, memory://)")
    parser.add_argument("--config", help="YAML file of SynthConfig fields (any storage URI)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set num_scenes=4 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.config import load_config
    from openscene_ray.synth.world import SynthConfig
    from openscene_ray.synth.writer import write_world

    config = load_config(SynthConfig, args.config, args.overrides)
    start = time.perf_counter()
    scene_ids = write_world(config, args.out)
    seconds = time.perf_counter() - start
    print(
        f"synth: {len(scene_ids)} scenes, {len(scene_ids) * config.views_per_scene} views, "
        f"{len(scene_ids) * config.points_per_scene} points written to {args.out} in {seconds:.1f} s"
    )
    return 0
