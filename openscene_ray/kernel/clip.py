"""CLIP text embeddings from open_clip (text encoder kind ``open_clip``) and the CLIP loading
shared with the ``clip-dense`` extractor.

Weights: ``checkpoint`` is a local file, a storage URI such as ``s3://...`` (copied once per node
into :func:`model_cache_dir`) or an open_clip pretrained tag such as ``"openai"`` (downloaded by
open_clip). Files must be state dicts: ``.safetensors``, or ``.pt/.pth/.bin`` read with
``torch.load(weights_only=True)``; nothing is ever unpickled without restriction. TorchScript
archives (the ``clip`` package's ``ViT-L-14-336px.pt``) are refused with a conversion hint. There
is no silent fallback to random weights: without a checkpoint, ``random_init=True`` must be given.

OpenScene uses OpenAI CLIP (ViT-L/14@336px for OpenSeg, ViT-B/32 for LSeg), trained with
QuickGELU. ``quick_gelu=None`` takes the tag's setting for pretrained tags and QuickGELU otherwise;
pass ``quick_gelu=False`` for files trained with plain GELU.

Import order: in a process that may also load TensorFlow, open_clip (or torchvision) must be
imported before tensorflow; the other order aborts the process. open_clip is imported lazily here.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from openscene_ray.kernel import storage
from openscene_ray.kernel.model_specs import DEFAULT_CLIP_ARCH
from openscene_ray.kernel.npy import encode_npy, load_npy
from openscene_ray.kernel.text import register_text_encoder

__all__ = ["ClipWeights", "OpenClipTextEncoder", "load_clip_model", "model_cache_dir", "resolve_clip_weights"]


def model_cache_dir(override: str | None = None) -> str:
    """Local folder for copies of remote models: ``override``, $OPENSCENE_MODEL_CACHE or ~/.cache."""
    return override or os.environ.get("OPENSCENE_MODEL_CACHE") or os.path.expanduser("~/.cache/openscene_ray/models")


@dataclass(frozen=True)
class ClipWeights:
    """Resolved CLIP weights: ``source`` is "file" (``location`` = local path), "tag" or "random"."""

    arch: str
    source: str
    location: str | None
    quick_gelu: bool
    seed: int = 0

    def identity(self) -> str:
        """A stable identity of the weights (content hash for files), for cache keys."""
        if self.source == "file":
            st = os.stat(self.location)
            return "sha256:" + _file_digest(os.path.realpath(self.location), st.st_size, st.st_mtime_ns)
        if self.source == "tag":
            return f"open_clip-tag:{self.location}"
        return f"random-init:seed={self.seed}"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    key = (path, size, mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


def resolve_clip_weights(
    arch: str,
    checkpoint: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    quick_gelu: bool | None = None,
    cache_dir: str | None = None,
) -> ClipWeights:
    """Check the arch and checkpoint, copy remote checkpoints locally, and pin down QuickGELU."""
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(f"open_clip has no architecture {arch!r} (e.g. 'ViT-B-32', 'ViT-L-14-336')")
    if checkpoint is None:
        if not random_init:
            raise ValueError(
                f"open_clip {arch}: no checkpoint given. Pass checkpoint=<file, s3:// URI or open_clip "
                "pretrained tag>, or random_init=True to use random weights explicitly"
            )
        return ClipWeights(arch, "random", None, True if quick_gelu is None else quick_gelu, seed)
    if random_init:
        raise ValueError(f"open_clip {arch}: random_init=True conflicts with checkpoint={checkpoint!r}")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if "://" in checkpoint or os.path.exists(checkpoint):
        local = storage.local_copy(checkpoint, model_cache_dir(cache_dir))
        if not os.path.isfile(local):
            raise ValueError(f"open_clip {arch}: checkpoint {checkpoint!r} is not a file")
        return ClipWeights(arch, "file", local, True if quick_gelu is None else quick_gelu)
    if checkpoint in tags:
        tag_gelu = bool(open_clip.get_pretrained_cfg(arch, checkpoint).get("quick_gelu", False))
        return ClipWeights(arch, "tag", checkpoint, tag_gelu if quick_gelu is None else quick_gelu)
    raise ValueError(
        f"open_clip {arch}: checkpoint {checkpoint!r} is neither an existing file, a storage URI nor a "
        f"pretrained tag of this architecture (tags: {', '.join(tags) or 'none'})"
    )


def _refuse_torchscript(path: str) -> None:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("constants.pkl") for name in archive.namelist()):
                raise ValueError(
                    f"{path} is a TorchScript archive, which cannot be loaded with weights_only=True. "
                    "Convert it once to a state dict (torch.jit.load(p).state_dict() saved with "
                    "safetensors) or use the open_clip/timm release of the same weights"
                )


_MODELS: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_MAX_MODELS = 3


def load_clip_model(weights: ClipWeights, device: str | torch.device = "cpu", text_only: bool = False):
    """An eval-mode open_clip model, cached per process (a full model also serves text-only asks)."""
    device = torch.device(device)
    keys = [(weights, str(device), False)] + ([(weights, str(device), True)] if text_only else [])
    with _MODELS_LOCK:
        for key in keys:
            if key in _MODELS:
                _MODELS.move_to_end(key)
                return _MODELS[key]
        model = _create(weights)
        if text_only:
            model.visual = None
        model = model.to(device).eval().requires_grad_(False)
        _MODELS[keys[-1]] = model
        while len(_MODELS) > _MAX_MODELS:
            _MODELS.popitem(last=False)
        return model


def _create(weights: ClipWeights) -> torch.nn.Module:
    import open_clip

    common = {"force_quick_gelu": weights.quick_gelu, "device": "cpu"}
    if weights.source == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(weights.seed)
            return open_clip.create_model(weights.arch, pretrained=None, **common)
    if weights.source == "file":
        _refuse_torchscript(weights.location)
    return open_clip.create_model(
        weights.arch,
        pretrained=weights.location,
        weights_only=True,
        require_pretrained=True,
        cache_dir=os.path.join(model_cache_dir(), "open_clip"),
        **common,
    )


class OpenClipTextEncoder:
    """Prompts to L2-normalised float32 CLIP text embeddings ``[K, dim]``.

    Embeddings are cached per prompt list in an in-process LRU (``lru_size`` entries) and, when
    ``embedding_cache`` (any storage URI) is set, as ``.npy`` files keyed by a hash of the weights'
    identity (content hash for files), QuickGELU and the prompts.
    """

    def __init__(
        self,
        arch: str = DEFAULT_CLIP_ARCH,
        checkpoint: str | None = None,
        random_init: bool = False,
        device: str = "cpu",
        seed: int = 0,
        quick_gelu: bool | None = None,
        embedding_cache: str | None = None,
        model_cache: str | None = None,
        batch_size: int = 256,
        lru_size: int = 64,
    ):
        import open_clip

        self.weights = resolve_clip_weights(arch, checkpoint, random_init, seed, quick_gelu, model_cache)
        self.device = torch.device(device)
        self.model = load_clip_model(self.weights, self.device, text_only=True)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.name = self.space_id(arch)
        self.dim = int(open_clip.get_model_config(arch)["embed_dim"])
        self.embedding_cache = embedding_cache
        self.batch_size = batch_size
        self._lru: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._lru_size = lru_size

    @staticmethod
    def space_id(arch: str = DEFAULT_CLIP_ARCH, **_unused) -> str:
        """The text-model identity: the architecture (the space any weights of it are trained into)."""
        return f"open_clip:{arch}"

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        key = tuple(prompts)
        if key in self._lru:
            self._lru.move_to_end(key)
            return self._lru[key].copy()
        embeddings = self._read_disk(key) if self.embedding_cache else None
        if embeddings is None:
            embeddings = self._compute(key)
            if self.embedding_cache:
                storage.write_bytes(self._disk_uri(key), encode_npy(embeddings))
        self._lru[key] = embeddings
        while len(self._lru) > self._lru_size:
            self._lru.popitem(last=False)
        return embeddings.copy()

    def _compute(self, prompts: tuple[str, ...]) -> np.ndarray:
        chunks = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                tokens = self.tokenizer(list(prompts[start : start + self.batch_size])).to(self.device)
                features = self.model.encode_text(tokens).float()
                features = torch.nn.functional.normalize(features, dim=-1)
                chunks.append(features.cpu().numpy())
        return np.concatenate(chunks).astype(np.float32)

    def cache_key(self, prompts: Sequence[str]) -> str:
        payload = {
            "arch": self.weights.arch,
            "weights": self.weights.identity(),
            "quick_gelu": self.weights.quick_gelu,
            "prompts": list(prompts),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _disk_uri(self, prompts: tuple[str, ...]) -> str:
        return storage.join(self.embedding_cache, f"{self.cache_key(prompts)}.npy")

    def _read_disk(self, prompts: tuple[str, ...]) -> np.ndarray | None:
        uri = self._disk_uri(prompts)
        try:
            data = storage.read_bytes(uri)
        except storage.ObjectNotFound:
            return None
        try:
            embeddings = load_npy(data)
        except ValueError as exc:
            raise ValueError(f"{uri}: {exc}; delete the file") from None
        if embeddings.shape != (len(prompts), self.dim) or embeddings.dtype != np.float32:
            raise ValueError(
                f"{uri}: cached embeddings have shape {embeddings.shape} {embeddings.dtype}, "
                f"expected ({len(prompts)}, {self.dim}) float32; delete the file"
            )
        return embeddings


register_text_encoder("open_clip", OpenClipTextEncoder)
