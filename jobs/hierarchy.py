"""`ray job submit` entry point for the hierarchy job: same flags as `openscene-ray hierarchy`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["hierarchy", *sys.argv[1:]]))
