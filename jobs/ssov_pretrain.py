"""`ray job submit` entry point for SSOV's pretrain stage: same flags as `openscene-ray pretrain`."""

import sys

from openscene_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
