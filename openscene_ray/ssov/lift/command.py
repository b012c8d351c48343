"""``openscene-ray lift``: SSOV superpixels → superpoints and pseudo-labels per point (Ray Data tasks)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openscene_ray.kernel.config import add_config_arguments

    add_config_arguments(parser, "settings.min_depth=0.0")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--segments", help="the segments store written by openscene-ray segment")
    parser.add_argument("--lifted", help="the lifted output folder to write (labels/, pairs/)")
    parser.add_argument("--dictionary", help="default: the dictionary the segments were made with")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="re-lift complete scenes")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.kernel.config import config_from_args
    from openscene_ray.ssov.lift.config import LiftConfig
    from openscene_ray.ssov.lift.job import run_lift

    flags = {key: getattr(args, key) for key in ("manifest", "segments", "lifted", "dictionary", "address",
                                                 "overwrite")}  # fmt: skip
    summary = run_lift(config_from_args(LiftConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.ok else 1
