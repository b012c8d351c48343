"""`ray job submit` entry point for SSOV's train-free stage: same flags as `openscene-ray train-free`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-free", *sys.argv[1:]]))
