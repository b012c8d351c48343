"""Everything a page asks the server for, as plain data (no browser, no viser, no Ray).

One :class:`ViewerBackend` serves every page of a viewer: it reads the manifest once, loads a
scene's features on demand through :func:`~openscene_ray.query.scene.load_scene_features` (kept
as the display subsample in a small LRU per (scene, source)), embeds texts with one text encoder
(cached per (model, prompt)) and images through
:func:`~openscene_ray.query.embed.embed_images` (the path of ``query --image``), and searches the
whole fused output with :func:`~openscene_ray.query.database.search_database`, which scans one
shard at a time. Errors a user can fix are :class:`~openscene_ray.kernel.errors.InputError`s
whose message is shown in the page.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time

import numpy as np

from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.features import shard_uri
from openscene_ray.kernel.manifest import read_manifest
from openscene_ray.kernel.text import build_text_encoder, check_text_model
from openscene_ray.query.config import check_template
from openscene_ray.viewer.cache import LRU, DisplayScene, subsample_scene
from openscene_ray.viewer.classes import ClassSet
from openscene_ray.viewer.config import ViewerConfig
from openscene_ray.viewer.display import display_indices
from openscene_ray.viewer.scoring import validate_query

__all__ = ["MAX_IMAGE_BYTES", "ViewerBackend"]

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024 * 1024


class ViewerBackend:
    """Scenes, embeddings and searches for the pages of one viewer (thread-safe)."""

    def __init__(self, config: ViewerConfig):
        self.config = config
        records = read_manifest(config.manifest)
        if not records:
            raise InputError(f"the manifest {config.manifest} has no scenes")
        self.records = {r.scene_id: r for r in records}
        self.scene_ids = [r.scene_id for r in records]
        self.sources = config.sources()
        self.text_model = config.text.spec()
        self._scenes: LRU[DisplayScene] = LRU(config.scene_cache)
        self._embeddings: LRU[np.ndarray] = LRU(config.embedding_cache)
        self._encoder = None
        self._encoder_lock = threading.Lock()

    # scenes ---------------------------------------------------------------------------------
    def check_scene(self, scene_id: str | None) -> str:
        """``scene_id`` when the manifest has it; InputError naming a few known ones otherwise."""
        if scene_id in self.records:
            return scene_id
        some = ", ".join(self.scene_ids[:5]) + (", …" if len(self.scene_ids) > 5 else "")
        raise InputError(f"unknown scene {str(scene_id)[:80]!r}: the manifest has {len(self.scene_ids)} scenes "
                         f"({some})")

    def check_source(self, source: str | None) -> str:
        if source in self.sources:
            return source
        raise InputError(f"feature source {str(source)[:40]!r} is not available: this viewer has "
                         f"{', '.join(self.sources)} (fusion needs --fused, distill a --checkpoint, ensemble both)")

    def scene(self, scene_id: str, source: str) -> DisplayScene:
        """The drawn points of a scene with ``source`` features (loaded once, then cached)."""
        scene_id, source = self.check_scene(scene_id), self.check_source(source)
        return self._scenes.get((scene_id, source), lambda: self._load(scene_id, source))

    def is_cached(self, scene_id: str, source: str) -> bool:
        return (scene_id, source) in self._scenes

    def _load(self, scene_id: str, source: str) -> DisplayScene:
        from openscene_ray.query.scene import load_scene_features

        if source in ("fusion", "ensemble"):
            uri = shard_uri(self.config.fused, scene_id)
            if not storage.exists(uri):
                raise InputError(f"scene {scene_id} has no fused features: {uri} is missing "
                                 "(fuse this scene, or pick another)")
        start = time.perf_counter()
        try:
            full = load_scene_features(self.records[scene_id], source, fused=self.config.fused,
                                       checkpoint=self.config.checkpoint, text=self.config.text,
                                       device=self.config.device)  # fmt: skip
        except (OSError, ValueError) as exc:
            raise InputError(f"scene {scene_id} ({source}) could not be loaded: {exc}") from exc
        if len(full.xyz) == 0:
            raise InputError(f"scene {scene_id} has no points ({self.records[scene_id].points_uri})")
        index = display_indices(len(full.xyz), self.config.display_points, self.config.seed)
        scene = subsample_scene(full, index)
        log.info("loaded %s (%s): %d points, %d drawn, %.2f s", scene_id, source, scene.n_points, len(index),
                 time.perf_counter() - start)  # fmt: skip
        return scene

    def text_model_warning(self, scene: DisplayScene) -> str:
        """A warning when the scene's features were made for another text model (or an
        InputError when the config says ``on_mismatch: error``)."""
        try:
            return check_text_model(scene.features.text_model, self.config.text,
                                    f"the {scene.features.source} features of {scene.scene_id}")  # fmt: skip
        except ValueError as exc:
            raise InputError(str(exc)) from None

    # embeddings -----------------------------------------------------------------------------
    def _encode(self, prompts: tuple[str, ...]) -> np.ndarray:
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = build_text_encoder(self.config.text.encoder, **self.config.text.options)
            return np.asarray(self._encoder.encode(list(prompts)), np.float32)

    def text_embedding(self, text: str, template: str | None = None) -> np.ndarray:
        """float32 ``[1, C]`` embedding of ``template.format(text)`` (cached per model and prompt)."""
        text = validate_query(text)
        if template:
            try:
                check_template(template)
            except ValueError as exc:
                raise InputError(str(exc)) from None
        prompt = template.format(text) if template else text
        return self._embeddings.get(("text", self.text_model, prompt), lambda: self._encode((prompt,)))

    def class_embeddings(self, classes: ClassSet) -> np.ndarray:
        """float32 ``[P, C]`` embeddings of a label set's prompts (cached per model and prompts)."""
        key = ("classes", self.text_model, classes.prompts)
        return self._embeddings.get(key, lambda: self._encode(classes.prompts))

    def image_embedding(self, data: bytes, name: str = "image") -> np.ndarray:
        """float32 ``[1, C]`` CLIP image embedding of an uploaded image (the ``query --image`` path)."""
        if self.config.text.encoder != "open_clip":
            raise InputError(f"image queries need the open_clip text encoder (its image tower); this viewer "
                             f"uses {self.config.text.encoder!r}")
        if not data:
            raise InputError(f"{name} is empty")
        if len(data) > MAX_IMAGE_BYTES:
            raise InputError(f"{name} has {len(data) / 2**20:.1f} MiB; the limit is {MAX_IMAGE_BYTES // 2**20} MiB")
        from PIL import Image, UnidentifiedImageError

        from openscene_ray.query.embed import embed_images

        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{name} is not an image this viewer can read: {exc}") from None
        key = ("image", self.text_model, hashlib.sha256(data).hexdigest())
        return self._embeddings.get(key, lambda: embed_images([image], self.config.text.options, self.config.device))

    def scores(self, scene: DisplayScene, embeddings: np.ndarray) -> np.ndarray:
        """float32 ``[Q, M]`` cosines of the drawn points; InputError when the widths differ."""
        width = scene.features.features.shape[1]
        if embeddings.shape[1] != width:
            raise InputError(f"the text encoder {self.text_model} gives {embeddings.shape[1]}-d embeddings but the "
                             f"{scene.features.source} features of {scene.scene_id} are {width}-d (made for "
                             f"{scene.features.text_model}): configure that model in text:")
        return scene.scores(embeddings)

    # database search ------------------------------------------------------------------------
    def search(self, text: str, template: str | None = None) -> dict:
        """Scenes of the whole fused output ranked for one text query (``search_database``'s result
        for it, plus ``warnings`` and ``failed``)."""
        from openscene_ray.query.database import search_database

        if not self.config.fused:
            raise InputError("the database search needs the fused output (--fused)")
        embedding = self.text_embedding(text, template)
        found = search_database(self.config.fused, embedding, [validate_query(text)], self.config.search,
                                manifest=self.config.manifest, text=self.config.text)  # fmt: skip
        result = found["results"][0]
        result.update(warnings=found["warnings"], failed=found["failed"], scanned=found["scanned"])
        return result
