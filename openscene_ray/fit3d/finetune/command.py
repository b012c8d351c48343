"""``openscene-ray fit3d-finetune``: FiT3D's Stage II, the backbone fine-tuned on rendered lifted features (Ray Train)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openscene_ray.kernel.config import add_config_arguments

    add_config_arguments(parser, "workers=4 --set use_gpu=true")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--lifted", help="the fit3d-lift output (overrides the config)")
    parser.add_argument("--storage-path", dest="storage_path", help="Ray Train storage path (overrides the config)")
    parser.add_argument("--name", help="run name; the same name and storage path resume the run")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.fit3d.finetune.config import FinetuneConfig
    from openscene_ray.fit3d.finetune.job import run_finetune
    from openscene_ray.kernel.config import config_from_args

    flags = {key: getattr(args, key) for key in ("manifest", "lifted", "storage_path", "name", "address")}
    summary = run_finetune(config_from_args(FinetuneConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0
