import os
import pickle

import numpy as np
import pytest
import torch

from openscene_ray.kernel import safe_load


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_reference_scene_tuple_loads():
    coords = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    colors = np.zeros((50, 3), np.float64)
    labels = np.full(50, 255.0)
    for protocol in (2, 4, 5):
        out = safe_load.loads(pickle.dumps((coords, colors, labels), protocol=protocol))
        assert np.array_equal(out[0], coords) and out[0].dtype == np.float32
        assert np.array_equal(out[2], labels)


def test_torch_save_zip_of_numpy_loads(tmp_path):
    coords = np.arange(12, dtype=np.float32).reshape(4, 3)
    torch.save((coords, 0, np.ones(4)), tmp_path / "scene.pth")
    out = safe_load.loads((tmp_path / "scene.pth").read_bytes(), "scene.pth")
    assert np.array_equal(out[0], coords) and out[1] == 0


def test_payload_is_refused_and_not_executed():
    data = pickle.dumps((np.zeros(3), _Payload()))
    with pytest.raises(safe_load.UnsafePickleError, match=r"evil\.pth: refused to load posix\.system|refused to load os\.system"):
        safe_load.loads(data, "evil.pth")


def test_torch_tensors_are_refused(tmp_path):
    torch.save((torch.zeros(3),), tmp_path / "t.pth")
    with pytest.raises(safe_load.UnsafePickleError, match="t.pth"):
        safe_load.loads((tmp_path / "t.pth").read_bytes(), "t.pth")


def test_garbage_is_a_clear_error():
    with pytest.raises(pickle.UnpicklingError, match="junk.pth: not a readable pickle"):
        safe_load.loads(b"not a pickle at all", "junk.pth")
