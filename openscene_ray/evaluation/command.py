"""``openscene-ray evaluate``: zero-shot evaluation (fusion / distill / ensemble) as a Ray Data job."""

from __future__ import annotations

import argparse
import json

from openscene_ray.kernel.config import (
    add_config_arguments,
    add_renamed_flags,
    config_from_args,
)

ALL_SPLITS = "all"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "openscene_compat=true")
    parser.add_argument("--manifest", help="scene manifest URI")
    parser.add_argument("--output", help="run folder for metrics.json, metrics.md and figures")
    parser.add_argument("--fused", help="the fused output (the fusion job's folder)")
    parser.add_argument("--checkpoint", help="3D checkpoint folder (distill and ensemble modes; classify: an SSOV "
                        "network from train-free or pretrain)")
    parser.add_argument("--lifted", help="SSOV's lifted output (openscene-ray lift): the pseudo mode")
    parser.add_argument("--mode", dest="modes", action="append",
                        choices=("2d", "fusion", "distill", "ensemble", "pseudo", "classify"),
                        help="mode to evaluate (repeatable; default: every mode the inputs allow, 2d and classify "
                        "excepted; 2d reruns the fusion's 2D model on every view)")
    parser.add_argument("--afi", action="store_true", help="also score pseudo/classify after SSOV's AFI post-process "
                        "(default parameters; tune with --set afi.k=...)")
    parser.add_argument("--split", help=f"manifest split to evaluate (default val; '{ALL_SPLITS}' for every scene)")
    parser.add_argument("--scene", dest="scenes", action="append", help="evaluate this scene (repeatable)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")
    add_renamed_flags(parser, {"--fusion-output": "--fused"})


def run(args: argparse.Namespace) -> int:
    from openscene_ray.evaluation.config import EvaluateConfig
    from openscene_ray.evaluation.job import run_evaluate

    flags = {key: getattr(args, key) for key in ("manifest", "output", "fused", "checkpoint", "lifted", "address",
                                                 "modes", "scenes")}  # fmt: skip
    if args.afi and not any(o.startswith("afi") for o in args.overrides):
        args.overrides.append("afi={}")
    if args.split == ALL_SPLITS:
        args.overrides.append("split=null")
    else:
        flags["split"] = args.split
    summary = run_evaluate(config_from_args(EvaluateConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.ok else 1
