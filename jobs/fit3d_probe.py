"""`ray job submit` entry point for FiT3D's evaluation: same flags as `openscene-ray fit3d-probe`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["fit3d-probe", *sys.argv[1:]]))
