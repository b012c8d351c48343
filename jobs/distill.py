"""`ray job submit` entry point for distillation: same flags as `openscene-ray distill`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
