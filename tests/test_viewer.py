"""The browser viewer's server side without a browser: display, scoring and colours with known
answers on the synthetic world (label-oracle features), label sets, caches, URL state, errors, the
token gate and the command. The browser itself: tests/test_viewer_browser.py."""

import http.cookiejar
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import ORACLE, TEXT

from openscene_ray.kernel.config import ConfigError, load_config
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.labels import PROMPT_TEMPLATE, get_label_set
from openscene_ray.kernel.manifest import load_scene
from openscene_ray.kernel.visual import UNKNOWN_COLOR, label_palette
from openscene_ray.viewer.backend import ViewerBackend
from openscene_ray.viewer.cache import LRU
from openscene_ray.viewer.classes import parse_class_set
from openscene_ray.viewer.config import ViewerConfig, is_loopback
from openscene_ray.viewer.display import (
    display_indices,
    initial_camera,
    pick_point,
    point_size,
)
from openscene_ray.viewer.scoring import (
    class_scores,
    heat_legend,
    heat_view,
    label_legend,
    label_view,
    top_classes,
    validate_query,
)
from openscene_ray.viewer.urlstate import parse_view_state, url_params

NAMES = get_label_set("scannet20").class_names


def hot(colors: np.ndarray) -> np.ndarray:
    """The palette's hot (yellow) end: viridis above ~0.87."""
    colors = np.asarray(colors, int)
    return (colors[..., 0] > 200) & (colors[..., 1] > 170) & (colors[..., 2] < 120)


def fuse_in_process(world, output: str, skip: tuple[str, ...] = ()) -> str:
    """Label-oracle shards of the world's scenes (but ``skip``), written by the fusion job's own
    per-scene function, without Ray."""
    from openscene_ray.extractors import build_extractor
    from openscene_ray.fusion.config import ExtractorConfig, FusionSettings
    from openscene_ray.fusion.scene import fuse_scene

    extractor = build_extractor("label-oracle", **ORACLE)
    for record in world.records:
        if record.scene_id not in skip:
            scene = load_scene(record)
            fuse_scene(record, scene.xyz, scene.views, extractor, ExtractorConfig(options=ORACLE), FusionSettings(),
                       output, "test")  # fmt: skip
    return output


def present_classes(scene) -> dict[str, int]:
    """Class name -> drawn points with a feature, for the scene's classes."""
    labels = scene.features.labels[scene.features.mask]
    return {NAMES[k]: int((labels == k).sum()) for k in np.unique(labels) if k < len(NAMES)}


@pytest.fixture(scope="module")
def fused(synthetic_world, tmp_path_factory) -> str:
    last = synthetic_world.records[-1].scene_id  # no shard: the "missing shard" case
    return fuse_in_process(synthetic_world, str(tmp_path_factory.mktemp("viewer-fused")), skip=(last,))


def viewer_config(world, fused, **extra) -> ViewerConfig:
    return load_config(ViewerConfig, base={"manifest": world.manifest, "fused": fused, "text": TEXT,
                                           "template": PROMPT_TEMPLATE, "port": 0, **extra})  # fmt: skip


@pytest.fixture(scope="module")
def backend(synthetic_world, fused) -> ViewerBackend:
    return ViewerBackend(viewer_config(synthetic_world, fused, display_points=4000))


# scoring and colours, with known answers -------------------------------------------------------------
def test_a_query_colours_its_class_hottest(synthetic_world, backend):
    for record in synthetic_world.records[:-1]:
        scene = backend.scene(record.scene_id, "fusion")
        assert len(scene.xyz) == 4000 and scene.n_points == 6000  # the display cap
        labels, mask = scene.features.labels, scene.features.mask
        for name in [n for n, count in present_classes(scene).items() if count >= 50]:
            scores = backend.scores(scene, backend.text_embedding(name, PROMPT_TEMPLATE))[0]
            view = heat_view(scores, scene.rgb)
            own = mask & (labels == NAMES.index(name))
            yellow = hot(view.colors)
            assert np.isnan(scores[~mask]).all() and (view.colors[~mask] == UNKNOWN_COLOR).all()
            assert view.high == pytest.approx(1.0, abs=1e-3) and np.median(scores[own]) > 0.99
            assert yellow[own].mean() > 0.9 and yellow[mask & ~own].mean() < 0.03, (record.scene_id, name)
            # the threshold greys what lies below it and keeps the hot end
            cut = heat_view(scores, scene.rgb, 0.9)
            assert (cut.colors[own & (scores >= cut.cut)] == view.colors[own & (scores >= cut.cut)]).all()
            assert cut.above < mask.sum() and (cut.colors[mask & (scores < cut.cut)] != view.colors[
                mask & (scores < cut.cut)]).any()  # fmt: skip
    legend = heat_legend(view, "<b>x</b>", 0.5)
    assert "&lt;b&gt;x&lt;/b&gt;" in legend and f"{view.high:.3f}" in legend


