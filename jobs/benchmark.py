"""Performance benchmarks: ``python jobs/benchmark.py fusion|distill|pipeline|all [--options]``.

A thin entry point (also for ``ray job submit``); the harness and the cases live in
``benchmarks/`` at the repository root.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
