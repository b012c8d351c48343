"""The ingest command: manifest + points Parquet + per-scene errors, idempotent, any storage root."""

import io
import os
import pickle

import numpy as np
import pytest

from openscene_ray import cli
from openscene_ray.datasets.ingest import ERRORS_SCHEMA, read_errors
from openscene_ray.kernel import images, storage
from openscene_ray.kernel import manifest as mf

RNG = np.random.default_rng(3)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _ingest(*argv: str) -> int:
    return cli.main(["ingest", *argv])


def _txt(matrix) -> bytes:
    out = io.StringIO()
    np.savetxt(out, matrix)
    return out.getvalue().encode()


def _scannet(root, scene_id, split="val", n=40, frames=(0, 20, 40), lost=()):
    xyz = RNG.normal(size=(n, 3))
    rgb = RNG.integers(0, 256, (n, 3)).astype(np.uint8)
    labels = RNG.integers(0, 20, n).astype(np.float64)
    storage.write_bytes(
        storage.join(root, "scannet_3d", split, f"{scene_id}_vh_clean_2.pth"),
        pickle.dumps((xyz, rgb / 127.5 - 1, labels), protocol=4),
    )
    base = storage.join(root, "scannet_2d", scene_id)
    for f in frames:
        storage.write_bytes(storage.join(base, "color", f"{f}.jpg"), images.encode_jpeg(np.full((24, 32, 3), f, np.uint8)))
        storage.write_bytes(storage.join(base, "depth", f"{f}.png"), images.encode_png(np.full((24, 32), 1500, np.uint16)))
        pose = np.full((4, 4), -np.inf) if f in lost else np.eye(4)
        storage.write_bytes(storage.join(base, "pose", f"{f}.txt"), _txt(pose))
    return xyz.astype(np.float32), rgb, labels.astype(np.int16)


def _outputs(out: str) -> dict[str, bytes]:
    uris = [storage.join(out, "manifest.parquet"), storage.join(out, "ingest_errors.parquet")]
    uris += storage.listdir(storage.join(out, "points"))
    return {uri: storage.read_bytes(uri) for uri in uris}


def test_ingest_reports_bad_scenes_and_keeps_the_rest(tmp_path, capsys):
    root, out = str(tmp_path / "data"), str(tmp_path / "out")
    good = _scannet(root, "scene0000_00", lost=(20,))
    _scannet(root, "scene0001_00", split="train")
    _scannet(root, "scene0002_00")
    _scannet(root, "scene0003_00", n=0)
    _scannet(root, "scene0004_00")
    os.remove(f"{root}/scannet_2d/scene0001_00/depth/40.png")
    with open(f"{root}/scannet_2d/scene0002_00/color/20.jpg", "wb") as f:
        f.write(b"this is not a jpeg")
    with open(f"{root}/scannet_3d/val/scene0004_00_vh_clean_2.pth", "wb") as f:
        f.write(pickle.dumps((_Evil(), 0, 0)))

    assert _ingest("--layout", "scannet", "--root", root, "--out", out) == 0
    summary = capsys.readouterr()
    assert "1 scene(s) ingested (2 views, 1 skipped), 4 failed" in summary.out
    assert "scene 'scene0001_00': view 40.depth: missing file" in summary.err

    (record,) = mf.read_manifest(f"{out}/manifest.parquet")
    assert (record.scene_id, record.split, record.layout, record.num_points) == ("scene0000_00", "val", "scannet", 40)
    assert [v.frame_id for v in record.views] == ["0", "40"]
    lost = f"cam_to_world: non-finite values (lost tracking) (file {root}/scannet_2d/scene0000_00/pose/20.txt)"
    assert record.skipped_views == (("20", lost),)
    assert record.points_uri == f"{out}/points/scene0000_00.parquet"
    xyz, rgb, labels = mf.load_points(record.points_uri)
    assert np.array_equal(xyz, good[0]) and np.array_equal(rgb, good[1]) and np.array_equal(labels, good[2])
    scene = mf.load_scene(record)  # the manifest row loads as a validated scene
    assert scene.views[1].depth.shape == (240, 320) and np.allclose(scene.views[1].depth, 1.5)

    assert storage.read_parquet(f"{out}/ingest_errors.parquet").schema.equals(ERRORS_SCHEMA)
    errors = {e.scene_id: e for e in read_errors(f"{out}/ingest_errors.parquet")}
    assert sorted(errors) == ["scene0001_00", "scene0002_00", "scene0003_00", "scene0004_00"]
    assert errors["scene0001_00"].source == f"{root}/scannet_3d/train/scene0001_00_vh_clean_2.pth"
    assert errors["scene0001_00"].error == (
        f"scene 'scene0001_00': view 40.depth: missing file (file {root}/scannet_2d/scene0001_00/depth/40.png)"
    )
    assert errors["scene0002_00"].error == (
        "scene 'scene0002_00': view 20.color: cannot decode image header (not a recognised image format) "
        f"(file {root}/scannet_2d/scene0002_00/color/20.jpg)"
    )
    assert errors["scene0003_00"].error == (
        f"scene 'scene0003_00': xyz: empty point cloud (file {root}/scannet_3d/val/scene0003_00_vh_clean_2.pth)"
    )
    assert errors["scene0004_00"].error.startswith("scene 'scene0004_00': points: refused to load posix.system")

    first = _outputs(out)
    assert _ingest("--layout", "scannet", "--root", root, "--out", out) == 0
    assert _outputs(out) == first  # idempotent, byte for byte
    assert _ingest("--layout", "scannet", "--root", root, "--out", out, "--strict") == 1
    assert _ingest("--layout", "scannet", "--root", root, "--out", out, "--split", "train") == 1  # only failures