def test_drawn_point_scores_equal_the_query_stage(synthetic_world, fused, backend):
    from openscene_ray.query.scene import load_scene_features

    record = synthetic_world.records[1]
    scene = backend.scene(record.scene_id, "fusion")
    full = load_scene_features(record, "fusion", fused=fused)
    queries = backend.class_embeddings(parse_class_set("scannet20"))
    np.testing.assert_allclose(scene.scores(queries), full.scores(queries)[:, scene.index], atol=2e-6)
    np.testing.assert_array_equal(scene.xyz, full.xyz[scene.index])
    assert np.isnan(scene.scores(queries)[:, ~scene.features.mask]).all()


def test_label_mode_finds_the_ground_truth(synthetic_world, backend):
    record = synthetic_world.records[0]
    scene = backend.scene(record.scene_id, "fusion")
    classes = parse_class_set("scannet")
    scores = class_scores(backend.scores(scene, backend.class_embeddings(classes)), classes.prompt_to_class, 20)
    view = label_view(scores)
    mask, labels = scene.features.mask, scene.features.labels
    assert (view.pred[~mask] == -1).all() and (view.colors[~mask] == UNKNOWN_COLOR).all()
    known = mask & (labels < 20)
    assert (view.pred[known] == labels[known]).mean() > 0.95
    assert (view.colors[known] == label_palette(20)[view.pred[known]]).all()
    legend = label_legend(view, classes.class_names, "scannet20")
    assert all(NAMES[k] in legend for k in np.unique(view.pred[known]))
    best = top_classes(scores[np.flatnonzero(known)[0]], classes.class_names)
    assert len(best) == 5 and best[0][0] == NAMES[labels[np.flatnonzero(known)[0]]] and best[0][1] > 0.95
    assert [s for _, s in best] == sorted((s for _, s in best), reverse=True)
    assert top_classes(scores[np.flatnonzero(~mask)[0]], classes.class_names) == []


def test_nuscenes_prompts_vote_for_their_class():
    classes = parse_class_set("nuscenes16")
    assert len(classes.prompts) == 43 and classes.num_classes == 16
    prompt_scores = np.full((43, 2), 0.1, np.float32)
    prompt_scores[classes.prompts.index("a grassland in a scene"), 0] = 0.9  # -> terrain
    prompt_scores[:, 1] = np.nan
    scores = class_scores(prompt_scores, classes.prompt_to_class, 16)
    assert classes.class_names[int(np.argmax(scores[0]))] == "terrain" and np.isnan(scores[1]).all()


def test_label_sets_and_custom_lists():
    assert parse_class_set("matterport160").num_classes == 160
    assert parse_class_set("Matterport").name == "matterport21"
    custom = parse_class_set(" sofa, kitchen stove ,sofa,, lamp ")
    assert custom.class_names == ("sofa", "kitchen stove", "lamp")
    assert custom.prompts[1] == "a kitchen stove in a scene" and custom.prompt_to_class == (0, 1, 2)
    assert parse_class_set("bed, chair", "{} here").prompts == ("bed here", "chair here")
    for bad, message in (("", "choose a label set"), ("scannet99", "unknown label set"), ("bed,", "at least two"),
                         ("a," + "x" * 101, "101 characters"), (",".join(map(str, range(201))), "201 class")):
        with pytest.raises(ValueError, match=message):
            parse_class_set(bad)


def test_query_validation():
    assert validate_query("  somewhere soft ") == "somewhere soft"
    with pytest.raises(ValueError, match="empty"):
        validate_query("   ")
    with pytest.raises(ValueError, match="10000 characters; the limit is 1000"):
        validate_query("x" * 10_000)


