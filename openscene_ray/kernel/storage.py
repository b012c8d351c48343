"""One place that turns URIs into filesystems, with atomic writes.

Supported URIs: plain local paths, ``file://``, ``s3://`` (through s3fs, so MinIO and moto work
with an endpoint override) and ``memory://`` (fsspec's in-process filesystem, for tests).

S3 settings come from :class:`StorageOptions` (``openscene_ray.kernel.s3``, re-exported here),
which defaults to the environment; secrets never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tempfile
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from openscene_ray.kernel.errors import OpenSceneError
from openscene_ray.kernel.s3 import StorageOptions, pyarrow_s3_filesystem, s3_filesystem

__all__ = [
    "absolute_uri",
    "StorageError",
    "StorageOptions",
    "exists",
    "filesystem",
    "join",
    "listdir",
    "glob",
    "read_bytes",
    "write_bytes",
    "read_parquet",
    "read_parquet_metadata",
    "json_metadata",
    "with_json_metadata",
    "write_parquet",
    "to_pyarrow_filesystem",
    "local_copy",
    "remove",
    "ObjectNotFound",
]


class StorageError(OpenSceneError, OSError):
    """An object-storage operation failed; the message names the URI and the reason."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason


class ObjectNotFound(StorageError, FileNotFoundError):
    """The URI names no object (or its bucket does not exist)."""


def _scheme(uri: str) -> str:
    if "://" in uri:
        return uri.split("://", 1)[0].lower()
    return "file"


def filesystem(
    uri: str, options: StorageOptions | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """Resolve ``uri`` to ``(fsspec filesystem, path within it)``."""
    scheme = _scheme(uri)
    if scheme == "file":
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(path))
    if scheme in ("s3", "s3a"):
        return s3_filesystem(options or StorageOptions.from_env()), uri.split("://", 1)[1]
    if scheme == "memory":
        return fsspec.filesystem("memory"), "/" + uri.split("://", 1)[1].lstrip("/")
    raise StorageError(uri, f"unsupported URI scheme {scheme!r} (use a path, file://, s3:// or memory://)")


def to_pyarrow_filesystem(uri: str, options: StorageOptions | None = None):
    """``(pyarrow filesystem, path)`` for handing a URI to pyarrow or Ray Data readers/writers.

    S3 gets pyarrow's native client configured from the same :class:`StorageOptions` as s3fs
    (endpoint, region, credentials), so Ray never falls back to resolving anything against AWS.
    """
    from pyarrow import fs as pafs

    scheme = _scheme(uri)
    if scheme == "file":
        return pafs.LocalFileSystem(), filesystem(uri, options)[1]
    if scheme in ("s3", "s3a"):
        return pyarrow_s3_filesystem(options or StorageOptions.from_env()), uri.split("://", 1)[1]
    fs, path = filesystem(uri, options)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def absolute_uri(uri: str) -> str:
    """``uri`` with a local path made absolute (``~`` expanded); URIs with a scheme are unchanged.

    Configs resolve local paths on the driver, before anything reaches Ray: Ray workers run in
    other working directories, where a relative path names another place (or nothing)."""
    if _scheme(uri) != "file" or uri.startswith("file://"):
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with '/' (local paths use the OS join)."""
    if _scheme(uri) == "file" and not uri.startswith("file://"):
        return os.path.join(uri, *parts)
    return posixpath.join(uri.rstrip("/"), *parts)


def _translate(uri: str, exc: Exception) -> StorageError:
    """Map backend exceptions to errors that name the URI, without leaking credentials."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, FileNotFoundError) or "NoSuchKey" in text or "Not Found" in text:
        reason = "no such object"
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            reason = "bucket does not exist"
        return ObjectNotFound(uri, reason)
    if "NoSuchBucket" in text:
        return ObjectNotFound(uri, "bucket does not exist")
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return StorageError(uri, "access denied (check the S3 credentials and bucket policy)")
    return StorageError(uri, _redact(text))


def _redact(text: str) -> str:
    options = StorageOptions.from_env()
    for secret in (options.access_key_id, options.secret_access_key):
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "**********")
    return text


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(uri, options)
    try:
        return fs.exists(path)
    except Exception as exc:  # noqa: BLE001 - translated below
        error = _translate(uri, exc)
        if isinstance(error, ObjectNotFound):
            return False
        raise error from None


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    fs, path = filesystem(uri, options)
    try:
        return fs.cat_file(path)
    except IsADirectoryError:
        raise StorageError(uri, "is a directory, not an object") from None
    except Exception as exc:  # noqa: BLE001
        raise _translate(uri, exc) from None


