import io

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from PIL import Image

from openscene_ray.evaluation.metrics import UNKNOWN, EvalCounts, compute_metrics
from openscene_ray.evaluation.plots import (
    BAR_COLOR,
    MIOU_COLOR,
    confusion_heatmap_png,
    iou_bar_chart_png,
    markdown_table,
)
from openscene_ray.kernel import storage
from openscene_ray.kernel.ply import (
    PlyError,
    ply_bytes,
    read_ply,
    read_ply_points,
    write_ply,
)
from openscene_ray.kernel.visual import (
    IGNORE_COLOR,
    UNKNOWN_COLOR,
    heatmap_colors,
    label_colors,
    label_palette,
    render_points,
    render_points_png,
)

VIRIDIS = colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255


def _png(uri):
    image = Image.open(io.BytesIO(storage.read_bytes(uri)))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(np.int64)


def _viridis_value(rgb):
    """Invert the colormap: the value whose viridis colour is nearest to ``rgb``."""
    return float(np.argmin(((VIRIDIS - rgb) ** 2).sum(axis=1)) / 255)


def _mask_of(image, colour, tol=40):
    return np.abs(image - np.asarray(to_rgb(colour)) * 255).sum(axis=2) < tol


CONF = np.array([[50, 30, 15, 5], [0, 100, 0, 0], [10, 20, 30, 40], [1, 2, 3, 94]])


@pytest.mark.parametrize("normalize", ["true", "pred", None])
def test_confusion_heatmap_cells_encode_the_normalised_values(tmp_path, normalize):
    uri = str(tmp_path / "conf.png")
    info = confusion_heatmap_png(CONF, ["wall", "floor", "chair", "table"], uri, normalize=normalize, size=(800, 700))
    img = _png(uri)
    assert info.size == (800, 700) and img.shape == (700, 800, 3)
    assert img.std() > 20
    if normalize == "true":
        expected = CONF / CONF.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        expected = CONF / CONF.sum(axis=0, keepdims=True)
    else:
        expected = CONF / CONF.max()
    left, top, right, bottom = info.axes_box
    cw, ch = (right - left) / 4, (bottom - top) / 4
    sampled = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):  # sample off-centre, away from the value printed in the cell
            sampled[i, j] = _viridis_value(img[int(top + (i + 0.2) * ch), int(left + (j + 0.2) * cw)])
    np.testing.assert_allclose(sampled, expected, atol=0.01)
    order = np.argsort(expected, axis=None, kind="stable")
    assert np.all(np.diff(sampled.reshape(-1)[order]) >= -0.005)  # monotone in the value


def test_iou_bar_heights_are_proportional_to_the_ious(s3_server):
    iou = [0.1, 0.35, float("nan"), 0.6, 0.95, 0.0]
    names = ["wall", "floor", "absent", "chair", "table", "sink"]
    uri = f"s3://{s3_server.bucket()}/report/iou.png"
    info = iou_bar_chart_png(iou, names, uri, miou=0.4, size=(900, 500))
    img = _png(uri)
    assert info.size == (900, 500) and img.shape == (500, 900, 3)
    left, top, right, bottom = info.axes_box
    bar = _mask_of(img, BAR_COLOR)
    width = (right - left) / len(iou)
    for k, value in enumerate(iou):
        column = bar[int(top) : int(bottom), int(left + (k + 0.5) * width)]
        rows = np.flatnonzero(column)
        if not np.isfinite(value) or value == 0:
            assert rows.size == 0, names[k]
            continue
        height_px = (bottom - top) - rows.min()
        assert height_px == pytest.approx(value * (bottom - top), abs=2.5), names[k]
    red_rows = np.flatnonzero(_mask_of(img, MIOU_COLOR)[int(top) : int(bottom)].any(axis=1))
    assert np.median(red_rows) + top == pytest.approx(bottom - 0.4 * (bottom - top), abs=2.5)


