"""The shard format: fp16 and int8 encodings, read back transparently by every reader."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from openscene_ray.kernel.features import (
    INT8_LEVELS,
    decode_features,
    encode_int8,
    read_features,
    write_features,
)


def _features(m=500, c=64, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((m, c)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    f[:5] *= 0.01  # small-norm rows (points seen by disagreeing views) keep their own scale
    f[5] = 0.0
    return f


def test_int8_round_trip_is_within_half_a_step_per_row():
    f = _features()
    q, scale = encode_int8(f)
    assert q.dtype == np.int8 and scale.dtype == np.float16 and np.abs(q).max() == INT8_LEVELS
    import pyarrow as pa

    column = pa.FixedSizeListArray.from_arrays(pa.array(q.reshape(-1), pa.int8()), f.shape[1])
    back = decode_features(column, pa.array(scale, pa.float16())).astype(np.float32)
    step = scale.astype(np.float32)[:, None] / INT8_LEVELS
    # half a quantisation step, plus fp16 rounding of the scale and of the decoded value
    assert np.all(np.abs(back - f) <= 0.5 * step + 2e-3 * np.abs(f) + 1e-7)
    assert np.all(back[5] == 0)


@pytest.mark.parametrize("encoding", ["fp16", "int8"])
def test_shards_read_back_the_same_whatever_the_encoding(tmp_path, encoding):
    f = _features()
    index = np.arange(0, 1000, 2, dtype=np.int32)
    uri = str(tmp_path / f"{encoding}.parquet")
    write_features(uri, "room", index, f, np.full(len(f), 3, np.uint16), {"feature_dim": 64, "n_points": 1000},
                   encoding=encoding)  # fmt: skip
    shard = read_features(uri)
    assert shard.metadata["encoding"] == encoding and shard.features.dtype == np.float16
    np.testing.assert_array_equal(shard.point_index, index)
    cosine = np.sum(shard.features.astype(np.float32) * f, axis=1) / np.maximum(
        np.linalg.norm(shard.features.astype(np.float32), axis=1) * np.linalg.norm(f, axis=1), 1e-12)
    assert cosine[6:].min() > (0.9999 if encoding == "fp16" else 0.999)
    dense, mask = shard.dense(1000)
    assert mask.sum() == len(index) and not dense[1::2].any()
    types = {field.name: str(field.type) for field in pq.read_schema(uri)}
    assert types["feature"] == ("fixed_size_list<element: halffloat>[64]" if encoding == "fp16"
                                else "fixed_size_list<element: int8>[64]")  # fmt: skip
    assert ("feature_scale" in types) == (encoding == "int8")


def test_int8_halves_the_bytes_of_a_shard(tmp_path):
    f = _features(m=4000, c=256, seed=1)
    sizes = {}
    for encoding in ("fp16", "int8"):
        sizes[encoding] = write_features(str(tmp_path / f"{encoding}.parquet"), "room", np.arange(4000), f,
                                         np.ones(4000, np.uint16), {}, encoding=encoding)  # fmt: skip
    assert sizes["int8"] < 0.6 * sizes["fp16"]


def test_unknown_encoding_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown shard encoding 'int4'"):
        write_features(str(tmp_path / "x.parquet"), "room", np.arange(3), np.ones((3, 4)), None, {}, encoding="int4")


def test_database_search_reads_int8_shards(tmp_path):
    from openscene_ray.query.config import SearchSettings
    from openscene_ray.query.database import search_database

    f = _features(m=300, c=32, seed=2)
    query = f[7:8] / np.linalg.norm(f[7])
    results = {}
    for encoding in ("fp16", "int8"):
        folder = tmp_path / encoding
        write_features(str(folder / "room.parquet"), "room", np.arange(300), f, np.ones(300, np.uint16), {},
                       encoding=encoding)  # fmt: skip
        found = search_database(str(folder), query, ["q"], SearchSettings(top_points=5, batch_rows=64))
        results[encoding] = found["results"][0]["points"]
    assert [p["point_index"] for p in results["int8"]][0] == 7
    assert [p["point_index"] for p in results["int8"]] == [p["point_index"] for p in results["fp16"]]