def test_ingest_exit_codes_and_duplicates(tmp_path, capsys):
    root, out = str(tmp_path / "data"), str(tmp_path / "out")
    assert _ingest("--layout", "replica", "--root", root, "--out", out) == 2  # no such root
    assert "the dataset root does not exist" in capsys.readouterr().err
    os.makedirs(root)
    assert _ingest("--layout", "replica", "--root", root, "--out", out) == 1  # nothing there
    assert mf.read_manifest(f"{out}/manifest.parquet") == []
    assert _ingest("--layout", "scannet", "--root", root, "--out", out, "--set", "frame_skip=zero") == 2
    assert "field frame_skip" in capsys.readouterr().err
    _scannet(root, "scene0000_00", split="train")
    _scannet(root, "scene0000_00", split="val")
    assert cli.main(["ingest", "--layout", "scannet", "--root", root, "--out", out, "--set", "frame_skip=40"]) == 0
    (record,) = mf.read_manifest(f"{out}/manifest.parquet")
    assert record.split == "train" and [v.frame_id for v in record.views] == ["0", "40"]
    (error,) = read_errors(f"{out}/ingest_errors.parquet")
    assert error.source.endswith("val/scene0000_00_vh_clean_2.pth") and error.error.startswith("duplicate scene id")


def test_ingest_reads_and_writes_s3(s3_server):
    bucket = s3_server.bucket("ingest")
    root, out = f"s3://{bucket}/replica", f"s3://{bucket}/out"
    xyz = RNG.normal(size=(12, 3))
    storage.write_bytes(f"{root}/replica_3d/office0.pth", pickle.dumps((xyz, np.zeros((12, 3)), np.full(12, 255.0))))
    for i in range(3):
        base = f"{root}/replica_2d/office0"
        storage.write_bytes(f"{base}/color/{i}.jpg", images.encode_jpeg(np.full((36, 64, 3), 90, np.uint8)))
        storage.write_bytes(f"{base}/depth/{i}.png", images.encode_png(np.full((36, 64), 13107, np.uint16)))
        storage.write_bytes(f"{base}/pose/{i}.txt", _txt(np.eye(4)))
    storage.remove(f"{root}/replica_2d/office0/pose/1.txt")
    assert _ingest("--layout", "replica", "--root", root, "--out", out, "--set", "bad_views=skip") == 0
    (record,) = mf.read_manifest(f"{out}/manifest.parquet")
    assert [v.frame_id for v in record.views] == ["0", "2"]
    assert record.skipped_views == (("1", f"cam_to_world: missing file (file {root}/replica_2d/office0/pose/1.txt)"),)
    assert record.views[1].color_uri == f"{root}/replica_2d/office0/color/2.jpg"
    scene = mf.load_scene(record)
    assert np.allclose(scene.xyz, xyz.astype(np.float32)) and (scene.labels == 255).all()
    assert scene.views[0].color.shape == (360, 640, 3) and np.allclose(scene.views[0].depth, 13107 / 6553.5)
    assert s3_server.keys(bucket)[:3] == ["out/ingest_errors.parquet", "out/manifest.parquet", "out/points/office0.parquet"]


@pytest.mark.parametrize("bad", ["points", "calib"])
def test_nuscenes_calib_errors_are_per_scene(tmp_path, bad):
    root = tmp_path / "samples"
    for name in ("a", "b"):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "x__LIDAR_TOP__1.pcd.bin").write_bytes(RNG.normal(size=(10, 5)).astype(np.float32).tobytes())
        (folder / "cam.jpg").write_bytes(images.encode_jpeg(np.zeros((90, 160, 3), np.uint8)))
        lidar2cam = np.eye(4).tolist()
        (folder / "calib.json").write_text(
            f'{{"images": {{"CAM_FRONT": {{"img_path": "cam.jpg", "cam2img": [[100, 0, 80], [0, 100, 45], [0, 0, 1]], '
            f'"lidar2cam": {lidar2cam}}}}}}}'
        )
    if bad == "points":
        (root / "b" / "x__LIDAR_TOP__1.pcd.bin").write_bytes(b"\0" * 7)
        reason = "points: file size 7 is not a multiple of 5 float32 values"
    else:
        (root / "b" / "calib.json").write_text('{"images": {"CAM_FRONT": {"img_path": "cam.jpg"}}}')
        reason = "calib.images.CAM_FRONT: missing or invalid field ('cam2img')"
    out = str(tmp_path / "out")
    assert _ingest("--layout", "nuscenes-calib", "--root", str(root), "--out", out) == 0
    (record,) = mf.read_manifest(f"{out}/manifest.parquet")
    assert record.scene_id == "a" and record.num_points == 10 and record.cut_bound == 5
    assert np.allclose(record.views[0].intrinsics_matrix, [[500, 0, 80 * 799 / 159], [0, 500, 45 * 449 / 89], [0, 0, 1]])
    (error,) = read_errors(f"{out}/ingest_errors.parquet")
    assert error.scene_id == "b" and error.error.startswith(f"scene 'b': {reason}")