def test_markdown_table_shows_percentages_and_the_mean_convention():
    counts = EvalCounts.from_predictions(np.array([0, 0, 1, 1, UNKNOWN]), np.array([0, 0, 1, 0, 1]), 3)
    metrics = compute_metrics(counts.confusion, counts.unknown)
    table = markdown_table(metrics, ["wall", "floor", "chair"])
    lines = table.strip().splitlines()
    assert lines[0] == "| class | IoU (%) | Acc (%) |"
    assert lines[2] == "| wall | 66.7 | 66.7 |"  # TP 2, FN 1 -> 2/3; acc 2/3
    assert lines[3] == "| floor | 50.0 | 50.0 |"  # TP 1, FP 1 -> 1/2; acc 1/2 (one unknown point)
    assert lines[4] == "| chair | – | – |"
    assert lines[5] == "| **mean (2 of 3 classes present)** | **58.3** | **58.3** |"
    compat = markdown_table(compute_metrics(counts.confusion, counts.unknown, openscene_compat=True),
                            ["wall", "floor", "chair"])
    last = compat.strip().splitlines()[-1]
    assert last == "| **mean (sum over present / 3, openscene-compatible)** | **38.9** | **38.9** |"


def test_ply_round_trip_through_storage(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.standard_normal((1000, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (1000, 3), dtype=np.uint8)
    for uri in (str(tmp_path / "cloud.ply"), "memory://ply-test/cloud.ply"):
        size = write_ply(uri, xyz, rgb)
        data = storage.read_bytes(uri)
        assert len(data) == size and data.startswith(b"ply\nformat binary_little_endian 1.0\n")
        assert len(data) - data.index(b"end_header\n") - len(b"end_header\n") == 1000 * 15
        got_xyz, got_rgb = read_ply(data)
        np.testing.assert_array_equal(got_xyz, xyz)
        np.testing.assert_array_equal(got_rgb, rgb)
    with pytest.raises(ValueError, match="uint8"):
        write_ply(str(tmp_path / "bad.ply"), xyz, rgb.astype(np.float32))
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(b"solid ascii stl")


def _binary_ply(byte_order: str, props: list[tuple[str, str, str]], columns: dict, trailer: str = "") -> bytes:
    """A binary PLY of ``props`` (PLY type, name, numpy kind) filled from ``columns``."""
    prefix = {"binary_little_endian": "<", "binary_big_endian": ">"}[byte_order]
    vertices = np.zeros(len(columns["x"]), dtype=[(name, prefix + kind) for _, name, kind in props])
    for name, values in columns.items():
        vertices[name] = values
    header = f"ply\nformat {byte_order} 1.0\ncomment test\nelement vertex {len(vertices)}\n"
    header += "".join(f"property {ply_type} {name}\n" for ply_type, name, _ in props) + trailer + "end_header\n"
    return header.encode() + vertices.tobytes()


def test_ply_reader_reads_ascii_and_both_byte_orders_with_optional_colour_and_labels():
    xyz = np.array([[0.5, -1.0, 2.0], [1.0, 2.0, 3.0], [-4.0, 0.0, 0.25]])
    rgb = np.array([[0, 128, 255], [7, 8, 9], [255, 0, 1]])
    labels = np.array([3, 255, -100])
    columns = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2]}
    props = [("float", "x", "f4"), ("float", "y", "f4"), ("double", "z", "f8"), ("float", "nx", "f4"),
             ("uchar", "red", "u1"), ("uchar", "green", "u1"), ("uchar", "blue", "u1"), ("short", "label", "i2")]
    faces = "element face 0\nproperty list uchar int vertex_indices\n"
    for byte_order in ("binary_little_endian", "binary_big_endian"):
        cloud = read_ply_points(_binary_ply(byte_order, props, {**columns, "label": labels}, faces), "c.ply")
        assert cloud.xyz.dtype == np.float32 and np.array_equal(cloud.xyz, xyz.astype(np.float32))
        assert cloud.rgb.dtype == np.uint8 and np.array_equal(cloud.rgb, rgb)
        assert cloud.labels.tolist() == [3, 255, -100]
        bare = read_ply_points(_binary_ply(byte_order, props[:3], {k: columns[k] for k in "xyz"}), "c.ply")
        assert np.array_equal(bare.xyz, xyz.astype(np.float32)) and bare.rgb is None and bare.labels is None
    ascii_ply = (
        b"ply\nformat ascii 1.0\nelement vertex 3\nproperty double x\nproperty double y\nproperty double z\n"
        b"property float red\nproperty float green\nproperty float blue\nproperty int label\n"
        b"element face 1\nproperty list uchar int vertex_indices\nend_header\n"
        b"0.5 -1 2 0 0.5 1 3\n1 2 3 0.2 0.4 0.6 255\n-4 0 0.25 1 0 0 -100\n3 0 1 2\n"
    )
    cloud = read_ply_points(ascii_ply, "a.ply")
    assert np.array_equal(cloud.xyz, xyz.astype(np.float32))
    assert cloud.rgb.tolist() == [[0, 128, 255], [51, 102, 153], [255, 0, 0]]  # floats in [0,1] scaled by 255
    assert cloud.labels.tolist() == [3, 255, -100]
    empty = read_ply_points(b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                            b"property float z\nend_header\n", "e.ply")
    assert empty.xyz.shape == (0, 3) and empty.rgb is None
    got_xyz, got_rgb = read_ply(ply_bytes(xyz.astype(np.float32), rgb.astype(np.uint8)))  # our own writer's output
    assert np.array_equal(got_xyz, xyz.astype(np.float32)) and np.array_equal(got_rgb, rgb)


