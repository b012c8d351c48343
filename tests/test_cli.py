import subprocess
import sys


def test_help_lists_the_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "openscene_ray.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    from openscene_ray.cli import _available_commands

    names = [name for name, _, _ in _available_commands()]
    assert names, "no subcommands registered"
    for name in names:
        assert name in out
