"""`ray job submit` entry point for the fusion job: same flags as `openscene-ray fuse`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["fuse", *sys.argv[1:]]))
