import argparse

import pytest
from pydantic import Field

from openscene_ray.kernel.config import (
    ConfigError,
    StrictModel,
    add_config_arguments,
    apply_overrides,
    config_from_args,
    load_config,
)


class Inner(StrictModel):
    cut_bound: int = Field(10, ge=0)
    threshold: float = 0.25


class Outer(StrictModel):
    name: str = "x"
    fusion: Inner = Inner()
    tags: list[str] = []


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: scannet\nfusion:\n  cut_bound: 5\n")
    cfg = load_config(Outer, str(path), ["fusion.threshold=0.5", "tags=[a, b]"])
    assert cfg.name == "scannet" and cfg.fusion.cut_bound == 5 and cfg.fusion.threshold == 0.5
    assert cfg.tags == ["a", "b"]


def test_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"field fusion\.cut_bound: Input should be greater than or equal to 0"):
        load_config(Outer, overrides=["fusion.cut_bound=-1"])
    with pytest.raises(ConfigError, match=r"field fusion\.typo: Extra inputs are not permitted"):
        load_config(Outer, overrides=["fusion.typo=1"])
    path = tmp_path / "bad.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: the top level must be a mapping"):
        load_config(Outer, str(path))


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_command_line_layers_files_then_set_then_flags(tmp_path):
    base, profile = tmp_path / "base.yaml", tmp_path / "profile.yaml"
    base.write_text("name: base\nfusion:\n  cut_bound: 5\n  threshold: 0.1\n")
    profile.write_text("fusion:\n  threshold: 0.3\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, "fusion.cut_bound=5")
    parser.add_argument("--name")
    parser.add_argument("--tag", dest="tags", action="append")

    args = parser.parse_args(["--config", str(base), "--config", str(profile), "--set", "name=from-set",
                              "--set", "fusion.cut_bound=7"])
    cfg = config_from_args(Outer, args, {"name": args.name, "tags": args.tags})
    assert (cfg.name, cfg.fusion.cut_bound, cfg.fusion.threshold, cfg.tags) == ("from-set", 7, 0.3, [])

    # A dedicated flag beats --set; URIs with colons and spaces stay strings; lists stay lists.
    args = parser.parse_args(["--config", str(base), "--set", "name=from-set", "--name", "s3://b/x: y",
                              "--tag", "a", "--tag", "1"])
    cfg = config_from_args(Outer, args, {"name": args.name, "tags": args.tags})
    assert (cfg.name, cfg.tags) == ("s3://b/x: y", ["a", "1"])

    with pytest.raises(ConfigError, match=r"field fusion\.cut_bound"):
        config_from_args(Outer, parser.parse_args(["--set", "fusion.cut_bound=-2"]))
