"""Load the reference's ``.pth`` scene files without executing code.

OpenScene's preprocessed 3D files are ``torch.save``/``pickle`` dumps of a tuple of numpy arrays.
A plain unpickler would run any callable the file names (``os.system`` and friends). This one
admits only what numpy arrays, dtypes and plain containers need and refuses everything else.
Both plain pickles and torch's zip container (``data.pkl`` inside a zip) are handled.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

from openscene_ray.kernel.errors import OpenSceneError

__all__ = ["UnsafePickleError", "loads"]


class UnsafePickleError(OpenSceneError, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (and would run code if loaded normally)."""


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles of arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "tuple"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "complex"),
    ("builtins", "bool"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # numpy arrays pickled under protocol 2 encode their buffer this way
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refused to load {module}.{name}; only numpy arrays and plain "
            "containers are allowed in scene files"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._source}: the file holds torch tensors (persistent ids); "
            "re-save it with numpy arrays or load it with torch.load(weights_only=True)"
        )


def loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only numpy arrays and plain containers."""
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not names:
                raise UnsafePickleError(f"{source}: zip container without data.pkl")
            data = archive.read(names[0])
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None
