"""``openscene-ray distill``: distil fused 2D features into a 3D network with Ray Train."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file (any storage URI); repeat to layer, e.g. a dataset config "
                        "then a resource profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set workers=4 --set model.out_channels=512")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--features", help="the fusion job's output root (overrides the config)")
    parser.add_argument("--storage-path", dest="storage_path", help="Ray Train storage path (overrides the config)")
    parser.add_argument("--name", help="run name; the same name and storage path resume the run")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.config import load_config
    from openscene_ray.train.trainer import DistillConfig, run_distill

    overrides = list(args.overrides)
    for key in ("manifest", "features", "storage_path", "name", "address"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    config = load_config(DistillConfig, args.config, overrides)
    summary = run_distill(config)
    print(json.dumps(summary.as_dict(), indent=2))
    return 0
