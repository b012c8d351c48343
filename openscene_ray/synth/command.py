"""``openscene-ray synth``: write a synthetic posed RGB-D world with ground truth to a storage URI."""

from __future__ import annotations

import argparse
import time

from openscene_ray.kernel.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="root URI of the world (local path, s3://, memory://)")
    add_config_arguments(parser, "num_scenes=4")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.synth.world import SynthConfig
    from openscene_ray.synth.writer import write_world

    config = config_from_args(SynthConfig, args)
    start = time.perf_counter()
    scene_ids = write_world(config, args.out)
    seconds = time.perf_counter() - start
    print(
        f"synth: {len(scene_ids)} scenes, {len(scene_ids) * config.views_per_scene} views, "
        f"{len(scene_ids) * config.points_per_scene} points written to {args.out} in {seconds:.1f} s"
    )
    return 0
