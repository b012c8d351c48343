"""Bad input, table-driven: every kind gives a message that names the file or field and the reason,
and the good scenes of the same run finish.

Per-scene faults go through one real fusion run (a broken copy of a good scene per kind, next to
the good scenes); stage-level faults go through the command line, whose error boundary prints one
message and exits 2.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest
from conftest import ORACLE, TEXT

from openscene_ray.cli import main
from openscene_ray.kernel import images, storage
from openscene_ray.kernel.features import read_features, shard_uri
from openscene_ray.kernel.manifest import (
    SceneRecord,
    load_points,
    points_table,
    write_manifest,
)

# ---------------------------------------------------------------- per-scene faults (one fusion run)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb) over a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + body


def _pose(record: SceneRecord, view: int) -> np.ndarray:
    return np.array(record.views[view].cam_to_world, np.float64).reshape(4, 4)


def _replace_view(record: SceneRecord, view: int, **changes) -> SceneRecord:
    views = list(record.views)
    views[view] = dataclasses.replace(views[view], **changes)
    return dataclasses.replace(record, views=tuple(views))


def _write(root: str, name: str, data: bytes) -> str:
    uri = os.path.join(root, name)
    storage.write_bytes(uri, data)
    return uri


def _points(root: str, name: str, record: SceneRecord, edit) -> tuple[str, int]:
    xyz, rgb, labels = load_points(record.points_uri)
    xyz, rgb, labels = edit(xyz.copy(), rgb.copy(), labels.copy())
    uri = os.path.join(root, name)
    storage.write_parquet(uri, points_table(xyz, rgb, labels))
    return uri, len(xyz)


def _break(record: SceneRecord, kind: str, root: str) -> SceneRecord:  # noqa: C901 - one branch per kind
    """A renamed copy of ``record`` whose inputs are broken the way ``kind`` says."""
    sid = f"{record.scene_id}_{kind}"
    color, depth = record.views[1].color_uri, record.views[1].depth_uri
    if kind == "corrupt_jpeg":
        record = _replace_view(record, 1, color_uri=_write(root, f"{sid}.jpg", b"\xff\xd8\xff\xe0 not a jpeg"))
    elif kind == "missing_color":
        record = _replace_view(record, 1, color_uri=os.path.join(root, f"{sid}-gone.jpg"))
    elif kind == "missing_depth":
        record = _replace_view(record, 1, depth_uri=os.path.join(root, f"{sid}-gone.png"))
    elif kind == "truncated_depth_png":
        data = storage.read_bytes(depth)
        record = _replace_view(record, 1, depth_uri=_write(root, f"{sid}.png", data[: len(data) // 2]))
    elif kind == "decompression_bomb":
        record = _replace_view(record, 1, color_uri=_write(root, f"{sid}.png", _png_header(32000, 24000)))
    elif kind == "depth_not_single_channel":
        record = _replace_view(record, 1, depth_uri=_write(root, f"{sid}.png", storage.read_bytes(color)))
    elif kind == "depth_size_mismatch":
        small = images.encode_png(np.ones((10, 10), np.uint16))
        record = _replace_view(record, 1, depth_uri=_write(root, f"{sid}.png", small))
    elif kind == "label_outside_label_set":
        label = np.full((240, 320), 40, np.uint8)
        record = _replace_view(record, 1, label_uri=_write(root, f"{sid}.png", images.encode_png(label)))
    elif kind == "nonrigid_pose":
        pose = _pose(record, 0)
        pose[:3, :3] *= 1.5
        record = _replace_view(record, 0, cam_to_world=tuple(pose.reshape(-1)))
    elif kind == "reflected_pose":
        pose = _pose(record, 0)
        pose[:3, 0] *= -1
        record = _replace_view(record, 0, cam_to_world=tuple(pose.reshape(-1)))
    elif kind == "zero_focal_length":
        k = np.array(record.views[0].intrinsics).reshape(3, 3)
        k[0, 0] = 0.0
        record = _replace_view(record, 0, intrinsics=tuple(k.reshape(-1)))
    elif kind == "missing_points":
        record = dataclasses.replace(record, points_uri=os.path.join(root, f"{sid}-gone.parquet"))
    elif kind == "points_not_parquet":
        record = dataclasses.replace(record, points_uri=_write(root, f"{sid}.parquet", b"PAR1 but not really"))
    elif kind == "points_with_nan":
        uri, _ = _points(root, f"{sid}.parquet", record, lambda x, c, lab: (np.where(np.arange(len(x))[:, None] < 5, np.nan, x).astype(np.float32), c, lab))
        record = dataclasses.replace(record, points_uri=uri)
    elif kind == "labels_outside_0_255":
        uri, _ = _points(root, f"{sid}.parquet", record, lambda x, c, lab: (x, c, np.where(np.arange(len(x)) < 3, 300, lab).astype(np.int16)))
        record = dataclasses.replace(record, points_uri=uri)
    elif kind == "empty_point_cloud":
        uri, n = _points(root, f"{sid}.parquet", record, lambda x, c, lab: (x[:0], c[:0], lab[:0]))
        record = dataclasses.replace(record, points_uri=uri, num_points=max(n, 1))
    elif kind == "stale_point_count":
        record = dataclasses.replace(record, num_points=record.num_points + 7)
    else:
        raise AssertionError(kind)
    return dataclasses.replace(record, scene_id=sid)


# kind -> substrings the scene's error must contain (besides the scene id)
SCENE_FAULTS = {
    "corrupt_jpeg": ["cannot decode image", ".jpg"],
    "missing_color": ["no such object", "-gone.jpg"],
    "missing_depth": ["no such object", "-gone.png"],
    "truncated_depth_png": ["cannot decode image", "truncated_depth_png.png"],
    "decompression_bomb": ["refused", "decompression_bomb.png"],
    "depth_not_single_channel": ["single-channel 16-bit depth", "depth_not_single_channel.png"],
    "depth_size_mismatch": ["does not match the colour image", "depth_size_mismatch.png"],
    "label_outside_label_set": ["outside the label set", "view '20'"],
    "nonrigid_pose": ["cam_to_world", "not orthonormal"],
    "reflected_pose": ["cam_to_world", "reflection"],
    "zero_focal_length": ["intrinsics", "focal lengths"],
    "missing_points": ["no such object", "missing_points-gone.parquet"],
    "points_not_parquet": ["points_not_parquet.parquet"],
    "points_with_nan": ["xyz", "NaN or inf"],
    "labels_outside_0_255": ["labels", "outside 0..255"],
    "empty_point_cloud": ["points", "holds 0 points", "empty_point_cloud.parquet"],
    "stale_point_count": ["points", "the manifest says", "re-run ingest"],
}


@pytest.fixture(scope="module")
def mixed_run(ray_session, synthetic_world, tmp_path_factory):
    """One fusion run over two good scenes and one broken copy per fault (plus a NaN pose, which is
    skipped and counted, not an error)."""
    from openscene_ray.fusion.config import FuseConfig
    from openscene_ray.fusion.job import run_fuse
    from openscene_ray.kernel.config import load_config

    root = str(tmp_path_factory.mktemp("bad-inputs"))
    good = synthetic_world.records[:2]
    broken = {kind: _break(good[0], kind, root) for kind in SCENE_FAULTS}
    pose = _pose(good[1], 2)
    pose[0, 0] = np.nan
    nan_pose = dataclasses.replace(_replace_view(good[1], 2, cam_to_world=tuple(pose.reshape(-1))),
                                   scene_id=f"{good[1].scene_id}_nan_pose")  # fmt: skip
    manifest = os.path.join(root, "manifest.parquet")
    write_manifest(manifest, [*good, nan_pose, *broken.values()])
    fused = os.path.join(root, "fused")
    config = load_config(FuseConfig, base={
        "manifest": manifest, "fused": fused, "extractor": {"name": "label-oracle", "options": ORACLE},
        "resources": {"min_actors": 1, "max_actors": 2, "gpus_per_actor": 1, "cpus_per_actor": 1},
    })  # fmt: skip
    return run_fuse(config), good, nan_pose, broken, fused


@pytest.mark.parametrize("kind", sorted(SCENE_FAULTS))
def test_scene_fault_names_its_file_or_field(mixed_run, kind):
    summary, good, _, broken, fused = mixed_run
    record = broken[kind]
    error = summary.failed.get(record.scene_id)
    assert error is not None, f"{kind}: the scene was not reported as failed"
    for part in [record.scene_id, *SCENE_FAULTS[kind]]:
        assert part in error, f"{kind}: {part!r} not in {error!r}"
    assert not storage.exists(shard_uri(fused, record.scene_id))


def test_good_scenes_of_the_same_run_finish(mixed_run):
    summary, good, nan_pose, broken, fused = mixed_run
    assert sorted(summary.done) == sorted([*(r.scene_id for r in good), nan_pose.scene_id])
    assert set(summary.failed) == {r.scene_id for r in broken.values()}
    for record in good:
        assert read_features(shard_uri(fused, record.scene_id)).metadata["n_seen"] > 0


def test_the_cli_exits_1_when_a_scene_failed(ray_session, synthetic_world, tmp_path, capsys):
    broken = _break(synthetic_world.records[0], "missing_points", str(tmp_path))
    manifest = str(tmp_path / "manifest.parquet")
    write_manifest(manifest, [broken])
    argv = ["fuse", "--manifest", manifest, "--fused", str(tmp_path / "fused"), "--set", "resources.gpus_per_actor=1",
            "--set", "extractor.options.text.encoder=synthetic", "--set", "extractor.options.text.options.dim=32"]
    assert main(argv) == 1
    assert "missing_points-gone.parquet" in capsys.readouterr().out


def test_a_nan_pose_is_skipped_and_counted(mixed_run):
    import pyarrow.parquet as pq

    summary, _, nan_pose, _, fused = mixed_run
    rows = {r["scene_id"]: r for r in pq.read_table(os.path.join(fused, "index")).to_pylist()}
    assert rows[nan_pose.scene_id]["status"] == "done"
    assert rows[nan_pose.scene_id]["n_views_skipped"] >= 1
    assert rows[nan_pose.scene_id]["n_views"] == len(nan_pose.views) - rows[nan_pose.scene_id]["n_views_skipped"]


# ---------------------------------------------------------------- stage-level faults (the CLI)


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _manifest_without(world, tmp_path, column: str) -> str:
    table = pa.Table.from_pylist([r.to_row() for r in world.records]).drop_columns([column])
    path = str(tmp_path / "manifest.parquet")
    storage.write_parquet(path, table)
    return path


def _bad_checkpoint(tmp_path, how: str) -> str:
    from openscene_ray.models.checkpoint import (
        CONFIG_NAME,
        WEIGHTS_NAME,
        save_checkpoint,
    )
    from openscene_ray.models.minkunet import MinkUNet, MinkUNetConfig

    config = MinkUNetConfig(out_channels=32, init_dim=8, planes=(8,) * 8, layers=(1,) * 8)
    uri = save_checkpoint(str(tmp_path / "ckpt"), MinkUNet(config), config,
                          {"voxel_size": 0.1, "text_model": "synthetic:dim=32,seed=0", "feature_dim": 32})  # fmt: skip
    document_path = os.path.join(uri, CONFIG_NAME)
    document = json.loads(open(document_path).read())
    if how == "weights_outside_folder":
        document["weights"]["name"] = "../evil.pt"
        open(document_path, "w").write(json.dumps(document))
    elif how == "corrupt_weights":
        weights = b"\xff" * 64
        open(os.path.join(uri, WEIGHTS_NAME), "wb").write(weights)
        import hashlib

        document["weights"]["sha256"] = hashlib.sha256(weights).hexdigest()
        open(document_path, "w").write(json.dumps(document))
    elif how == "not_json":
        open(document_path, "w").write("{ not json")
    return uri


TEXT_SET = ["--set", "text.encoder=synthetic", "--set", "text.options={dim: 32, seed: 0}"]


def _stage_cases(world, tmp_path) -> dict[str, tuple[list[str], list[str]]]:
    """kind -> (argv, substrings of the one-line error); built lazily per test."""
    m = world.manifest
    fused = str(tmp_path / "fused")
    dup = str(tmp_path / "dup.parquet")
    return {
        "manifest_missing_column": (["fuse", "--manifest", _manifest_without(world, tmp_path, "cut_bound"),
                                     "--fused", fused], ["manifest.parquet", "missing column(s) cut_bound"]),
        "manifest_duplicate_scene": (["fuse", "--manifest", dup, "--fused", fused],
                                     ["dup.parquet", "appears 2 times"]),
        "manifest_not_parquet": (["fuse", "--manifest", _write(str(tmp_path), "m.parquet", b"not parquet"),
                                  "--fused", fused], ["m.parquet"]),
        "manifest_missing": (["fuse", "--manifest", str(tmp_path / "none.parquet"), "--fused", fused],
                             ["none.parquet", "no such object"]),
        "unknown_extractor": (["fuse", "--manifest", m, "--fused", fused, "--set", "extractor.name=nope"],
                              ["extractor.name", "unknown extractor 'nope'"]),
        "unknown_config_key": (["fuse", "--manifest", m, "--fused", fused, "--set", "bogus=1"],
                               ["field bogus", "Extra inputs are not permitted"]),
        "renamed_config_key": (["fuse", "--manifest", m, "--set", "output=x"], ["'output' was renamed", "'fused'"]),
        "wrong_type": (["fuse", "--manifest", m, "--fused", fused, "--set", "resources.max_actors=abc"],
                       ["field resources.max_actors"]),
        "unknown_scene": (["fuse", "--manifest", m, "--fused", fused, "--set", "scenes=[nope]"],
                          ["scenes not in the manifest", "nope"]),
        "unknown_label_set": (["evaluate", "--manifest", m, "--output", str(tmp_path / "e"), "--fused", fused,
                               "--set", "text.label_set=zz"], ["field text.label_set", "unknown label set 'zz'"]),
        "evaluate_unknown_scene": (["evaluate", "--manifest", m, "--output", str(tmp_path / "e"), "--fused", fused,
                                    "--scene", "nope", *TEXT_SET], ["not in the manifest", "nope"]),
        "checkpoint_weights_outside_folder": (
            ["evaluate", "--manifest", m, "--output", str(tmp_path / "e"), "--mode", "distill", "--checkpoint",
             _bad_checkpoint(tmp_path / "a", "weights_outside_folder"), *TEXT_SET],
            ["ckpt", "'../evil.pt'"]),
        "checkpoint_corrupt_weights": (
            ["evaluate", "--manifest", m, "--output", str(tmp_path / "e"), "--mode", "distill", "--checkpoint",
             _bad_checkpoint(tmp_path / "b", "corrupt_weights"), *TEXT_SET],
            ["model.safetensors", "unreadable weights"]),
        "checkpoint_not_json": (
            ["evaluate", "--manifest", m, "--output", str(tmp_path / "e"), "--mode", "distill", "--checkpoint",
             _bad_checkpoint(tmp_path / "c", "not_json"), *TEXT_SET],
            ["checkpoint.json", "not valid JSON"]),
        "distill_without_train_split": (
            ["distill", "--manifest", _val_only(world, tmp_path), "--fused", fused, "--storage-path",
             str(tmp_path / "runs")], ["no scene has split 'train'"]),
        "query_empty_text": (["query", "--text", " ", "--fused", fused, "--output", str(tmp_path / "q")],
                             ["field texts", "a text query is empty"]),
        "query_too_long": (["query", "--text", "x" * 10_000, "--fused", fused, "--output", str(tmp_path / "q")],
                           ["field texts", "10000 characters"]),
        "query_bad_template": (["query", "--text", "x", "--template", "{} and {}", "--fused", fused,
                                "--output", str(tmp_path / "q")], ["field template", "exactly one"]),
        "ingest_missing_root": (["ingest", "--layout", "scannet", "--root", str(tmp_path / "none"), "--out",
                                 str(tmp_path / "i")], ["none", "the dataset root does not exist"]),
        "ingest_bad_layout_option": (["ingest", "--layout", "scannet", "--root", str(tmp_path), "--out",
                                      str(tmp_path / "i"), "--set", "frame_skip=-3"], ["field frame_skip"]),
    }  # fmt: skip


def _val_only(world, tmp_path) -> str:
    path = str(tmp_path / "val-only.parquet")
    write_manifest(path, [dataclasses.replace(r, split="val") for r in world.records])
    return path


STAGE_KINDS = [
    "manifest_missing_column", "manifest_duplicate_scene", "manifest_not_parquet", "manifest_missing",
    "unknown_extractor", "unknown_config_key", "renamed_config_key", "wrong_type", "unknown_scene",
    "unknown_label_set", "evaluate_unknown_scene", "checkpoint_weights_outside_folder",
    "checkpoint_corrupt_weights", "checkpoint_not_json", "distill_without_train_split", "query_empty_text",
    "query_too_long", "query_bad_template", "ingest_missing_root", "ingest_bad_layout_option",
]  # fmt: skip


@pytest.mark.parametrize("kind", STAGE_KINDS)
def test_stage_fault_is_one_message_naming_the_file_or_field(kind, synthetic_world, tmp_path, capsys):
    write_manifest(str(tmp_path / "dup.parquet"), [synthetic_world.records[0]] * 2)
    argv, expected = _stage_cases(synthetic_world, tmp_path)[kind]
    code, err = _cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err and err.startswith(f"openscene-ray {argv[0]}: error:"), err
    for part in expected:
        assert part in err, f"{kind}: {part!r} not in {err!r}"


def test_a_traceback_only_with_verbose(synthetic_world, tmp_path, capsys):
    argv = ["-v", "fuse", "--manifest", str(tmp_path / "none.parquet"), "--fused", str(tmp_path / "f")]
    code, err = _cli(argv, capsys)
    assert code == 2 and "Traceback" in err and err.rstrip().endswith("none.parquet: no such object")


# ---------------------------------------------------------------- ingest: bad scenes beside good ones


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_ingest_refuses_a_pickle_payload_and_names_the_global(tmp_path):
    """A ScanNet-style .pth carrying code is refused (its global named), the good scene beside it
    is ingested."""
    import pyarrow.parquet as pq

    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout

    root = tmp_path / "replica"
    xyz = np.random.default_rng(0).random((20, 3)).astype(np.float64)
    _write(str(root / "replica_3d"), "office0.pth", pickle.dumps((xyz, np.zeros((20, 3)), np.full(20, 255.0))))
    _write(str(root / "replica_3d"), "office1.pth", pickle.dumps((_Payload(), 0, 0)))
    for scene in ("office0", "office1"):
        for i in range(2):
            base = str(root / "replica_2d" / scene)
            _write(base, f"color/{i}.jpg", images.encode_jpeg(np.full((36, 64, 3), 90, np.uint8)))
            _write(base, f"depth/{i}.png", images.encode_png(np.full((36, 64), 13107, np.uint16)))
            _write(base, f"pose/{i}.txt", b"1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    result = ingest(build_layout("replica"), str(root), str(tmp_path / "out"))
    assert [r.scene_id for r in result.records] == ["office0"]
    (error,) = pq.read_table(result.errors_uri).to_pylist()
    assert error["scene_id"] == "office1" and "office1.pth" in error["error"]
    assert "posix.system" in error["error"] or "os.system" in error["error"]


def test_posed_rgbd_without_intrinsics_names_the_option(shared_data, tmp_path):
    import pyarrow.parquet as pq

    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout

    capture = tmp_path / "capture"
    src = shared_data / "redwood-livingroom1"
    for name in ("color", "depth"):
        (capture / name).mkdir(parents=True)
        for f in sorted((src / name).iterdir())[:2]:
            (capture / name / f.name).write_bytes(f.read_bytes())
    lines = (src / "trajectory.log").read_text().splitlines()[:10]
    (capture / "trajectory.log").write_text("\n".join(lines) + "\n")
    result = ingest(build_layout("posed-rgbd"), str(capture), str(tmp_path / "out"))
    (error,) = pq.read_table(result.errors_uri).to_pylist()
    assert "intrinsics" in error["error"] and "intrinsics_file" in error["error"]


def test_plain_3x3_camera_intrinsics_txt_is_found(shared_data, tmp_path):
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout

    capture = tmp_path / "capture"
    src = shared_data / "redwood-livingroom1"
    for name in ("color", "depth"):
        (capture / name).mkdir(parents=True)
        for f in sorted((src / name).iterdir())[:2]:
            (capture / name / f.name).write_bytes(f.read_bytes())
    (capture / "trajectory.log").write_text("\n".join((src / "trajectory.log").read_text().splitlines()[:10]) + "\n")
    (capture / "camera-intrinsics.txt").write_text("525 0 319.5\n0 525 239.5\n0 0 1\n")
    result = ingest(build_layout("posed-rgbd"), str(capture), str(tmp_path / "out"))
    assert not result.errors and len(result.records) == 1
    k = np.array(result.records[0].views[0].intrinsics).reshape(3, 3)
    assert k[0, 0] == pytest.approx(525) and k[1, 2] == pytest.approx(239.5)


def test_the_table_has_at_least_thirty_kinds():
    assert len(SCENE_FAULTS) + len(STAGE_KINDS) + 3 >= 30


def test_text_model_mismatch_with_error_names_both_models(tmp_path):
    from openscene_ray.kernel.text import TextSpaceConfig, check_text_model

    config = TextSpaceConfig(**TEXT, on_mismatch="error")
    with pytest.raises(ValueError, match="'synthetic:dim=32,seed=1'.*'synthetic:dim=32,seed=0'"):
        check_text_model("synthetic:dim=32,seed=1", config, "the shards")
    # the same model compares equal whether or not its defaults are spelled out
    assert check_text_model("synthetic:dim=32,seed=0", TextSpaceConfig(**(TEXT | {"options": {"dim": 32}})), "x") == ""


def test_binary_bytes_are_not_an_image(tmp_path):
    with pytest.raises(images.ImageDecodeError, match="x.png: cannot decode image"):
        images.decode_color(io.BytesIO(b"\x00" * 10).getvalue(), "x.png")
