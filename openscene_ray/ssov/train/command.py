"""``openscene-ray train-free``: annotation-free training on the lifted pseudo-labels (Ray Train)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openscene_ray.kernel.config import add_config_arguments

    add_config_arguments(parser, "epochs=5")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--lifted", help="the lifted output (openscene-ray lift)")
    parser.add_argument("--storage-path", dest="storage_path", help="Ray Train storage (local path or s3://)")
    parser.add_argument("--name", help="run name; rerunning the same name resumes it")
    parser.add_argument("--init-from", dest="init_from", help="start from a TMP export (openscene-ray pretrain)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.kernel.config import config_from_args
    from openscene_ray.ssov.train.config import TrainFreeConfig
    from openscene_ray.ssov.train.job import run_train_free

    flags = {key: getattr(args, key) for key in ("manifest", "lifted", "storage_path", "name", "init_from", "address")}
    summary = run_train_free(config_from_args(TrainFreeConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.ok else 1
