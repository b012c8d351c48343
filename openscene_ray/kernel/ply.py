"""Binary PLY point clouds (xyz float32 + rgb uint8): the one writer and reader.

Everything is written through :func:`openscene_ray.kernel.storage.write_bytes`, so local paths,
``s3://`` and ``memory://`` URIs all work.
"""

from __future__ import annotations

import numpy as np

from openscene_ray.kernel import storage

__all__ = ["check_points", "ply_bytes", "read_ply", "write_ply"]

_VERTEX_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2",
    "ushort": "<u2", "uint16": "<u2", "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}  # fmt: skip


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


def read_ply(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse a binary little-endian vertex-only PLY: ``(xyz float32 [N,3], rgb uint8 [N,3])``."""
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError("not a PLY file (missing 'ply' magic or 'end_header')")
    lines = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError("only binary_little_endian 1.0 PLY is supported")
    count, fields, in_vertex = None, [], False
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"]:
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                count = int(parts[2])
            elif int(parts[2]) > 0:
                raise ValueError(f"unsupported PLY element {parts[1]!r}")
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] == "list" or parts[1] not in _PLY_TYPES:
                raise ValueError(f"unsupported PLY property {line!r}")
            fields.append((parts[2], _PLY_TYPES[parts[1]]))
    if count is None:
        raise ValueError("PLY has no vertex element")
    dtype = np.dtype(fields)
    body = data[end + len(b"end_header\n") :]
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"PLY body holds {len(body)} bytes, expected {count * dtype.itemsize}")
    v = np.frombuffer(body, dtype=dtype, count=count)
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)
    return xyz, rgb
