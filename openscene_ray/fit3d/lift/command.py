"""``openscene-ray fit3d-lift``: FiT3D's Stage I, a backbone's features lifted into every scene (Ray Data)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openscene_ray.kernel.config import add_config_arguments

    add_config_arguments(parser, "gaussians.iterations=3000")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--lifted", help="output folder (scenes/, runs/; overrides the config)")
    parser.add_argument("--representation", choices=("gaussians", "points"), help="overrides the config")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="lift complete scenes again")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.fit3d.lift.config import LiftConfig
    from openscene_ray.fit3d.lift.job import run_lift
    from openscene_ray.kernel.config import config_from_args

    flags = {key: getattr(args, key) for key in ("manifest", "lifted", "representation", "address", "overwrite")}
    summary = run_lift(config_from_args(LiftConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.ok else 1
