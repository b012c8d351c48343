"""The benchmark command line: ``fusion|distill|pipeline|all`` plus the shared and per-case options.

Each case module has ``add_arguments(parser)`` and ``run(args) -> dict``; every case runs under
:func:`benchmarks.harness.run_case` and prints one JSON line.
"""

from __future__ import annotations

import argparse
import os

from benchmarks import distill, fusion, pipeline
from benchmarks.harness import emit, run_case

__all__ = ["CASES", "main"]

CASES = {"fusion": fusion, "distill": distill, "pipeline": pipeline}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="openscene-ray performance benchmarks (one JSON line per case)")
    parser.add_argument("case", choices=[*CASES, "all"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    for case in CASES.values():
        case.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the chosen case (or all of them, in order) and print each one's figures."""
    args = build_parser().parse_args(argv)
    if not args.pipeline_uv_workers:
        # Before Ray is imported: under `uv run` Ray would start every worker through `uv run`,
        # which builds a fresh copy of the project's venv per session.
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for name in CASES if args.case == "all" else [args.case]:
        emit(run_case(name, CASES[name].run, args))
    return 0
