"""`ray job submit` entry point for SSOV's segment stage: same flags as `openscene-ray segment`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
