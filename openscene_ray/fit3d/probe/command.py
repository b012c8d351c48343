"""``openscene-ray fit3d-probe``: linear probes and multi-view consistency of original, fine-tuned and
concatenated backbone features."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openscene_ray.kernel.config import add_config_arguments

    add_config_arguments(parser, "probe.iterations=2000")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--output", help="folder for metrics.json and metrics.md (overrides the config)")
    parser.add_argument("--checkpoint", dest="checkpoint", help="the fine-tuned export (sets backbone.checkpoint)")
    parser.add_argument("--address", help="Ray address (runner ray; default: RAY_ADDRESS or a local Ray)")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.fit3d.probe.config import ProbeConfig
    from openscene_ray.fit3d.probe.job import run_probe
    from openscene_ray.kernel.config import config_from_args

    flags = {key: getattr(args, key) for key in ("manifest", "output", "address")}
    flags["backbone.checkpoint"] = args.checkpoint
    summary = run_probe(config_from_args(ProbeConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    print(summary.table())
    return 0
