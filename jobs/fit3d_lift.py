"""`ray job submit` entry point for FiT3D's Stage I: same flags as `openscene-ray fit3d-lift`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["fit3d-lift", *sys.argv[1:]]))
