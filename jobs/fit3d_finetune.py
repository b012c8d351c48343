"""`ray job submit` entry point for FiT3D's Stage II: same flags as `openscene-ray fit3d-finetune`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["fit3d-finetune", *sys.argv[1:]]))
