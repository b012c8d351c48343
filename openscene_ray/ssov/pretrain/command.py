"""``openscene-ray pretrain``: SSOV's TMP contrastive pre-training of the 3D network (Ray Train)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openscene_ray.kernel.config import add_config_arguments

    add_config_arguments(parser, "epochs=40")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--segments", help="the segments store (openscene-ray segment)")
    parser.add_argument("--lifted", help="the lifted output (openscene-ray lift)")
    parser.add_argument("--storage-path", dest="storage_path", help="Ray Train storage (local path or s3://)")
    parser.add_argument("--name", help="run name; rerunning the same name resumes it")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.kernel.config import config_from_args
    from openscene_ray.ssov.pretrain.config import PretrainConfig
    from openscene_ray.ssov.pretrain.job import run_pretrain

    flags = {key: getattr(args, key) for key in ("manifest", "segments", "lifted", "storage_path", "name", "address")}
    summary = run_pretrain(config_from_args(PretrainConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.ok else 1
