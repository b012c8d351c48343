"""The two lifted 3D representations behind one interface, and their per-scene files.

Both answer :meth:`render_features` ``(camera) -> (features [D, H, W], mask [H, W])``:

* :class:`GaussianScene` (``gaussians``, FiT3D's): the 64-d features of the scene's Gaussians
  rasterised (:mod:`.raster`) and decoded by the scene's ``feat_cnn``; the mask is where the
  accumulated opacity reaches ``min_alpha``.
* :class:`PointScene` (``points``): the fused mean of the backbone's features on the scene's points
  (the fusion stage's :func:`~openscene_ray.fusion.core.fuse_views`), z-buffer splatted
  (:mod:`.splat`); the mask is the pixels a point reaches.

A scene's file is one safetensors object (no pickles), written atomically. Gaussians are stored in
FiT3D's packing (``means3D``, ``shs`` = DC and rest, ``sem``, activated ``opacity`` and ``scales``,
unit ``rotations``, ``feat_cnn.0.weight``); points as ``xyz`` (float64), ``features`` (float16),
``point_index`` and ``n_views`` (rows of the scene's points file). The header's ``fit3d`` entry is
JSON: the kind, the scene, the backbone, the settings and the fitting metrics.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from openscene_ray.fit3d.camera import Camera
from openscene_ray.fit3d.gaussians import FeatureDecoder, GaussianModel
from openscene_ray.fit3d.splat import render_points
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import OpenSceneError

__all__ = ["GaussianScene", "PointScene", "RepresentationError", "load_representation", "read_header",
           "save_representation"]  # fmt: skip

HEADER_KEY = "fit3d"
FORMAT = "openscene-ray/fit3d-scene"
FORMAT_VERSION = 1


class RepresentationError(OpenSceneError, ValueError):
    """A lifted scene file that cannot be read (the message names the file)."""


class GaussianScene:
    """Feature Gaussians and their decoder (see the module docstring)."""

    kind = "gaussians"

    def __init__(self, model: GaussianModel, decoder: FeatureDecoder, min_alpha: float = 0.5, backend: str = "auto"):
        self.model, self.decoder = model, decoder
        self.min_alpha, self.backend = min_alpha, backend

    @property
    def feature_dim(self) -> int:
        return int(self.decoder[0].out_channels)

    def to(self, device) -> GaussianScene:
        self.model.to(device)
        self.decoder.to(device)
        return self

    def render_features(self, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.model.render(camera, with_rgb=False, backend=self.backend)
        return self.decoder(out.image), out.alpha >= self.min_alpha

    def tensors(self) -> dict[str, torch.Tensor]:
        model, act = self.model, self.model.activated()
        packed = {"means3D": model.xyz, "shs": torch.cat([model.f_dc, model.f_rest], dim=1), "sem": model.sem,
                  "opacity": act["opacity"], "scales": act["scales"], "rotations": act["rotation"],
                  "feat_cnn.0.weight": self.decoder[0].weight}  # fmt: skip
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in packed.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], min_alpha: float, backend: str) -> GaussianScene:
        shs = tensors["shs"]
        degree = round(shs.shape[1] ** 0.5) - 1
        model = GaussianModel(shs.shape[0], degree, tensors["sem"].shape[1])
        opacity = tensors["opacity"].clamp(1e-6, 1 - 1e-6)
        with torch.no_grad():
            model.xyz.copy_(tensors["means3D"])
            model.f_dc.copy_(shs[:, :1])
            model.f_rest.copy_(shs[:, 1:])
            model.opacity.copy_(torch.log(opacity / (1 - opacity))[:, None])
            model.scaling.copy_(torch.log(tensors["scales"]))
            model.rotation.copy_(tensors["rotations"])
            model.sem.copy_(tensors["sem"])
        model.active_sh_degree = degree
        weight = tensors["feat_cnn.0.weight"]
        decoder = FeatureDecoder(weight.shape[1], weight.shape[0])
        decoder.load_state_dict({"0.weight": weight})
        return cls(model.requires_grad_(False), decoder.requires_grad_(False), min_alpha, backend)


class PointScene:
    """Fused backbone features on the scene's seen points (see the module docstring)."""

    kind = "points"

    def __init__(self, xyz: torch.Tensor, features: torch.Tensor, point_index: torch.Tensor,
                 n_views: torch.Tensor, radius: int = 0):  # fmt: skip
        self.xyz, self.features = xyz.to(torch.float64), features.float()
        self.point_index, self.n_views, self.radius = point_index, n_views, radius

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def to(self, device) -> PointScene:
        self.xyz, self.features = self.xyz.to(device), self.features.to(device)
        return self

    def render_features(self, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
        return render_points(self.xyz, self.features, camera, self.radius)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"xyz": self.xyz.cpu().contiguous(), "features": self.features.cpu().half().contiguous(),
                "point_index": self.point_index.cpu().to(torch.int64).contiguous(),
                "n_views": self.n_views.cpu().to(torch.int32).contiguous()}  # fmt: skip

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], radius: int) -> PointScene:
        return cls(tensors["xyz"], tensors["features"], tensors["point_index"], tensors["n_views"], radius)


def save_representation(uri: str, scene: GaussianScene | PointScene, header: dict[str, Any]) -> int:
    """Write ``scene`` with ``header`` (JSON-able) as one safetensors object, atomically; its size."""
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": scene.kind,
                "feature_dim": scene.feature_dim, **header}  # fmt: skip
    data = save_safetensors(scene.tensors(), metadata={HEADER_KEY: json.dumps(document, sort_keys=True)})
    storage.write_bytes(uri, data)
    return len(data)


def _parse(uri: str, data: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        tensors = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")  # the safetensors layout: u64 length, JSON header
        raw = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}).get(HEADER_KEY)
        header = json.loads(raw) if raw else None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is this file's problem
        raise RepresentationError(f"{uri}: not a lifted scene file ({type(exc).__name__}: {exc})") from None
    if not header or header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise RepresentationError(f"{uri}: not a {FORMAT} version {FORMAT_VERSION} file")
    return header, tensors


def read_header(uri: str) -> dict[str, Any]:
    """The ``fit3d`` header of a lifted scene file (the whole object is read)."""
    return _parse(uri, storage.read_bytes(uri))[0]


def load_representation(uri: str, device: torch.device | str = "cpu", min_alpha: float | None = None,
                        backend: str = "auto"):  # fmt: skip
    """``(scene, header)`` from a lifted scene file, on ``device``; ``min_alpha`` overrides the
    Gaussians' mask threshold recorded at lifting."""
    header, tensors = _parse(uri, storage.read_bytes(uri))
    settings = header.get("settings", {})
    if header["kind"] == "gaussians":
        alpha = settings.get("min_alpha", 0.5) if min_alpha is None else min_alpha
        scene = GaussianScene.from_tensors(tensors, alpha, backend)
    elif header["kind"] == "points":
        scene = PointScene.from_tensors(tensors, int(settings.get("radius", 0)))
    else:
        raise RepresentationError(f"{uri}: unknown representation kind {header['kind']!r}")
    return scene.to(device), header
