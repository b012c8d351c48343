"""``openscene-ray train-2d``: train an LSeg on views with label maps with Ray Train."""

from __future__ import annotations

import argparse
import json

from openscene_ray.kernel.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "epochs=30 --set optimizer=adamw --set lr=1e-3")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--storage-path", dest="storage_path", help="Ray Train storage path (overrides the config)")
    parser.add_argument("--name", help="run name; the same name and storage path resume the run")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.train2d.config import Train2DConfig
    from openscene_ray.train2d.job import run_train2d

    flags = {key: getattr(args, key) for key in ("manifest", "storage_path", "name", "address")}
    summary = run_train2d(config_from_args(Train2DConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0