# display -------------------------------------------------------------------------------------------
def test_display_subsample_camera_and_picking():
    index = display_indices(300_000, 200_000, seed=0)
    assert len(index) == 200_000 and (np.diff(index) > 0).all()
    np.testing.assert_array_equal(index, display_indices(300_000, 200_000, seed=0))
    np.testing.assert_array_equal(display_indices(10, 100), np.arange(10))
    rng = np.random.default_rng(0)
    xyz = rng.uniform([0, 0, 0], [6, 4, 2.5], (20_000, 3))
    assert 0.004 <= point_size(xyz) <= 0.25 and point_size(xyz[:2000]) > point_size(xyz)
    for view, aspect in (("top", 1.8), ("top", 0.6), ("oblique", 1.6)):
        pose = initial_camera(xyz, view, aspect)
        position, target = np.array(pose.position), np.array(pose.look_at)
        f = (target - position) / np.linalg.norm(target - position)
        r = np.cross(f, pose.up) / np.linalg.norm(np.cross(f, pose.up))
        u = np.cross(r, f)
        v = xyz - position
        z, t = v @ f, np.tan(pose.fov / 2)
        assert (z > 0).all()
        assert np.abs(v @ r / (z * t * aspect)).max() < 1 and np.abs(v @ u / (z * t)).max() < 1, (view, aspect)
    with pytest.raises(ValueError, match="unknown view"):
        initial_camera(xyz, "side")
    points = np.array([[0, 0, 0], [0, 0, 1], [0.5, 0, 2], [0, 0.01, 3]], np.float32)
    assert pick_point(points, (0, 0, 5), (0, 0, -1), 0.05) == 3  # the nearest along the ray
    assert pick_point(points, (0, 0, -5), (0, 0, 1), 0.05) == 0
    assert pick_point(points, (9, 9, 9), (0, 0, -1), 0.05) is None
    assert pick_point(points, (0, 0, 5), (0, 0, 0), 0.05) is None


