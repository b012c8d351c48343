"""Open-vocabulary queries: scene heatmaps, database search (in-process and Ray Data), image queries."""

import io
import json

import numpy as np
import pytest
from conftest import ORACLE, TEXT
from PIL import Image

from openscene_ray.fusion.config import ExtractorConfig, FusionSettings
from openscene_ray.fusion.scene import fuse_scene
from openscene_ray.kernel import storage
from openscene_ray.kernel.config import ConfigError, load_config
from openscene_ray.kernel.features import write_features
from openscene_ray.kernel.labels import PROMPT_TEMPLATE, get_label_set
from openscene_ray.kernel.manifest import load_points, load_scene
from openscene_ray.kernel.ply import read_ply
from openscene_ray.kernel.text import TextSpaceConfig
from openscene_ray.kernel.visual import UNKNOWN_COLOR, heatmap_colors, render_points
from openscene_ray.query.config import QueryConfig, SearchSettings
from openscene_ray.query.database import search_database, voxel_components
from openscene_ray.query.embed import embed_images, embed_texts
from openscene_ray.query.job import run_query, scan_with_ray
from openscene_ray.query.scene import load_scene_features

NAMES = get_label_set("scannet20").class_names


@pytest.fixture(scope="module")
def fused(synthetic_world, tmp_path_factory) -> str:
    """Label-oracle shards of every scene, written by the fusion job's own per-scene function."""
    from openscene_ray.extractors import build_extractor

    output = str(tmp_path_factory.mktemp("fused"))
    extractor = build_extractor("label-oracle", **ORACLE)
    for record in synthetic_world.records:
        scene = load_scene(record)
        fuse_scene(record, scene.xyz, scene.views, extractor, ExtractorConfig(options=ORACLE), FusionSettings(),
                   output, "test")  # fmt: skip
    return output


def _only_in_one_scene(world) -> dict[str, str]:
    """Class name -> the one scene that has it, for classes present in exactly one scene."""
    where: dict[int, list[str]] = {}
    for record in world.records:
        for k in np.unique(load_points(record.points_uri)[2]):
            if k < len(NAMES):
                where.setdefault(int(k), []).append(record.scene_id)
    return {NAMES[k]: scenes[0] for k, scenes in where.items() if len(scenes) == 1}


def test_voxel_components_joins_touching_cells_only():
    cells = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0], [5, 5, 5], [2, 2, 2], [8, 5, 5], [6, 6, 6], [3, 0, 0]])
    assert voxel_components(cells).tolist() == [0, 0, 0, 1, 0, 2, 1, 3]
    assert voxel_components(np.array([[4, 4, 4]])).tolist() == [0]


