"""Load the reference's pickled files without executing code.

OpenScene's preprocessed 3D files are ``torch.save``/``pickle`` dumps of a tuple of numpy arrays.
A plain unpickler would run any callable the file names (``os.system`` and friends). :func:`loads`
admits only what numpy arrays, dtypes and plain containers need and refuses everything else.
Both plain pickles and torch's zip container (``data.pkl`` inside a zip) are handled.

:func:`load_torch_checkpoint` reads model checkpoints in torch's zip container (PyTorch Lightning's
``.ckpt``, e.g. LSeg's ``demo_e200.ckpt``): tensors (torch's persistent ids name the storages in
the archive), plain containers, ``argparse.Namespace`` hyper-parameters, and the Lightning callback
classes that PL < 1.5 used as dictionary keys, which become inert :class:`CallbackKey` stand-ins
(Lightning is never imported). Any other global is refused with an error that names it.
"""

from __future__ import annotations

import argparse
import io
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

from openscene_ray.kernel.errors import OpenSceneError

__all__ = ["CallbackKey", "UnsafePickleError", "load_torch_checkpoint", "loads"]


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


# torch's storage classes as pickled by torch.save (a tensor's persistent id names one of them).
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}  # fmt: skip
# Lightning callbacks that PL < 1.5 stored their state under (the class object as the key).
_CALLBACK_CLASSES = {
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    ("pytorch_lightning.callbacks.early_stopping", "EarlyStopping"),
}
_INERT_CLASSES = {
    ("argparse", "Namespace"): argparse.Namespace,  # hyper-parameters; unpickled without calling __init__
    ("pytorch_lightning.utilities.parsing", "AttributeDict"): dict,  # a dict subclass for hyper-parameters
}


@dataclass(frozen=True)
class CallbackKey:
    """Inert stand-in for a Lightning callback class used as a dictionary key; never callable."""

    module: str
    name: str

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"refused to call {self.module}.{self.name} (a stand-in for a Lightning callback)")


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: torch.dtype


@dataclass(frozen=True)
class _LazyTensor:
    """A tensor whose bytes are read from the archive only if it is kept."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> _LazyTensor:
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"tensor rebuilt from {type(storage).__name__}, not from an archive storage")
    return _LazyTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


_TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): dtype for name, dtype in _STORAGE_DTYPES.items()},
}


class _TorchUnpickler(_RestrictedUnpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TORCH_GLOBALS:
            return _TORCH_GLOBALS[(module, name)]
        if (module, name) in _INERT_CLASSES:
            return _INERT_CLASSES[(module, name)]
        if (module, name) in _CALLBACK_CLASSES:
            return CallbackKey(module, name)
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refused to load {module}.{name}; a checkpoint may hold only tensors, plain "
            "containers, argparse.Namespace and Lightning callback keys"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise UnsafePickleError(f"{self._source}: unexpected persistent id {pid!r:.80}")
        return _Storage(str(pid[2]), pid[1])


def _materialize(obj: Any, read) -> Any:
    """``obj`` with every lazy tensor read from the archive (containers rebuilt, types kept)."""
    if isinstance(obj, _LazyTensor):
        return torch.as_strided(read(obj.storage), obj.size, obj.stride, obj.offset)
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v, read)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, read) for v in obj)
    if isinstance(obj, argparse.Namespace):
        return argparse.Namespace(**_materialize(vars(obj), read))
    return obj


def load_torch_checkpoint(file: str | bytes, source: str | None = None, key: str | None = None) -> Any:
    """Unpickle a ``torch.save`` zip archive (a local path or its bytes) with the restricted
    unpickler (see the module docstring). With ``key``, return only that entry of the top-level
    dict: the tensors of the other entries (optimizer state) are never read."""
    source = source or (file if isinstance(file, str) else "<bytes>")
    handle = io.BytesIO(file) if isinstance(file, bytes) else file
    if not zipfile.is_zipfile(handle):
        raise UnsafePickleError(f"{source}: not a torch zip checkpoint (legacy torch.save files are not supported)")
    with zipfile.ZipFile(handle) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise UnsafePickleError(f"{source}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise UnsafePickleError(f"{source}: big-endian checkpoints are not supported")
        try:
            obj = _TorchUnpickler(io.BytesIO(archive.read(pickles[0])), source).load()
        except UnsafePickleError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
            raise pickle.UnpicklingError(f"{source}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
        if key is not None:
            if not isinstance(obj, dict) or key not in obj:
                raise KeyError(f"{source}: the checkpoint has no top-level {key!r} entry")
            obj = obj[key]
        storages: dict[str, torch.Tensor] = {}

        def read(storage: _Storage) -> torch.Tensor:
            if storage.key not in storages:
                raw = bytearray(archive.read(f"{prefix}data/{storage.key}"))
                storages[storage.key] = torch.frombuffer(raw, dtype=storage.dtype) if raw else torch.empty(0, dtype=storage.dtype)
            return storages[storage.key]

        try:
            return _materialize(obj, read)
        except (KeyError, RuntimeError, ValueError) as exc:  # a storage missing, short or out of bounds
            raise pickle.UnpicklingError(f"{source}: a tensor's data is not in the archive ({type(exc).__name__}: "
                                         f"{exc})") from None  # fmt: skip