# caches ----------------------------------------------------------------------------------------------
def test_lru_loads_once_evicts_and_forgets_failures():
    cache = LRU(2)
    calls = []

    def slow(key):
        def load():
            calls.append(key)
            time.sleep(0.2)
            return key * 2
        return load

    threads = [threading.Thread(target=cache.get, args=("a", slow("a"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["a"] and cache.get("a", slow("x")) == "aa"
    cache.get("b", lambda: 1)
    cache.get("a", lambda: 0)  # a is the most recent now
    cache.get("c", lambda: 2)
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
    with pytest.raises(RuntimeError):
        cache.get("d", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert cache.get("d", lambda: 4) == 4


def test_scenes_and_embeddings_are_cached(synthetic_world, fused):
    backend = ViewerBackend(viewer_config(synthetic_world, fused, scene_cache=1))
    first = synthetic_world.records[0].scene_id
    assert backend.scene(first, "fusion") is backend.scene(first, "fusion") and backend._scenes.loads == 1
    backend.scene(synthetic_world.records[1].scene_id, "fusion")
    assert not backend.is_cached(first, "fusion")
    e1 = backend.text_embedding("chair", PROMPT_TEMPLATE)
    assert backend.text_embedding(" chair ", PROMPT_TEMPLATE) is e1
    assert backend.text_embedding("a chair in a scene") is e1  # one entry per (model, prompt)
    assert backend._embeddings.loads == 1 and e1.shape == (1, 32)


# errors a user can fix -----------------------------------------------------------------------------------
def test_bad_inputs_are_messages(synthetic_world, fused, backend):
    missing = synthetic_world.records[-1].scene_id
    with pytest.raises(InputError, match="unknown scene 'nope': the manifest has 4 scenes"):
        backend.scene("nope", "fusion")
    with pytest.raises(InputError, match=f"scene {missing} has no fused features: .*{missing}.parquet is missing"):
        backend.scene(missing, "fusion")
    with pytest.raises(InputError, match="source 'distill' is not available"):
        backend.scene(synthetic_world.records[0].scene_id, "distill")
    with pytest.raises(ValueError, match="empty"):
        backend.text_embedding("")
    with pytest.raises(ValueError, match="10000 characters"):
        backend.text_embedding("y" * 10_000)
    with pytest.raises(InputError, match="exactly one"):
        backend.text_embedding("bed", "no field")
    with pytest.raises(InputError, match="image queries need the open_clip"):
        backend.image_embedding(b"\x89PNG")
    wide = ViewerBackend(viewer_config(synthetic_world, fused, text={**TEXT, "options": {"dim": 64, "seed": 0}}))
    scene = wide.scene(synthetic_world.records[0].scene_id, "fusion")
    assert "synthetic:dim=32,seed=0" in wide.text_model_warning(scene)
    with pytest.raises(InputError, match="64-d embeddings but the fusion features .* are 32-d"):
        wide.scores(scene, wide.text_embedding("bed"))


def test_image_query_uses_the_clip_image_tower(synthetic_world, fused):
    import io

    from PIL import Image

    options = {"arch": "ViT-B-32", "random_init": True}
    backend = ViewerBackend(viewer_config(synthetic_world, fused, text={"encoder": "open_clip", "options": options}))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    embedding = backend.image_embedding(buffer.getvalue(), "photo.png")
    assert embedding.shape == (1, 512) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(InputError, match="photo.png is not an image"):
        backend.image_embedding(b"not an image", "photo.png")


def test_database_search_ranks_the_scene_with_the_class(synthetic_world, backend):
    where = {}
    for record in synthetic_world.records[:-1]:
        for name in present_classes(backend.scene(record.scene_id, "fusion")):
            where.setdefault(name, []).append(record.scene_id)
    rare = sorted((n, s[0]) for n, s in where.items() if len(s) == 1)
    assert rare
    for name, scene_id in rare:
        found = backend.search(name, PROMPT_TEMPLATE)
        assert found["scanned"] == 3 and not found["failed"] and not found["warnings"]
        assert found["scenes"][0]["scene_id"] == scene_id and found["scenes"][0]["score"] > 0.99
        assert all(s["score"] < 0.9 for s in found["scenes"][1:])


# URL state -----------------------------------------------------------------------------------------------
def test_url_state_round_trip():
    state = parse_view_state("?scene=scene0001_00&q=somewhere+soft&source=fusion&mode=labels&labels=bed,+sofa"
                             "&t=0.4&view=top&template=a+%7B%7D+here&darkMode=1")  # fmt: skip
    assert (state.scene, state.query, state.mode, state.labels, state.threshold, state.view, state.template) == (
        "scene0001_00", "somewhere soft", "labels", "bed, sofa", 0.4, "top", "a {} here")
    assert parse_view_state("?" + "&".join(f"{k}={v}" for k, v in url_params(state).items())) == state
    assert url_params(parse_view_state("")) == {}
    bad = parse_view_state("mode=x&view=side&t=2&q=" + "z" * 30_000)
    assert (bad.mode, bad.view, bad.threshold) == ("query", "oblique", 0.0) and len(bad.problems) == 3
    assert len(bad.query) == 20_000  # kept long enough for the query check to refuse it


# config, gate and command ----------------------------------------------------------------------------------
def test_config_refuses_an_exposed_host_without_a_token(synthetic_world, fused):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    with pytest.raises(ConfigError, match="reachable from other machines: give a token"):
        viewer_config(synthetic_world, fused, host="0.0.0.0")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        viewer_config(synthetic_world, fused, host="0.0.0.0", token="short")
    with pytest.raises(ConfigError, match="only letters"):
        viewer_config(synthetic_world, fused, token="a;b" * 8)
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        viewer_config(synthetic_world, fused, source="distill")
    config = viewer_config(synthetic_world, fused, host="0.0.0.0", token="t" * 20)
    assert "tttt" not in repr(config) and config.sources() == ["fusion"]


def test_the_token_guards_the_page_and_the_websocket(synthetic_world, fused):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from openscene_ray.viewer.server import ViewerServer

    token = "viewer-token-0123456789"
    server = ViewerServer(viewer_config(synthetic_world, fused, token=token))
    url = server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert url.endswith(f"/?token={token}")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(base + "/?scene=x")
        assert denied.value.code == 401 and b"needs its access token" in denied.value.read()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/?token=wrong-token-0123456789")
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(base + f"/?token={token}&scene=s1") as page:  # 303 + cookie, then the page
            assert page.status == 200 and page.url == base + "/?scene=s1" and b"<html" in page.read()[:200]
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["viser-v1"], open_timeout=10).close()
        assert refused.value.response.status_code == 401
        with connect(f"ws://127.0.0.1:{server.port}/", additional_headers={"Cookie": cookie}, open_timeout=10) as ws:
            assert ws.protocol.state.name == "OPEN"  # relayed to viser
    finally:
        server.stop()


def test_view_is_a_registered_command(synthetic_world, fused, capsys):
    from openscene_ray.cli import build_parser, main
    from openscene_ray.kernel.stages import STAGES

    assert STAGES.get("view").command == "openscene_ray.viewer.command"
    args = build_parser().parse_args(["view", "--manifest", "m", "--fused", "f", "--host", "0.0.0.0"])
    assert args.host == "0.0.0.0"
    assert main(["view", "--manifest", synthetic_world.manifest, "--fused", fused, "--host", "0.0.0.0"]) != 0
    assert "give a token" in capsys.readouterr().err
