import os
import threading

import pyarrow as pa
import pytest

from openscene_ray.kernel import storage
from openscene_ray.kernel.storage import ObjectNotFound, StorageError, StorageOptions


def _table(n=1000):
    return pa.table({"i": pa.array(range(n), pa.int32()), "x": pa.array([float(v) / 3 for v in range(n)])})


@pytest.fixture(params=["local", "memory", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "memory":
        return f"memory://test-{os.getpid()}-{id(request)}"
    server = request.getfixturevalue("s3_server")
    return f"s3://{server.bucket()}/prefix"


def test_bytes_round_trip_and_listing(root):
    a, b = storage.join(root, "dir", "a.bin"), storage.join(root, "dir", "b.bin")
    storage.write_bytes(a, b"alpha")
    storage.write_bytes(b, b"\x00" * 10)
    assert storage.read_bytes(a) == b"alpha"
    assert storage.exists(a) and not storage.exists(storage.join(root, "dir", "c.bin"))
    assert storage.listdir(storage.join(root, "dir")) == [a, b]
    assert storage.glob(storage.join(root, "dir", "*.bin")) == [a, b]
    storage.write_bytes(a, b"replaced")  # overwrite is idempotent, whole-object
    assert storage.read_bytes(a) == b"replaced"
    storage.remove(a)
    assert not storage.exists(a)


def test_parquet_round_trip_with_metadata(root):
    uri = storage.join(root, "t.parquet")
    table = _table().replace_schema_metadata({"extractor": "rgb"})
    size = storage.write_parquet(uri, table, row_group_size=256)
    assert size > 0
    back = storage.read_parquet(uri)
    assert back.equals(table)
    assert storage.read_parquet(uri, columns=["i"]).column_names == ["i"]
    assert storage.read_parquet_metadata(uri)["extractor"] == "rgb"


def test_missing_object_names_the_uri(root):
    uri = storage.join(root, "nope", "missing.bin")
    with pytest.raises(ObjectNotFound, match="missing.bin.*no such object"):
        storage.read_bytes(uri)
    with pytest.raises(ObjectNotFound, match="missing.parquet"):
        storage.read_parquet(storage.join(root, "missing.parquet"))
    assert storage.listdir(storage.join(root, "nope")) == []


def test_missing_bucket_is_a_clear_error(s3_server):
    uri = "s3://no-such-bucket-openscene/x.bin"
    with pytest.raises(ObjectNotFound, match="no-such-bucket-openscene.*bucket does not exist"):
        storage.read_bytes(uri)
    with pytest.raises(StorageError, match="no-such-bucket-openscene"):
        storage.write_bytes(uri, b"x")


def test_local_write_is_atomic(tmp_path):
    """A failing writer leaves the previous object intact and no temporary files behind."""
    uri = str(tmp_path / "obj.bin")
    storage.write_bytes(uri, b"old")

    class Boom(Exception):
        pass

    def failing(f):
        f.write(b"partial")
        raise Boom

    with pytest.raises(Boom):
        storage._atomic_local_write(uri, failing)
    assert storage.read_bytes(uri) == b"old"
    assert os.listdir(tmp_path) == ["obj.bin"]


def test_concurrent_readers_never_see_partial_objects(root):
    """Readers racing a writer see either the old or the new object, whole."""
    uri = storage.join(root, "race.bin")
    old, new = b"a" * 200_000, b"b" * 300_000
    storage.write_bytes(uri, old)
    seen = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(storage.read_bytes(uri))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(5):
        storage.write_bytes(uri, new)
        storage.write_bytes(uri, old)
    stop.set()
    for t in threads:
        t.join()
    assert seen <= {old, new} and seen


def test_credentials_never_appear_in_repr_or_errors(s3_server, monkeypatch):
    options = StorageOptions.from_env()
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert secret not in repr(options) and secret not in str(options)
    assert os.environ["AWS_ACCESS_KEY_ID"] not in repr(options)
    with pytest.raises(StorageError) as info:
        storage.read_bytes("s3://no-such-bucket-openscene/k")
    assert secret not in str(info.value)
    # an error whose backend text echoes the secret is redacted
    redacted = storage._translate("s3://b/k", RuntimeError(f"signature {secret} mismatch"))
    assert secret not in str(redacted) and "**********" in str(redacted)


def test_local_copy_caches_remote_folders(s3_server, tmp_path):
    bucket = s3_server.bucket()
    storage.write_bytes(f"s3://{bucket}/model/saved_model.pb", b"pb")
    storage.write_bytes(f"s3://{bucket}/model/variables/v.index", b"idx")
    first = storage.local_copy(f"s3://{bucket}/model", str(tmp_path))
    assert open(os.path.join(first, "variables", "v.index"), "rb").read() == b"idx"
    assert storage.local_copy(f"s3://{bucket}/model", str(tmp_path)) == first
    assert storage.local_copy(str(tmp_path / "x"), str(tmp_path)) == str(tmp_path / "x")


def test_unsupported_scheme():
    with pytest.raises(StorageError, match="unsupported URI scheme 'gs'"):
        storage.filesystem("gs://bucket/x")


def test_s3_listings_see_objects_written_by_other_processes(s3_server):
    """Actors and reruns write the buckets a driver lists: a listing is never served from a cache."""
    import boto3

    bucket = s3_server.bucket()
    storage.write_bytes(f"s3://{bucket}/index/a.parquet", b"a")
    assert [u.rsplit("/", 1)[1] for u in storage.listdir(f"s3://{bucket}/index")] == ["a.parquet"]
    other = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")  # another writer
    other.put_object(Bucket=bucket, Key="index/b.parquet", Body=b"b")
    assert [u.rsplit("/", 1)[1] for u in storage.listdir(f"s3://{bucket}/index")] == ["a.parquet", "b.parquet"]