def write_bytes(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write ``data`` atomically: readers see the old object, or the whole new one, never a part."""
    fs, path = filesystem(uri, options)
    scheme = _scheme(uri)
    try:
        if scheme == "file":
            _atomic_local_write(path, lambda f: f.write(data))
        else:
            # S3: a single PUT (or a multipart upload completed only at the end); memory: one assignment.
            fs.pipe_file(path, data)
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _translate(uri, exc) from None


def _atomic_local_write(path: str, write) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove(uri: str, recursive: bool = False, options: StorageOptions | None = None) -> None:
    fs, path = filesystem(uri, options)
    try:
        fs.rm(path, recursive=recursive)
    except Exception as exc:  # noqa: BLE001
        raise _translate(uri, exc) from None


def _rejoin(uri: str, path: str) -> str:
    scheme = _scheme(uri)
    if scheme == "file":
        return path if not uri.startswith("file://") else "file://" + path
    if scheme == "memory":
        return "memory://" + path.lstrip("/")
    return f"{scheme}://{path}"


def listdir(uri: str, options: StorageOptions | None = None) -> list[str]:
    """Sorted URIs of the direct children of ``uri`` (empty if it does not exist)."""
    fs, path = filesystem(uri, options)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001
        error = _translate(uri, exc)
        if isinstance(error, ObjectNotFound) and error.reason == "no such object":
            return []
        raise error from None
    return sorted(_rejoin(uri, e) for e in entries if e.rstrip("/") != path.rstrip("/"))


def glob(uri_pattern: str, options: StorageOptions | None = None) -> list[str]:
    fs, pattern = filesystem(uri_pattern, options)
    try:
        return sorted(_rejoin(uri_pattern, p) for p in fs.glob(pattern))
    except Exception as exc:  # noqa: BLE001
        raise _translate(uri_pattern, exc) from None


def read_parquet(
    uri: str, columns: list[str] | None = None, options: StorageOptions | None = None
) -> pa.Table:
    fs, path = filesystem(uri, options)
    try:
        with fs.open(path, "rb") as f:
            return pq.read_table(f, columns=columns)
    except Exception as exc:  # noqa: BLE001
        raise _translate(uri, exc) from None


def read_parquet_metadata(uri: str, options: StorageOptions | None = None) -> dict[str, str]:
    """The file-level key/value metadata of a Parquet object, decoded to str (footer read only)."""
    fs, path = filesystem(uri, options)
    try:
        with fs.open(path, "rb") as f:
            raw = pq.read_metadata(f).metadata or {}
    except Exception as exc:  # noqa: BLE001
        raise _translate(uri, exc) from None
    return {k.decode(): v.decode() for k, v in raw.items()}


def with_json_metadata(table: pa.Table, metadata: Mapping[str, Any]) -> pa.Table:
    """``table`` with ``metadata`` as its schema's key/value metadata, each value JSON-encoded
    (it lands in the Parquet footer; read it back with :func:`json_metadata`)."""
    return table.replace_schema_metadata({k: json.dumps(v) for k, v in metadata.items()})


def json_metadata(raw: Mapping[str | bytes, str | bytes], keys: Collection[str] | None = None) -> dict[str, Any]:
    """The JSON-decoded values of Parquet key/value metadata (a schema's or a footer's), by str key.

    With ``keys``, only those, and each must hold JSON (ValueError naming the key); without, every
    value that is JSON (Arrow's own entries, such as ``ARROW:schema``, are left out)."""
    out = {}
    for key, value in raw.items():
        key = key.decode() if isinstance(key, bytes) else key
        if keys is not None and key not in keys:
            continue
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError) as exc:
            if keys is not None:
                raise ValueError(f"Parquet metadata {key!r} is not JSON ({exc})") from None
    return out


def write_parquet(
    uri: str,
    table: pa.Table,
    options: StorageOptions | None = None,
    row_group_size: int | None = None,
    compression: str = "zstd",
) -> int:
    """Write ``table`` atomically as one Parquet object; returns its size in bytes."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size, compression=compression)
    data = buffer.getvalue()
    write_bytes(uri, data, options)
    return len(data)


def local_copy(uri: str, cache_dir: str, options: StorageOptions | None = None) -> str:
    """A local path holding the object or folder at ``uri``, downloaded once into ``cache_dir``.

    Local URIs are returned as they are. Remote ones are copied into a fresh folder and renamed
    into place, so concurrent workers on one node never see a half-copied model.
    """
    if _scheme(uri) == "file":
        return filesystem(uri, options)[1]
    fs, path = filesystem(uri, options)
    target = os.path.join(cache_dir, uuid.uuid5(uuid.NAMESPACE_URL, uri).hex, posixpath.basename(path.rstrip("/")))
    if os.path.exists(target):
        return target
    staging = f"{target}.partial-{uuid.uuid4().hex}"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", staging, recursive=True)
        else:
            fs.get_file(path, staging)
    except Exception as exc:  # noqa: BLE001
        raise _translate(uri, exc) from None
    if os.path.exists(target):  # another worker on this node won the race; keep its copy
        fs_local = fsspec.filesystem("file")
        fs_local.rm(staging, recursive=True)
    else:
        os.replace(staging, target)
    return target

