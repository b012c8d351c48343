"""The ``openscene-ray`` console script.

Each subcommand is a stage of :data:`~openscene_ray.kernel.stages.STAGES`, whose command module
defines ``add_arguments(parser)`` and ``run(args) -> int``. Modules keep heavy imports
(TensorFlow, torch, Ray) inside ``run`` so that ``openscene-ray --help`` stays fast.

The error boundary: an expected error (:class:`~openscene_ray.kernel.errors.OpenSceneError`: bad
input naming its file or field, an unavailable resource) prints one message and exits 2; the
traceback appears only with ``-v``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from openscene_ray.kernel.errors import OpenSceneError
from openscene_ray.kernel.stages import STAGES

__all__ = ["build_parser", "expected_error", "main"]

QUIET_LOGGERS = ("botocore", "aiobotocore", "s3transfer", "boto3", "urllib3")

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
    for name in QUIET_LOGGERS:  # their debug output prints request headers (the AWS access key id)
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        return int(args._run(args) or 0)
    except Exception as exc:
        expected = expected_error(exc)
        if expected is None:
            raise
        if args.verbose:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"openscene-ray {args.command}: error: {expected}", file=sys.stderr)
        if not args.verbose:
            print("(run with -v for the traceback)", file=sys.stderr)
        return 2


def expected_error(exc: BaseException) -> OpenSceneError | None:
    """The expected error behind ``exc`` (itself, or the cause Ray wraps around a remote one)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OpenSceneError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


if __name__ == "__main__":
    sys.exit(main())
