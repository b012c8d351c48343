import pytest
from pydantic import Field

from openscene_ray.config import ConfigError, StrictModel, apply_overrides, load_config


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
