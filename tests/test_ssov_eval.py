"""Evaluation's SSOV modes without Ray: ``pseudo`` (the lifted pseudo-labels), ``classify`` (a trained
SSOV network: a classifier, or a TMP export zero-shot through the vocabulary) and their ``+afi``
variants, scored by the evaluation actor exactly as computed directly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from openscene_ray.evaluation.config import EvaluateConfig
from openscene_ray.evaluation.job import EvalActor
from openscene_ray.evaluation.labels import Classifier, afi_labels, pseudo_labels
from openscene_ray.evaluation.metrics import EvalCounts
from openscene_ray.kernel.config import ConfigError, load_config
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.manifest import load_points, load_scene
from openscene_ray.models import (
    CheckpointMetadata,
    Res16UNetConfig,
    build_model,
    save_checkpoint,
)
from openscene_ray.ssov.afi import AFIConfig
from openscene_ray.ssov.dictionary import load_dictionary
from openscene_ray.ssov.lift.config import LiftSettings
from openscene_ray.ssov.lift.scene import lift_scene
from openscene_ray.ssov.network import GridConfig
from openscene_ray.ssov.segment.core import segment_scene
from openscene_ray.ssov.store import write_vocabulary

DICTIONARY = "configs/ssov/dictionaries/scannet20.yaml"
TEXT = {"label_set": "scannet20", "encoder": "synthetic", "options": {"dim": 32, "seed": 0}}
TINY = {"init_dim": 8, "planes": (8, 8, 8, 8, 8, 8, 8, 8), "layers": (1, 1, 1, 1, 1, 1, 1, 1)}
GRID = GridConfig(voxel_size=0.05, coordinates="cartesian")


@pytest.fixture(scope="module")
def lifted(synthetic_world, tmp_path_factory):
    """Superpixels of a noisy label oracle lifted onto every scene (segments, lifted)."""
    from openscene_ray.extractors import build_extractor
    from openscene_ray.kernel.text import build_text_encoder

    root = tmp_path_factory.mktemp("ssov-eval")
    dictionary = load_dictionary(DICTIONARY)
    text = build_text_encoder("synthetic", dim=32, seed=0).encode(dictionary.prompts())
    segments, out = str(root / "segments"), str(root / "lifted")
    write_vocabulary(segments, list(dictionary.phrases), text, {"dictionary_spec": DICTIONARY, "text_model": "x"})
    oracle = build_extractor("label-oracle", text=TEXT, noise=0.4, blur=1)
    for record in synthetic_world.records:
        segment_scene(record.scene_id, load_scene(record).views, oracle, torch.from_numpy(text), segments, {})
        lift_scene(record, segments, out, dictionary, LiftSettings(min_depth=0.0), {})
    return segments, out


def _checkpoint(path, head: str, segments: str | None = None, out: int | None = None) -> str:
    torch.manual_seed(0)
    out = out or (20 if head == "classes" else 32)
    config = Res16UNetConfig(out_channels=out, normalize=head == "features", **TINY)
    extra = {"grid": GRID.model_dump(), "head": head}
    if segments:
        extra.update(segments=segments, dictionary_spec=DICTIONARY)
    meta = CheckpointMetadata(voxel_size=0.05, text_model="", feature_dim=out, label_set="scannet20", extra=extra)
    return save_checkpoint(str(path), build_model(config), config, meta)


def _rows(config: EvaluateConfig, records) -> dict[str, EvalCounts]:
    actor = EvalActor(config, use_gpu=False)
    batch = {"scene_id": np.array([r.scene_id for r in records]), "points_uri": np.array([r.points_uri for r in records]),
             "num_points": np.array([r.num_points for r in records])}  # fmt: skip
    table: pa.Table = actor(batch)
    totals: dict[str, EvalCounts] = {}
    for row in table.to_pylist():
        assert not row["error"], row["error"]
        counts = EvalCounts(np.asarray(row["confusion"]).reshape(20, 20), np.asarray(row["unknown"]))
        totals[row["mode"]] = totals[row["mode"]] + counts if row["mode"] in totals else counts
    return totals


def test_pseudo_classify_and_afi_rows_equal_the_direct_computation(synthetic_world, lifted, tmp_path):
    _segments, out = lifted
    checkpoint = _checkpoint(tmp_path / "net", "classes")
    config = EvaluateConfig(manifest=synthetic_world.manifest, output=str(tmp_path / "eval"), lifted=out,
                            checkpoint=checkpoint, modes=["pseudo", "classify"], afi={}, text=TEXT)  # fmt: skip
    assert config.reported_modes() == ["pseudo", "classify", "pseudo+afi", "classify+afi"]
    val = [r for r in synthetic_world.records if r.split == "val"]
    totals = _rows(config, val)
    classifier = Classifier(checkpoint, "scannet20", torch.device("cpu"))
    expected = {m: EvalCounts.zeros(20) for m in config.reported_modes()}
    for record in val:
        xyz, rgb, labels = load_points(record.points_uri)
        pseudo = pseudo_labels(out, record.scene_id, len(xyz), "scannet20")
        net = classifier.predict(xyz, rgb)
        for mode, pred in (("pseudo", pseudo), ("classify", net), ("pseudo+afi", afi_labels(xyz, pseudo, "scannet20", AFIConfig())),
                           ("classify+afi", afi_labels(xyz, net, "scannet20", AFIConfig()))):  # fmt: skip
            expected[mode] = expected[mode] + EvalCounts.from_predictions(pred, labels, 20)
    for mode in config.reported_modes():
        np.testing.assert_array_equal(totals[mode].confusion, expected[mode].confusion)
        np.testing.assert_array_equal(totals[mode].unknown, expected[mode].unknown)
    pseudo_total = expected["pseudo"]
    assert pseudo_total.unknown.sum() > 0  # points no view saw are unknown in pseudo mode
    assert expected["pseudo+afi"].unknown.sum() < pseudo_total.unknown.sum()  # AFI fills them from neighbours


def test_a_tmp_export_is_scored_zero_shot_through_the_dictionary(synthetic_world, lifted, tmp_path):
    segments, _out = lifted
    checkpoint = _checkpoint(tmp_path / "tmp", "features", segments)
    config = EvaluateConfig(manifest=synthetic_world.manifest, output=str(tmp_path / "eval"), checkpoint=checkpoint,
                            modes=["classify"], text=TEXT)  # fmt: skip
    totals = _rows(config, synthetic_world.records[:1])
    xyz = load_points(synthetic_world.records[0].points_uri)[0]
    assert totals["classify"].confusion.sum() + totals["classify"].unknown.sum() <= len(xyz)
    with pytest.raises(Exception, match="not an SSOV network"):
        EvalActor(config.model_copy(update={"checkpoint": _bare(tmp_path)}), use_gpu=False)
    narrow = _checkpoint(tmp_path / "narrow", "features", segments, out=16)  # the vocabulary's text is 32-d
    with pytest.raises(InputError, match=r"narrow: 16-d features but the vocabulary in .*segments has 32-d"):
        Classifier(narrow, "scannet20", torch.device("cpu"))


def _bare(tmp_path) -> str:
    config = Res16UNetConfig(out_channels=20, **TINY)
    meta = CheckpointMetadata(voxel_size=0.05, text_model="", feature_dim=20, label_set="scannet20")
    return save_checkpoint(str(tmp_path / "bare"), build_model(config), config, meta)


def test_config_modes_need_their_inputs(tmp_path):
    base = {"manifest": "m.parquet", "output": str(tmp_path)}
    with pytest.raises(ConfigError, match="needs the lifted"):
        load_config(EvaluateConfig, base={**base, "modes": ["pseudo"], "checkpoint": "c"})
    with pytest.raises(ConfigError, match="need a 3D checkpoint"):
        load_config(EvaluateConfig, base={**base, "modes": ["classify"], "lifted": "l"})
    only_lifted = load_config(EvaluateConfig, base={**base, "lifted": "l"})
    assert only_lifted.resolved_modes() == ["pseudo"] and only_lifted.reported_modes() == ["pseudo"]
    with_afi = load_config(EvaluateConfig, base={**base, "lifted": "l"}, overrides=["afi.k=10"])
    assert with_afi.reported_modes() == ["pseudo", "pseudo+afi"] and with_afi.afi.k == 10
    both = load_config(EvaluateConfig, base={**base, "fused": "f", "checkpoint": "c"})
    assert both.resolved_modes() == ["fusion", "distill", "ensemble"]  # unchanged for the existing modes
