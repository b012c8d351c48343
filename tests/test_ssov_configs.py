"""SSOV's shipped configs load with their stage's model (and the resource profiles), the four stages
are registered commands, and each has a thin ``ray job submit`` entry point."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from openscene_ray.kernel.config import load_config
from openscene_ray.kernel.stages import STAGES, stage_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "ssov"
STAGE_OF = {"segment": "segment", "import-san": "segment", "lift": "lift", "pretrain": "pretrain",
            "train-free": "train-free", "evaluate": "evaluate"}  # fmt: skip
PROFILE_OF = {"segment": "fuse", "lift": "fuse", "pretrain": "distill", "train-free": "distill", "evaluate": "evaluate"}


def _stage(path: Path) -> str:
    return STAGE_OF[path.stem.split("-", 1)[1]]


@pytest.mark.parametrize("profile", ["local", "cluster"])
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_ssov_config_loads_with_its_stage(path, profile):
    stage = _stage(path)
    model = STAGES.get(stage).load(STAGES.get(stage).config)
    config = load_config(model, [str(path), str(ROOT / "configs" / "profiles" / profile / f"{PROFILE_OF[stage]}.yaml")])
    dataset = path.stem.split("-")[0]
    if stage == "segment" and config.source == "extractor":
        assert config.text.options["arch"] == "ViT-L-14-336"
    if stage in ("pretrain", "train-free"):
        assert config.grid.coordinates == ("cylindrical" if dataset == "nuscenes" else "cartesian")
        assert (config.epochs, config.lr) == ((40, 0.5) if stage == "pretrain" else (5, 0.02))
    if stage == "lift" and dataset == "nuscenes":
        assert config.settings.camera_order[0] == "FRONT" and config.settings.min_depth == 1.0
    if stage == "evaluate":
        assert config.reported_modes() == ["pseudo", "classify", "pseudo+afi", "classify+afi"]


def test_the_four_stages_are_commands_with_thin_job_entry_points():
    for name in ("segment", "lift", "pretrain", "train-free"):
        stage = STAGES.get(name)
        parser = argparse.ArgumentParser()
        __import__(stage.command, fromlist=["add_arguments"]).add_arguments(parser)
        job = ROOT / "jobs" / f"ssov_{name.replace('-', '_')}.py"
        assert f'main(["{name}", *sys.argv[1:]])' in job.read_text()
    config = stage_config("lift", {"manifest": "m", "segments": "s", "lifted": "l"})
    assert config.settings.bounds == "reference" and config.settings.min_depth == 1.0
