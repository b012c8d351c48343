"""``openscene-ray fuse``: run the distributed fusion job (locally or on a cluster)."""

from __future__ import annotations

import argparse
import json

from openscene_ray.kernel.config import (
    add_config_arguments,
    add_renamed_flags,
    config_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "resources.max_actors=4")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--fused", help="the fused output folder to write (overrides the config)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="re-fuse scenes whose shards exist")
    add_renamed_flags(parser, {"--output": "--fused"})


def run(args: argparse.Namespace) -> int:
    from openscene_ray.fusion.config import FuseConfig
    from openscene_ray.fusion.job import run_fuse

    flags = {key: getattr(args, key) for key in ("manifest", "fused", "address", "overwrite")}
    summary = run_fuse(config_from_args(FuseConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.ok else 1
