"""``openscene-ray segment``: SSOV superpixels of every view (a 2D extractor as the open-vocabulary
segmenter, or the original CAT-Seg / FC-CLIP / SAN outputs imported) as a Ray Data job."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openscene_ray.kernel.config import add_config_arguments

    add_config_arguments(parser, "extractor.options.noise=0.5")
    parser.add_argument("--manifest", help="scene manifest URI (overrides the config)")
    parser.add_argument("--segments", help="the segments store to write (overrides the config)")
    parser.add_argument("--dictionary", help="built-in dictionary (nuscenes16) or a dictionary YAML")
    parser.add_argument("--import-from", dest="import_from", metavar="FOLDER",
                        help="import the original scripts' outputs from FOLDER (sets source=import, imported.root)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="re-segment complete scenes")


def run(args: argparse.Namespace) -> int:
    from openscene_ray.kernel.config import config_from_args
    from openscene_ray.ssov.segment.config import SegmentConfig
    from openscene_ray.ssov.segment.job import run_segment

    flags = {key: getattr(args, key) for key in ("manifest", "segments", "dictionary", "address", "overwrite")}
    if args.import_from is not None:
        flags.update({"source": "import", "imported.root": args.import_from})
    summary = run_segment(config_from_args(SegmentConfig, args, flags))
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.ok else 1
