"""Fault-injection plugins for tests, imported by Ray workers (``tests/`` is on their PYTHONPATH):
a fusion extractor whose actor process is SIGKILLed once mid-scene, a Train epoch hook that raises
once and one that SIGKILLs its Train worker once.

"Once" is per marker file: the first call to get there creates the marker (atomically, across
processes and restarts) and then fails; every later call runs normally.
"""

import os
import signal

from openscene_ray.extractors import build_extractor
from openscene_ray.kernel import storage


def _first(marker: str, note: str) -> bool:
    """True for exactly one caller per ``marker`` (a local path, created exclusively)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{note} (pid {os.getpid()})\n".encode())
    os.close(fd)
    return True


def crash_once(marker: str, **options):
    """``label-oracle`` whose first ``extract`` call (across all processes) SIGKILLs its own process
    mid-scene: no exception, no cleanup, no ``atexit``, as the OOM killer or a lost node does."""
    inner = build_extractor("label-oracle", **options)

    class CrashOnce:
        name = inner.name
        feature_dim = inner.feature_dim
        text_model = inner.text_model
        device = inner.device

        def extract(self, views, height, width):
            if _first(marker, "fusion actor SIGKILLed in extract"):
                os.kill(os.getpid(), signal.SIGKILL)
            return inner.extract(views, height, width)

    return CrashOnce()


def fail_once(epoch: int, rank: int, at_epoch: int, marker: str, on_rank: int = 0) -> None:
    """Distill epoch hook: rank ``on_rank`` raises at the start of ``at_epoch``, once per ``marker``
    (a storage URI written before raising), to exercise recovery from checkpoints."""
    if epoch != at_epoch or rank != on_rank or storage.exists(marker):
        return
    storage.write_bytes(marker, f"failed at epoch {epoch} on rank {rank}\n".encode())
    raise RuntimeError(f"injected worker failure at epoch {epoch} on rank {rank} (marker {marker})")


def kill_once(epoch: int, rank: int, marker: str, at_epoch: int = 1, on_rank: int = 0) -> None:
    """Distill epoch hook: rank ``on_rank`` SIGKILLs its own Train worker process at the start of
    the first epoch >= ``at_epoch`` (so after a checkpoint), once per ``marker`` (a local path)."""
    if epoch >= at_epoch and rank == on_rank and _first(marker, f"Train worker SIGKILLed at epoch {epoch}"):
        os.kill(os.getpid(), signal.SIGKILL)


class MarkerPayload:
    """A pickled object whose unpickling runs code: ``open(marker, "w")`` creates ``marker``. What an
    attacker with write access to run storage would plant in a ``state.pt``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_poisoned_state(path: str, marker: str) -> None:
    """Replace the training state at ``path`` with a ``torch.save`` file carrying a :class:`MarkerPayload`."""
    import torch

    with open(path, "wb") as f:
        torch.save({"model": {}, "epoch": MarkerPayload(marker), "history": []}, f)
