"""``openscene-ray query``: open-vocabulary text/image queries on a scene (heatmaps) or on every
scene of a fused output (top scenes, regions and points)."""

from __future__ import annotations

import argparse
import json

from openscene_ray.kernel.config import (
    add_config_arguments,
    add_renamed_flags,
    config_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "search.top_points=50")
    parser.add_argument("--text", dest="texts", action="append", help="text query (repeatable)")
    parser.add_argument("--image", dest="images", action="append",
                        help="image query: a file or URI embedded by the CLIP image tower (repeatable)")
    parser.add_argument("--template", help="text template, e.g. 'a {} in a scene'")
    parser.add_argument("--output", help="folder for query.json and heatmaps")
    parser.add_argument("--scene", help="scene id: per-point heatmaps of this scene (default: search every scene)")
    parser.add_argument("--manifest", help="scene manifest URI (points; positions for search results)")
    parser.add_argument("--source", choices=("fusion", "distill", "ensemble"), help="scene feature source")
    parser.add_argument("--fused", help="the fused output (or a folder of feature shards) to query or search")
    parser.add_argument("--checkpoint", help="3D checkpoint folder (distill / ensemble sources)")
    parser.add_argument("--top-k", type=int, help="scenes, regions and points to report per query")
    parser.add_argument("--address", help="Ray address for large searches")
    add_renamed_flags(parser, {"--database": "--fused", "--fusion-output": "--fused"})


def run(args: argparse.Namespace) -> int:
    from openscene_ray.query.config import QueryConfig
    from openscene_ray.query.job import run_query

    flags = {key: getattr(args, key) for key in ("texts", "images", "template", "output", "scene", "manifest",
                                                 "source", "fused", "checkpoint", "address")}
    flags.update({f"search.top_{what}": args.top_k for what in ("scenes", "regions", "points")})
    result = run_query(config_from_args(QueryConfig, args, flags))
    print(json.dumps(result, indent=2))
    return 0 if not result.get("failed") else 1
