"""``openscene-ray ingest``: read a dataset layout into a scene manifest + points Parquet.

Exit status: 0 when at least one scene was ingested (failed scenes are data, listed in
``ingest_errors.parquet``); 1 when none was, or with ``--strict`` when any failed; 2 on a bad
config or an unreadable root.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]

_MAX_ERRORS_SHOWN = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openscene_ray.datasets.layouts import layout_names
    from openscene_ray.kernel.config import add_config_arguments

    parser.add_argument("--layout", required=True, choices=layout_names(), help="dataset layout")
    parser.add_argument("--root", required=True, help="dataset root (path, file://, s3://, memory://)")
    parser.add_argument("--out", required=True, help="output folder for manifest.parquet and points/")
    parser.add_argument("--split", default=None, help="only this split (layouts with split folders); else a label")
    add_config_arguments(parser, "frame_skip=10")
    parser.add_argument("--workers", type=int, default=8, help="scenes read concurrently (I/O threads)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any scene failed")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout

    layout = build_layout(args.layout, args.overrides, args.config)
    result = ingest(layout, args.root, args.out, args.split, args.workers)
    for error in result.errors[:_MAX_ERRORS_SHOWN]:
        print(f"ingest: failed: {error.error}", file=sys.stderr)
    if len(result.errors) > _MAX_ERRORS_SHOWN:
        print(f"ingest: ... {len(result.errors) - _MAX_ERRORS_SHOWN} more in {result.errors_uri}", file=sys.stderr)
    views = sum(len(r.views) for r in result.records)
    print(
        f"ingest: layout {layout.name}: {len(result.records)} scene(s) ingested ({views} views, "
        f"{result.skipped_views} skipped), {len(result.errors)} failed -> {result.manifest_uri}"
    )
    if not result.records:
        print(f"ingest: no scene ingested from {args.root}", file=sys.stderr)
        return 1
    return 1 if args.strict and result.errors else 0
