"""The README's "Stages, locally" command blocks run as written, in a fresh folder.

A new user copies them word for word; they once failed (every synthetic scene was "val", and a
relative path reached Ray Train workers that run in another directory). ``uv run`` is replaced by
this interpreter (the environment it would select), nothing else changes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def stage_commands() -> list[str]:
    """The shell commands of the README's "Stages, locally" section, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Stages, locally", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    return commands


def test_the_section_has_every_stage():
    stages = [c.split()[3] for c in stage_commands()]
    assert stages == ["synth", "ingest", "fuse", "distill", "evaluate", "query", "query"]


@pytest.mark.slow
def test_readme_stage_commands_run_as_written(tmp_path):
    os.symlink(REPO / "configs", tmp_path / "configs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_DATA_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(REPO))
    for command in stage_commands():
        assert command.startswith("uv run openscene-ray "), command
        argv = command.replace("uv run openscene-ray", f"{sys.executable} -m openscene_ray.cli", 1)
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - start
        assert done.returncode == 0, f"{command}\n{seconds:.0f}s\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        print(f"{seconds:6.1f} s  {command[:90]}")  # shown with -s: where the test's time goes
    assert (tmp_path / "runs" / "train" / "synth" / "model" / "checkpoint.json").is_file()
    assert (tmp_path / "runs" / "eval" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "query-scene" / "query.json").is_file()
