"""Fault-injection plugins for tests, imported by Ray workers (``tests/`` is on their PYTHONPATH):
a fusion extractor whose actor process dies once mid-scene, and a Train epoch hook that raises once."""

import os

from openscene_ray.extractors import build_extractor
from openscene_ray.kernel import storage


def crash_once(marker: str, **options):
    """``label-oracle`` whose first ``extract`` call (across all processes) kills its process."""
    inner = build_extractor("label-oracle", **options)

    class CrashOnce:
        name = inner.name
        feature_dim = inner.feature_dim
        text_model = inner.text_model
        device = inner.device

        def extract(self, views, height, width):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return inner.extract(views, height, width)
            os.close(fd)
            os._exit(1)

    return CrashOnce()


def fail_once(epoch: int, rank: int, at_epoch: int, marker: str, on_rank: int = 0) -> None:
    """Distill epoch hook: rank ``on_rank`` raises at the start of ``at_epoch``, once per ``marker``
    (a storage URI written before raising), to exercise recovery from checkpoints."""
    if epoch != at_epoch or rank != on_rank or storage.exists(marker):
        return
    storage.write_bytes(marker, f"failed at epoch {epoch} on rank {rank}\n".encode())
    raise RuntimeError(f"injected worker failure at epoch {epoch} on rank {rank} (marker {marker})")