def test_ply_reader_errors_name_the_file_and_the_reason():
    props = [("float", "x", "f4"), ("float", "y", "f4"), ("float", "z", "f4")]
    good = _binary_ply("binary_big_endian", props, {"x": [1.0, 2.0], "y": [3.0, 4.0], "z": [5.0, 6.0]})
    header = b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
    cases = {
        good[:-1]: "PLY body is shorter than its header says",
        b"solid ascii stl\n": "not a PLY file",
        b"ply\nformat ascii 1.0\nelement vertex 1\n": "not a PLY file",
        good.replace(b"binary_big_endian", b"binary_middle_endian"): "unsupported PLY format 'binary_middle_endian'",
        header.replace(b"float y", b"list uchar int y") + b"end_header\n": "unsupported vertex property",
        header.replace(b"property float z\n", b"") + b"end_header\n1 2\n4 5\n": "PLY has no vertex element with x, y",
        header + b"end_header\n1 2 3\n": r"ASCII PLY body has shape \[1, 3\], expected \[2,3\]",
        header + b"end_header\n1 2 3\n4 five 6\n": "malformed ASCII PLY body",
    }
    for data, reason in cases.items():
        with pytest.raises(PlyError, match=rf"^scans/room\.ply: {reason}") as caught:
            read_ply_points(data, "scans/room.ply")
        assert caught.value.uri == "scans/room.ply"
    with pytest.raises(PlyError, match="no red, green, blue"):
        read_ply(good, "bare.ply")


def test_heatmap_colours_run_from_blue_to_yellow():
    values = np.array([0.2, -0.1, 0.5, np.nan, 0.35])
    colors = heatmap_colors(values)
    low, high = colors[1].astype(int), colors[2].astype(int)
    assert low[2] > low[0] and low[2] > low[1]  # lowest value: blue dominates
    assert high[0] > 200 and high[1] > 200 and high[2] < 80  # highest value: yellow
    assert tuple(colors[3]) == UNKNOWN_COLOR
    luminance = colors[[1, 0, 4, 2]].astype(float) @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(luminance) > 0)  # lightness increases with the value
    # fixed limits clip, so colours are comparable across queries
    fixed = heatmap_colors([-5.0, 0.0, 0.5, 1.0, 9.0], vmin=0.0, vmax=1.0)
    np.testing.assert_array_equal(fixed[0], fixed[1])
    np.testing.assert_array_equal(fixed[3], fixed[4])
    assert not np.array_equal(fixed[1], fixed[2])


