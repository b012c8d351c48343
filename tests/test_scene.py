import numpy as np
import pytest

from openscene_ray.kernel.scene import Scene, SceneError, View, pose_problem


def _view(frame="0", h=4, w=6, pose=None, depth_shape=None):
    depth = None if depth_shape is False else np.ones(depth_shape or (h, w), np.float32)
    return View(
        frame_id=frame,
        color=np.zeros((h, w, 3), np.uint8),
        depth=depth,
        intrinsics=np.array([[5.0, 0, 3], [0, 5.0, 2], [0, 0, 1]]),
        cam_to_world=np.eye(4) if pose is None else pose,
    )


def _points(n=10):
    return np.zeros((n, 3), np.float32), np.zeros((n, 3), np.uint8)


def test_valid_scene_and_skipped_lost_tracking_views():
    xyz, rgb = _points()
    lost = np.full((4, 4), -np.inf)
    scene = Scene.create("s1", xyz, rgb, np.zeros(10, np.int16), [_view("0"), _view("1", pose=lost)])
    assert [v.frame_id for v in scene.views] == ["0"]
    assert scene.skipped_views == [("1", "non-finite values (lost tracking)")]
    assert scene.num_points == 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(xyz=np.zeros((10, 3), np.float64)), r"scene 's1': xyz: expected dtype float32, got float64"),
        (dict(xyz=np.zeros((10, 2), np.float32)), r"xyz: expected shape \[\*,3\], got \[10, 2\]"),
        (dict(xyz=np.zeros((0, 3), np.float32), rgb=np.zeros((0, 3), np.uint8)), "xyz: empty point cloud"),
        (dict(xyz=np.array([[0, 0, np.nan]] * 10, np.float32)), "xyz: 10 points have NaN or inf"),
        (dict(rgb=np.zeros((9, 3), np.uint8)), r"rgb: expected shape \[10,3\]"),
        (dict(labels=np.zeros(10, np.int32)), "labels: expected dtype int16"),
        (dict(labels=np.full(10, 300, np.int16)), "labels: 10 labels outside 0..255"),
    ],
)
def test_bad_points_are_rejected_with_field(kwargs, match):
    xyz, rgb = _points()
    args = dict(xyz=xyz, rgb=rgb, labels=None) | kwargs
    with pytest.raises(SceneError, match=match):
        Scene.create("s1", args["xyz"], args["rgb"], args["labels"], source="s1.pth")


def test_depth_size_mismatch_names_scene_view_and_file():
    xyz, rgb = _points()
    view = _view("7", depth_shape=(3, 6))
    view = View(**{**view.__dict__, "source": "s3://b/s1/depth/7.png"})
    with pytest.raises(SceneError, match=r"scene 's1': view 7.depth: size 6x3 differs from the colour image 6x4 \(file s3://b/s1/depth/7.png\)"):
        Scene.create("s1", xyz, rgb, views=[view])


def test_non_rigid_and_singular_poses_are_errors():
    xyz, rgb = _points()
    shear = np.eye(4)
    shear[0, 1] = 0.5
    with pytest.raises(SceneError, match="not orthonormal"):
        Scene.create("s1", xyz, rgb, views=[_view(pose=shear)])
    singular = np.eye(4)
    singular[2, 2] = 0
    with pytest.raises(SceneError, match="singular"):
        Scene.create("s1", xyz, rgb, views=[_view(pose=singular)])


def test_pose_problem_accepts_rigid_transforms():
    angle = 0.3
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    pose[:3, 3] = [1, 2, 3]
    assert pose_problem(pose) is None
    flipped = pose.copy()
    flipped[:3, 1:3] *= -1  # Matterport's OpenGL->OpenCV flip keeps the determinant at +1
    assert pose_problem(flipped) is None
    mirror = np.diag([1.0, 1, -1, 1])
    assert "reflection" in pose_problem(mirror)


def test_view_without_depth_is_valid():
    xyz, rgb = _points()
    scene = Scene.create("s1", xyz, rgb, views=[_view(depth_shape=False)])
    assert scene.views[0].depth is None
