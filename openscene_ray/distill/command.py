"""``openscene-ray distill``: distil fused 2D features into a 3D network with Ray Train."""

from __future__ import annotations

import argparse
import json

from openscene_ray.kernel.config import (
    add_config_arguments,
    add_renamed_flags,
    config_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "workers=4 --set model.out_channels=512")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--fused", help="the fused output (the fusion job's folder; overrides the config)")
    parser.add_argument("--storage-path", dest="storage_path", help="Ray Train storage path (overrides the config)")
    parser.add_argument("--name", help="run name; the same name and storage path resume the run")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")
    add_renamed_flags(parser, {"--features": "--fused"})


def run(args: argparse.Namespace) -> int:
    from openscene_ray.distill.config import DistillConfig
    from openscene_ray.distill.job import run_distill

    flags = {key: getattr(args, key) for key in ("manifest", "fused", "storage_path", "name", "address")}
    summary = run_distill(config_from_args(DistillConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0
