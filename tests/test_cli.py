import subprocess
import sys


def test_help_lists_the_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "openscene_ray.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    from openscene_ray.cli import COMMANDS

    for name in ("synth", "ingest", "fuse", "distill", "evaluate", "query", "demo"):
        assert name in out
    assert [c[0] for c in COMMANDS] == ["synth", "ingest", "fuse", "distill", "evaluate", "query", "demo"]
