"""The ``openscene-ray`` console script.

Each subcommand is a stage of :data:`~openscene_ray.kernel.stages.STAGES`, whose command module
defines ``add_arguments(parser)`` and ``run(args) -> int``. Modules keep heavy imports
(TensorFlow, torch, Ray) inside ``run`` so that ``openscene-ray --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from openscene_ray.kernel.stages import STAGES

__all__ = ["build_parser", "main"]

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openscene-ray",
        description="OpenScene open-vocabulary 3D scene understanding on Ray.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for stage in STAGES.values():
        module = importlib.import_module(stage.command)
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
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