def test_label_colours_are_distinct_and_mark_ignore_and_unknown():
    palette = label_palette(160)
    assert len(np.unique(palette, axis=0)) == 160
    greyish = (palette.max(axis=1).astype(int) - palette.min(axis=1)) < 30
    assert not greyish.any()  # no class colour can be mistaken for ignore (black) or unknown (grey)
    colors = label_colors(np.array([0, 3, 255, -100, UNKNOWN, 20]), 20)
    np.testing.assert_array_equal(colors[:2], palette[[0, 3]])  # a class keeps its colour for any K
    assert [tuple(c) for c in colors[2:]] == [IGNORE_COLOR, IGNORE_COLOR, UNKNOWN_COLOR, IGNORE_COLOR]


RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def test_top_view_places_points_and_keeps_the_highest():
    xyz = np.array([[1, 1, 0], [-1, -1, 0], [1, -1, 0], [-1, 1, 0], [-1, 1, 2.0]], dtype=np.float32)
    rgb = np.array([RED, GREEN, BLUE, BLUE, RED], dtype=np.uint8)
    img = render_points(xyz, rgb, 101, 101, view="top", point_radius=1)
    # 101 px with a 4 px margin: x,y in [-1,1] map to columns/rows 4..96, +y is up
    assert tuple(img[4, 96]) == RED and tuple(img[5, 95]) == RED  # (1,1): top right, 3x3 splat
    assert tuple(img[96, 4]) == GREEN  # (-1,-1): bottom left
    assert tuple(img[96, 96]) == BLUE  # (1,-1): bottom right
    assert tuple(img[4, 4]) == RED  # (-1,1): two points, the one at z=2 is on top
    assert tuple(img[50, 50]) == WHITE and tuple(img[7, 96]) == WHITE
    assert (img != 255).any(axis=2).sum() == 4 * 9


def test_side_view_z_buffer_and_png_output(tmp_path):
    xyz = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    rgb = np.array([RED, GREEN, BLUE], dtype=np.uint8)
    uri = str(tmp_path / "side.png")
    image = render_points_png(xyz, rgb, uri, width=60, height=40, view="side", point_radius=0)
    img = _png(uri)
    np.testing.assert_array_equal(img, image)
    # "side" looks from +x: the point at x=1 hides the one at x=0; z=1 is above it
    ys, xs = np.nonzero((img != 255).any(axis=2))
    assert len(ys) == 2
    colours = {tuple(img[y, x]) for y, x in zip(ys, xs)}
    assert colours == {GREEN, BLUE}
    (gy,), (by,) = np.nonzero((img == GREEN).all(axis=2))[0], np.nonzero((img == BLUE).all(axis=2))[0]
    assert by < gy


def test_render_camera_sees_what_the_camera_sees():
    """A red square in front of the camera and a blue one behind it (occluded) and one behind the
    camera (dropped): the image centre is red, nothing is blue, the square's size follows fx / z."""
    from openscene_ray.kernel.visual import render_camera

    grid = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 60), np.linspace(-0.5, 0.5, 60)), -1).reshape(-1, 2)
    front = np.c_[grid, np.full(len(grid), 2.0)]
    back = np.c_[grid * 4, np.full(len(grid), 4.0)]  # twice as wide in the image as the red one
    behind = np.c_[grid, np.full(len(grid), -2.0)]
    xyz = np.concatenate([front, back, behind]).astype(np.float32)
    rgb = np.concatenate([np.tile([255, 0, 0], (len(grid), 1)), np.tile([0, 0, 255], (len(grid), 1)),
                          np.tile([0, 255, 0], (len(grid), 1))]).astype(np.uint8)  # fmt: skip
    k = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])
    image = render_camera(xyz, rgb, k, np.eye(4), 160, 120)
    assert tuple(image[60, 80]) == (255, 0, 0)
    red = np.all(image == (255, 0, 0), axis=-1)
    assert abs(red.any(axis=0).sum() - 100 * 1.0 / 2.0) <= 3  # 1 m wide at 2 m: fx * 1 / 2 = 50 px
    assert not np.any(np.all(image == (0, 255, 0), axis=-1))  # behind the camera
    blue = np.all(image == (0, 0, 255), axis=-1)
    assert blue.any() and not (blue & red).any() and not blue[40:80, 55:105].any()  # occluded by red
