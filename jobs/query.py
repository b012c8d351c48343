"""`ray job submit` entry point for queries: same flags as `openscene-ray query`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["query", *sys.argv[1:]]))
