"""`ray job submit` entry point for the evaluation job: same flags as `openscene-ray evaluate`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
