"""`ray job submit` entry point for SSOV's lift stage: same flags as `openscene-ray lift`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["lift", *sys.argv[1:]]))
