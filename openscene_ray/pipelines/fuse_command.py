"""``openscene-ray fuse``: run the distributed fusion job (locally or on a cluster)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file (any storage URI); repeat to layer, e.g. a dataset config "
                        "then a resource profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set resources.max_actors=4 (repeatable)")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--output", help="output root URI (overrides the config)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--overwrite", action="store_true", help="re-fuse scenes whose shards exist")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.config import load_config
    from openscene_ray.pipelines.fuse import FuseConfig, run_fuse

    overrides = list(args.overrides)
    for key in ("manifest", "output", "address"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    if args.overwrite:
        overrides.append("overwrite=true")
    config = load_config(FuseConfig, args.config, overrides)
    summary = run_fuse(config)
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.ok else 1