def test_database_search_finds_the_rare_class(ray_session, synthetic_world, fused, tmp_path):
    rare = _only_in_one_scene(synthetic_world)
    assert {"chair", "sofa"} <= set(rare) and rare["chair"] != rare["sofa"]
    queries = embed_texts(["chair", "sofa"], "synthetic", TEXT["options"], template=PROMPT_TEMPLATE)
    settings = SearchSettings(top_points=25, top_regions=3)
    found = search_database(fused, queries, ["chair", "sofa"], settings, manifest=synthetic_world.manifest)
    assert found["scanned"] == 4 and not found["failed"] and not found["warnings"]
    labels = {r.scene_id: load_points(r.points_uri) for r in synthetic_world.records}
    for name, result in zip(["chair", "sofa"], found["results"]):
        scenes = result["scenes"]
        assert scenes[0]["scene_id"] == rare[name] and len(scenes) == 4
        assert scenes[0]["score"] > 0.99 and all(s["score"] < 0.9 for s in scenes[1:])  # oracle: cosine 1
        k = NAMES.index(name)
        assert len(result["points"]) == 25
        for point in result["points"]:
            xyz, _, lab = labels[point["scene_id"]]
            assert point["scene_id"] == rare[name] and lab[point["point_index"]] == k
            np.testing.assert_allclose(point["xyz"], xyz[point["point_index"]], atol=1e-4)
        region = result["regions"][0]
        xyz, _, lab = labels[rare[name]]
        own = xyz[lab == k]
        assert region["scene_id"] == rare[name] and lab[region["best_point"]] == k and region["score"] > 0.99
        assert np.all(np.asarray(region["bbox_min"]) >= own.min(axis=0) - 1e-3)
        assert np.all(np.asarray(region["bbox_max"]) <= own.max(axis=0) + 1e-3)
    # Ray Data (one task per shard) gives the same answer as the in-process scan
    scan = scan_with_ray(QueryConfig(texts=["x"], output=str(tmp_path), fused=fused))
    with_ray = search_database(fused, queries, ["chair", "sofa"], settings, manifest=synthetic_world.manifest, scan=scan)
    assert with_ray["results"] == found["results"]
    # and so does the CLI on the fusion output root, scanning in small batches (scores are per-row exact)
    from openscene_ray.cli import main

    argv = ["query", "--fused", fused, "--text", "chair", "--text", "sofa", "--template", PROMPT_TEMPLATE,
            "--manifest", synthetic_world.manifest, "--output", str(tmp_path), "--set", "text.encoder=synthetic",
            "--set", "text.options={dim: 32, seed: 0}", "--set", "search.batch_rows=1000",
            "--set", "search.top_points=25", "--set", "search.top_regions=3"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((tmp_path / "query.json").read_text())["results"] == found["results"]


def test_scene_heatmaps_colour_the_queried_class(synthetic_world, fused, tmp_path):
    rare = _only_in_one_scene(synthetic_world)
    config = load_config(QueryConfig, base={
        "texts": ["chair", "wall"], "template": PROMPT_TEMPLATE, "text": TEXT, "output": str(tmp_path),
        "scene": rare["chair"], "manifest": synthetic_world.manifest, "fused": fused, "image_size": 300,
    })  # fmt: skip
    result = run_query(config)
    record = next(r for r in synthetic_world.records if r.scene_id == rare["chair"])
    scene = load_scene_features(record, "fusion", fused=fused)
    xyz, labels = scene.xyz, scene.labels
    assert not result["warnings"]
    for q, (name, heat) in enumerate(zip(["chair", "wall"], result["heatmaps"])):
        ply_xyz, colors = read_ply(storage.read_bytes(heat["ply"]))
        np.testing.assert_array_equal(ply_xyz, xyz)
        assert (colors[~scene.mask] == UNKNOWN_COLOR).all() and (~scene.mask).sum() > 0
        scores = scene.scores(embed_texts([name], "synthetic", TEXT["options"], template=PROMPT_TEMPLATE))[0]
        np.testing.assert_array_equal(colors, heatmap_colors(scores))
        own = scene.mask & (labels == NAMES.index(name))
        assert scores[own].mean() > 0.95 and (scores[scene.mask & ~own] > 0.9).mean() < 0.01
        yellow = (colors[:, 0] > 200) & (colors[:, 1] > 200) & (colors[:, 2] < 100)
        assert yellow[own].mean() > 0.9 and yellow[scene.mask & ~own].mean() < 0.05
        image = np.asarray(Image.open(io.BytesIO(storage.read_bytes(heat["png"]))).convert("RGB"))
        assert image.shape == (300, 300, 3)
        np.testing.assert_array_equal(image, render_points(xyz, colors, 300, 300, "top"))
        assert heat["max"] == pytest.approx(np.nanmax(scores)) and heat["points_with_feature"] == scene.mask.sum()
    with pytest.raises(ConfigError, match="give scene .* or fused"):
        load_config(QueryConfig, base={"texts": ["x"], "output": str(tmp_path), "text": TEXT})


def test_distill_and_ensemble_sources(synthetic_world, fused, tmp_path):
    import torch

    from openscene_ray.kernel.text import build_text_space
    from openscene_ray.models.checkpoint import save_checkpoint
    from openscene_ray.models.inference import distill_features
    from openscene_ray.models.minkunet import MinkUNet, MinkUNetConfig

    torch.manual_seed(0)
    config = MinkUNetConfig(out_channels=32, init_dim=8, planes=(8,) * 8, layers=(1,) * 8)
    model = MinkUNet(config).eval()
    checkpoint = save_checkpoint(str(tmp_path / "ckpt"), model, config,
                                 {"voxel_size": 0.1, "text_model": "synthetic:dim=32,seed=0", "feature_dim": 32})
    record = synthetic_world.records[0]
    text = TextSpaceConfig(**TEXT)
    fusion = load_scene_features(record, "fusion", fused=fused)
    distill = load_scene_features(record, "distill", checkpoint=checkpoint)
    ens = load_scene_features(record, "ensemble", fused=fused, checkpoint=checkpoint, text=text)
    f3d = distill_features(model, fusion.xyz, 0.1, fusion.rgb).numpy()
    np.testing.assert_allclose(distill.features, f3d, atol=1e-5)
    assert distill.mask.all() and ens.mask.all() and distill.text_model == "synthetic:dim=32,seed=0"
    # the oracle's 2D feature is a class prompt itself (cosine 1): the ensemble takes it wherever it exists
    prompts = build_text_space(text).embeddings
    s3d = (f3d / np.linalg.norm(f3d, axis=1, keepdims=True) @ prompts.T).max(axis=1)
    assert s3d.max() < 0.95
    np.testing.assert_allclose(ens.features[fusion.mask], fusion.features[fusion.mask].astype(np.float32))
    np.testing.assert_allclose(ens.features[~fusion.mask], f3d[~fusion.mask], atol=1e-5)
    other = save_checkpoint(str(tmp_path / "other"), model, config,
                            {"voxel_size": 0.1, "text_model": "open_clip:ViT-B-32", "feature_dim": 32})
    with pytest.raises(ValueError, match="different text models"):
        load_scene_features(record, "ensemble", fused=fused, checkpoint=other, text=text)


def test_image_query_retrieves_the_scene_of_the_image(synthetic_world, tmp_path):
    """Random-init ViT-B-32 (explicitly asked for): shards hold image embeddings of distinct views."""
    from openscene_ray.cli import main

    options = {"arch": "ViT-B-32", "random_init": True}
    images = [synthetic_world.records[i].views[0].color_uri for i in range(3)]
    embeddings = embed_images(images, options)
    assert embeddings.shape == (3, 512)
    rng = np.random.default_rng(0)
    database = tmp_path / "db"
    planted = {}
    for i, embedding in enumerate(embeddings):
        features = rng.standard_normal((400, 512)).astype(np.float16)
        planted[i] = np.sort(rng.choice(400, 40, replace=False))
        features[planted[i]] = embedding.astype(np.float16)
        meta = {"text_model": "open_clip:ViT-B-32", "feature_dim": 512, "n_points": 400}
        write_features(str(database / f"room{i}.parquet"), f"room{i}", np.arange(400), features,
                       np.ones(400, np.uint16), meta)  # fmt: skip
    argv = ["query", "--fused", str(database), "--image", images[1], "--output", str(tmp_path / "out"),
            "--set", "text.encoder=open_clip", "--set", "text.options={arch: ViT-B-32, random_init: true}",
            "--top-k", "40"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((tmp_path / "out" / "query.json").read_text())
    assert result["queries"] == [f"image:{images[1].rsplit('/', 1)[-1]}"] and not result["warnings"]
    scenes = result["results"][0]["scenes"]
    assert [s["scene_id"] for s in scenes][0] == "room1" and scenes[0]["score"] > 0.999
    assert sorted(p["point_index"] for p in result["results"][0]["points"]) == planted[1].tolist()
    assert all(p["scene_id"] == "room1" for p in result["results"][0]["points"])
    with pytest.raises(ValueError, match="random_init=True"):
        embed_images(images[:1], {"arch": "ViT-B-32"})


def test_scene_features_name_every_missing_input_before_loading_anything(synthetic_world):
    import dataclasses

    record = dataclasses.replace(synthetic_world.records[0], points_uri="/nonexistent/points.parquet")
    with pytest.raises(ValueError, match="source 'ensemble' needs the fused output and a checkpoint and the text space"):
        load_scene_features(record, "ensemble")
    with pytest.raises(ValueError, match="source 'distill' needs a checkpoint$"):
        load_scene_features(record, "distill", fused="/f")
    with pytest.raises(ValueError, match="unknown feature source 'depth'"):
        load_scene_features(record, "depth")
