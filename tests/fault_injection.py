"""A plugin extractor for fault-injection tests: the actor process dies once, mid-scene."""

import os

from openscene_ray.extractors import build_extractor


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
