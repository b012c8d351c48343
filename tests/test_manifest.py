import numpy as np
import pytest

from openscene_ray.kernel import images, storage
from openscene_ray.kernel import manifest as mf
from openscene_ray.kernel.scene import SceneError


def _write_scene(root, n_views=2, w=8, h=6):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(20, 3)).astype(np.float32)
    rgb = rng.integers(0, 255, (20, 3), dtype=np.uint8)
    labels = rng.integers(0, 20, 20).astype(np.int16)
    points_uri = storage.join(root, "points", "s0.parquet")
    storage.write_parquet(points_uri, mf.points_table(xyz, rgb, labels))
    views = []
    for i in range(n_views):
        color = rng.integers(0, 255, (h * 2, w * 2, 3), dtype=np.uint8)  # stored at 2x the fusion size
        depth = np.full((h * 2, w * 2), 1500, np.uint16)
        label = np.full((h * 2, w * 2), 3, np.uint8)
        c, d, l = (storage.join(root, k, f"{i}.{e}") for k, e in (("color", "png"), ("depth", "png"), ("label", "png")))
        storage.write_bytes(c, images.encode_png(color))
        storage.write_bytes(d, images.encode_png(depth))
        storage.write_bytes(l, images.encode_png(label))
        views.append(mf.ViewRecord.create(i, c, np.diag([4.0, 4.0, 1.0]), np.eye(4), d, l))
    record = mf.SceneRecord(
        scene_id="s0", split="val", layout="scannet", points_uri=points_uri, num_points=20,
        image_width=w, image_height=h, cut_bound=1, views=tuple(views), depth_scale=1000.0,
        visibility_threshold=0.25, skipped_views=(("9", "non-finite values (lost tracking)"),),
    )  # fmt: skip
    return record, xyz, rgb, labels


def test_manifest_round_trip_and_scene_load(tmp_path):
    root = str(tmp_path)
    record, xyz, rgb, labels = _write_scene(root)
    uri = storage.join(root, "manifest.parquet")
    mf.write_manifest(uri, [record])
    (back,) = mf.read_manifest(uri)
    assert back == record
    scene = mf.load_scene(back)
    assert np.array_equal(scene.xyz, xyz) and np.array_equal(scene.rgb, rgb) and np.array_equal(scene.labels, labels)
    view = scene.views[0]
    assert view.color.shape == (6, 8, 3) and view.depth.shape == (6, 8) and view.label.shape == (6, 8)
    assert np.allclose(view.depth, 1.5) and (view.label == 3).all()


def test_missing_and_corrupt_view_files_name_the_file(tmp_path):
    root = str(tmp_path)
    record, *_ = _write_scene(root)
    storage.remove(record.views[1].depth_uri)
    with pytest.raises(SceneError, match=r"scene 's0': view 1: cannot read file: no such object \(file .*depth/1.png\)"):
        mf.load_scene(record)
    storage.write_bytes(record.views[0].color_uri, b"\xff\xd8 truncated jpeg")
    with pytest.raises(SceneError, match=r"view 0: .*color/0.png: cannot decode image"):
        mf.load_view(record, record.views[0])


def test_select_records_keeps_manifest_order_and_names_unknown_ids(tmp_path):
    from dataclasses import replace

    from openscene_ray.kernel.errors import InputError

    record, *_ = _write_scene(str(tmp_path))
    records = [replace(record, scene_id=s) for s in ("a", "b", "c")]
    assert mf.select_records(records, None, "m.parquet") == records
    assert [r.scene_id for r in mf.select_records(records, ["c", "a"], "m.parquet")] == ["a", "c"]
    with pytest.raises(InputError, match=r"scenes not in the manifest m.parquet: \['x', 'y'\]"):
        mf.select_records(records, ["y", "a", "x"], "m.parquet")
