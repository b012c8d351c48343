import os
import subprocess
import sys

import pytest


def test_help_lists_the_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "openscene_ray.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    from openscene_ray.kernel.stages import STAGES

    for name in ("synth", "ingest", "fuse", "distill", "evaluate", "query", "demo"):
        assert name in out
    names = [s.name for s in STAGES.values()]
    assert [n for n in names if n in ("synth", "ingest", "fuse", "distill", "evaluate", "query")] == [
        "synth", "ingest", "fuse", "distill", "evaluate", "query"]  # the pipeline's order
    assert all(name in out for name in names)


def _config_passed_to(monkeypatch, module: str, function: str, argv: list[str]):
    """Run the CLI with the stage's entry function replaced by one that captures its config."""
    import importlib

    from openscene_ray.cli import main

    captured = []

    class Summary:
        ok = True

        def as_dict(self):
            return {}

    def capture(config):
        captured.append(config)
        return Summary() if function != "run_query" else {}

    monkeypatch.setattr(importlib.import_module(module), function, capture)
    assert main(argv) == 0
    return captured[0]


def test_stage_flags_override_files_and_set(monkeypatch, tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text("resources:\n  max_actors: 3\n")
    fuse = _config_passed_to(monkeypatch, "openscene_ray.fusion.job", "run_fuse", [
        "fuse", "--config", str(profile), "--set", "fused=ignored", "--manifest", "s3://b/m.parquet",
        "--fused", "/tmp/out dir", "--overwrite"])  # fmt: skip
    assert (fuse.manifest, fuse.fused, fuse.overwrite, fuse.resources.max_actors) == (
        "s3://b/m.parquet", "/tmp/out dir", True, 3)
    assert _config_passed_to(monkeypatch, "openscene_ray.fusion.job", "run_fuse",
                             ["fuse", "--manifest", "m", "--fused", "o"]).overwrite is False

    evaluate = _config_passed_to(monkeypatch, "openscene_ray.evaluation.job", "run_evaluate", [
        "evaluate", "--manifest", "m", "--output", "o", "--fused", "f", "--split", "all",
        "--mode", "fusion", "--mode", "ensemble", "--checkpoint", "c", "--scene", "scene0001_00"])  # fmt: skip
    assert (evaluate.split, evaluate.modes, evaluate.scenes, evaluate.fused) == (
        None, ["fusion", "ensemble"], ["scene0001_00"], os.path.abspath("f"))
    assert _config_passed_to(monkeypatch, "openscene_ray.evaluation.job", "run_evaluate", [
        "evaluate", "--manifest", "m", "--output", "o", "--fused", "f", "--split", "test"]).split == "test"

    distill = _config_passed_to(monkeypatch, "openscene_ray.distill.job", "run_distill", [
        "distill", "--manifest", "m", "--fused", "f", "--storage-path", "s3://b/runs", "--name", "r1",
        "--set", "workers=3"])  # fmt: skip
    assert (distill.fused, distill.storage_path, distill.name, distill.workers) == (
        os.path.abspath("f"), "s3://b/runs", "r1", 3)  # local paths made absolute on the driver

    query = _config_passed_to(monkeypatch, "openscene_ray.query.job", "run_query", [
        "query", "--text", "sofa", "--text", "lamp", "--fused", "d", "--output", "o", "--top-k", "7"])
    assert (query.texts, query.fused, query.search.top_scenes, query.search.top_points) == (
        ["sofa", "lamp"], os.path.abspath("d"), 7, 7)


@pytest.mark.parametrize("argv, new", [
    (["fuse", "--manifest", "m", "--output", "o"], "--fused"),
    (["distill", "--manifest", "m", "--features", "f"], "--fused"),
    (["evaluate", "--manifest", "m", "--fusion-output", "f"], "--fused"),
    (["query", "--text", "x", "--database", "d"], "--fused"),
    (["query", "--text", "x", "--fusion-output", "d"], "--fused"),
])  # fmt: skip
def test_renamed_flags_name_the_new_flag(argv, new, capsys):
    from openscene_ray.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"was renamed: use {new} instead" in capsys.readouterr().err


@pytest.mark.parametrize("module, model, old, new", [
    ("openscene_ray.fusion.config", "FuseConfig", "output", "fused"),
    ("openscene_ray.distill.config", "DistillConfig", "features", "fused"),
    ("openscene_ray.distill.config", "DistillConfig", "text_encoder", "text.encoder"),
    ("openscene_ray.evaluation.config", "EvaluateConfig", "fusion_output", "fused"),
    ("openscene_ray.query.config", "QueryConfig", "database", "fused"),
])  # fmt: skip
def test_renamed_config_keys_name_the_new_key(module, model, old, new):
    import importlib

    from openscene_ray.kernel.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=f"'{old}' was renamed: use '{new}' instead"):
        load_config(getattr(importlib.import_module(module), model), overrides=[f"{old}=x"])
