"""Arrays as ``.npy`` bytes, the one way they are stored here (cached text embeddings, superpixel
embeddings, mask hierarchies, camera matrices): never with pickles."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["encode_npy", "load_npy"]


def encode_npy(array: np.ndarray) -> bytes:
    """``array`` as ``.npy`` bytes (C order; an object array is refused: no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes; ValueError for a pickled, truncated or foreign file (callers
    add the file's name)."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"not a plain .npy array ({exc})") from None
