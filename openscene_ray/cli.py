"""The ``openscene-ray`` console script.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int``. Modules keep heavy imports (TensorFlow, torch, Ray) inside ``run`` so that
``openscene-ray --help`` stays fast. New stages plug in by adding a row to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

__all__ = ["COMMANDS", "build_parser", "main"]

# (name, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("synth", "openscene_ray.synth.command", "write a synthetic posed RGB-D world with ground truth"),
    ("ingest", "openscene_ray.datasets.command", "read a dataset layout into a scene manifest + points Parquet"),
    ("fuse", "openscene_ray.fusion.command", "multi-view 2D->3D feature fusion as a Ray Data job"),
    ("distill", "openscene_ray.distill.command", "distill a MinkUNet18A from fused features with Ray Train"),
    ("evaluate", "openscene_ray.evaluation.command", "zero-shot evaluation: fusion / distill / ensemble"),
    ("query", "openscene_ray.query.command", "open-vocabulary queries over scenes and feature databases"),
    ("demo", "openscene_ray.demo", "run every stage end to end on a small synthetic world"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openscene-ray",
        description="OpenScene open-vocabulary 3D scene understanding on Ray.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Under `uv run`, Ray would start every worker through `uv run` again (and upload the working
    # directory). The environment is already the locked venv, so workers use its python directly.
    # Read when Ray is imported, hence set before any stage imports it.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
