"""`ray job submit` entry point for 2D training: same flags as `openscene-ray train-2d`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-2d", *sys.argv[1:]]))
