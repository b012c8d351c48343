"""PLY point clouds: the one writer (binary xyz float32 + rgb uint8) and the one reader.

The reader takes the ``vertex`` element (the first element) of ASCII and binary (little- or
big-endian) PLY files with scalar properties of any PLY type: ``x, y, z``, optional
``red, green, blue`` (integers 0..255, or floats in [0,1]) and an optional ``label``. Later
elements (faces) are ignored. Errors are :class:`PlyError`, naming the file and the reason.

Everything is written through :func:`openscene_ray.kernel.storage.write_bytes`, so local paths,
``s3://`` and ``memory://`` URIs all work.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from openscene_ray.kernel import storage

__all__ = ["PlyError", "PlyPoints", "check_points", "ply_bytes", "read_ply", "read_ply_points", "write_ply"]

_VERTEX_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_BYTE_ORDERS = {"binary_little_endian": "<", "binary_big_endian": ">"}


class PlyError(ValueError):
    """A PLY file that cannot be read; the message names the file and the reason."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason


@dataclass(frozen=True)
class PlyPoints:
    """The vertices of a PLY file: xyz float32 [N,3], rgb uint8 [N,3] or None, labels [N] (as stored) or None."""

    xyz: np.ndarray
    rgb: np.ndarray | None
    labels: np.ndarray | None


def check_points(xyz, rgb) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz [N,3], rgb uint8 [N,3])`` as arrays; ValueError on wrong shapes, dtypes or non-finite xyz."""
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be [N,3], got {xyz.shape}")
    if rgb.shape != xyz.shape or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 [N,3] matching xyz, got {rgb.dtype} {rgb.shape}")
    if not np.all(np.isfinite(xyz)):
        raise ValueError("xyz contains NaN or inf")
    return xyz, rgb


def ply_bytes(xyz, rgb) -> bytes:
    """Binary little-endian PLY with float x,y,z and uchar red,green,blue per vertex."""
    xyz, rgb = check_points(xyz, rgb)
    vertices = np.empty(len(xyz), dtype=_VERTEX_DTYPE)
    for i, axis in enumerate("xyz"):
        vertices[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = rgb[:, i]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment openscene-ray\n"
        f"element vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    return header.encode("ascii") + vertices.tobytes()


def write_ply(uri: str, xyz, rgb) -> int:
    """Write a coloured point cloud as binary PLY to ``uri``; returns the size in bytes."""
    data = ply_bytes(xyz, rgb)
    storage.write_bytes(uri, data)
    return len(data)


def read_ply_points(data: bytes, uri: str = "<PLY data>") -> PlyPoints:
    """The vertices of a PLY file (ASCII or binary, either byte order); ``uri`` names it in errors."""
    fmt, count, props, body = _read_header(data, uri)
    if fmt == "ascii":
        columns = _ascii_columns(data[body:], count, [name for name, _ in props], uri)
    elif fmt in _BYTE_ORDERS:
        columns = _binary_columns(data, body, count, props, _BYTE_ORDERS[fmt], uri)
    else:
        raise PlyError(uri, f"unsupported PLY format {fmt!r}")
    xyz = np.stack([columns["x"], columns["y"], columns["z"]], axis=1).astype(np.float32)
    rgb = None
    if {"red", "green", "blue"} <= columns.keys():
        raw = np.stack([columns["red"], columns["green"], columns["blue"]], axis=1)
        if dict(props)["red"].startswith("f"):
            raw = np.rint(raw * 255.0)
        rgb = np.clip(raw, 0, 255).astype(np.uint8)
    labels = np.ascontiguousarray(columns["label"]) if "label" in columns else None
    return PlyPoints(xyz, rgb, labels)


def read_ply(data: bytes, uri: str = "<PLY data>") -> tuple[np.ndarray, np.ndarray]:
    """``(xyz float32 [N,3], rgb uint8 [N,3])`` of a coloured PLY, e.g. one :func:`write_ply` wrote."""
    points = read_ply_points(data, uri)
    if points.rgb is None:
        raise PlyError(uri, "PLY has no red, green, blue vertex properties")
    return points.xyz, points.rgb


def _read_header(data: bytes, uri: str) -> tuple[str | None, int, list[tuple[str, str]], int]:
    """``(format, vertex count, [(property, numpy type)], body offset)`` of a PLY header."""
    end = data.find(b"end_header")
    body = data.find(b"\n", end) + 1
    if not data.startswith(b"ply") or end < 0 or body == 0:
        raise PlyError(uri, "not a PLY file")
    fmt, count, props, element = None, 0, [], None
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            if element == "vertex":
                break  # only the first element (vertex) is read
            element = words[1]
            if element != "vertex":
                raise PlyError(uri, f"the first PLY element must be 'vertex', got {element!r}")
            if not words[2].isdigit():
                raise PlyError(uri, f"malformed element line {line.strip()!r}")
            count = int(words[2])
        elif words[0] == "property" and element == "vertex":
            if words[1] == "list" or words[1] not in _PLY_TYPES or len(words) != 3:
                raise PlyError(uri, f"unsupported vertex property {line.strip()!r}")
            props.append((words[2], _PLY_TYPES[words[1]]))
    if element != "vertex" or not {"x", "y", "z"} <= {name for name, _ in props}:
        raise PlyError(uri, "PLY has no vertex element with x, y, z")
    return fmt, count, props, body


def _ascii_columns(body: bytes, count: int, names: list[str], uri: str) -> dict[str, np.ndarray]:
    """The vertex columns (float64) of an ASCII PLY body: the first ``count`` lines."""
    if count == 0:
        return {name: np.zeros(0) for name in names}
    lines = body.decode("ascii", errors="replace").splitlines()[:count]
    try:
        table = np.loadtxt(io.StringIO("\n".join(lines)), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise PlyError(uri, f"malformed ASCII PLY body ({exc})") from None
    if table.shape != (count, len(names)):
        raise PlyError(uri, f"ASCII PLY body has shape {list(table.shape)}, expected [{count},{len(names)}]")
    return {name: table[:, i] for i, name in enumerate(names)}


def _binary_columns(
    data: bytes, body: int, count: int, props: list[tuple[str, str]], byte_order: str, uri: str
) -> dict[str, np.ndarray]:
    """The vertex columns (as declared) of a binary PLY body starting at offset ``body``."""
    dtype = np.dtype([(name, byte_order + kind) for name, kind in props])
    if len(data) - body < dtype.itemsize * count:
        raise PlyError(uri, "PLY body is shorter than its header says")
    vertices = np.frombuffer(data, dtype=dtype, count=count, offset=body)
    return {name: vertices[name] for name, _ in props}
