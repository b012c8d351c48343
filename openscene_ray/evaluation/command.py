"""``openscene-ray evaluate``: zero-shot evaluation (fusion / distill / ensemble) as a Ray Data job."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file (any storage URI); repeat to layer")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set openscene_compat=true (repeatable)")
    parser.add_argument("--manifest", help="scene manifest URI")
    parser.add_argument("--output", help="run folder for metrics.json, metrics.md and figures")
    parser.add_argument("--fusion-output", help="fusion job output root (its features/ shards)")
    parser.add_argument("--checkpoint", help="3D checkpoint folder (distill and ensemble modes)")
    parser.add_argument("--mode", dest="modes", action="append", choices=("fusion", "distill", "ensemble"),
                        help="mode to evaluate (repeatable; default: every mode the inputs allow)")
    parser.add_argument("--split", help="manifest split to evaluate (default val; 'all' for every scene)")
    parser.add_argument("--scene", dest="scenes", action="append", help="evaluate this scene (repeatable)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.config import load_config
    from openscene_ray.evaluation.job import EvaluateConfig, run_evaluate

    overrides = list(args.overrides)
    for key in ("manifest", "output", "fusion_output", "checkpoint", "address"):
        if getattr(args, key):
            overrides.append(f"{key}={json.dumps(getattr(args, key))}")
    if args.split:
        overrides.append("split=null" if args.split == "all" else f"split={json.dumps(args.split)}")
    if args.modes:
        overrides.append(f"modes={json.dumps(args.modes)}")
    if args.scenes:
        overrides.append(f"scenes={json.dumps(args.scenes)}")
    config = load_config(EvaluateConfig, args.config, overrides)
    summary = run_evaluate(config)
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.ok else 1
