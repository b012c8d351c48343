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
        "fuse", "--config", str(profile), "--set", "output=ignored", "--manifest", "s3://b/m.parquet",
        "--output", "/tmp/out dir", "--overwrite"])  # fmt: skip
    assert (fuse.manifest, fuse.output, fuse.overwrite, fuse.resources.max_actors) == (
        "s3://b/m.parquet", "/tmp/out dir", True, 3)
    assert _config_passed_to(monkeypatch, "openscene_ray.fusion.job", "run_fuse",
                             ["fuse", "--manifest", "m", "--output", "o"]).overwrite is False

    evaluate = _config_passed_to(monkeypatch, "openscene_ray.evaluation.job", "run_evaluate", [
        "evaluate", "--manifest", "m", "--output", "o", "--fusion-output", "f", "--split", "all",
        "--mode", "fusion", "--mode", "ensemble", "--checkpoint", "c", "--scene", "scene0001_00"])  # fmt: skip
    assert (evaluate.split, evaluate.modes, evaluate.scenes, evaluate.fusion_output) == (
        None, ["fusion", "ensemble"], ["scene0001_00"], "f")
    assert _config_passed_to(monkeypatch, "openscene_ray.evaluation.job", "run_evaluate", [
        "evaluate", "--manifest", "m", "--output", "o", "--fusion-output", "f", "--split", "test"]).split == "test"

    distill = _config_passed_to(monkeypatch, "openscene_ray.distill.job", "run_distill", [
        "distill", "--manifest", "m", "--features", "f", "--storage-path", "s3://b/runs", "--name", "r1",
        "--set", "workers=3"])  # fmt: skip
    assert (distill.storage_path, distill.name, distill.workers) == ("s3://b/runs", "r1", 3)

    query = _config_passed_to(monkeypatch, "openscene_ray.query.api", "run_query", [
        "query", "--text", "sofa", "--text", "lamp", "--database", "d", "--output", "o", "--top-k", "7"])
    assert (query.texts, query.database, query.search.top_scenes, query.search.top_points) == (
        ["sofa", "lamp"], "d", 7, 7)
