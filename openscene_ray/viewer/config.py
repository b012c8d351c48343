"""The viewer's typed config: what to show (a manifest, a fused output and/or a checkpoint, the
text space) and where to serve it (loopback by default; any other host needs a token)."""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, SecretStr, field_validator, model_validator

from openscene_ray.evaluation.metrics import Mode
from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.text import TextSpaceConfig
from openscene_ray.query.config import SearchSettings, check_template

__all__ = ["DEFAULT_DISPLAY_POINTS", "MIN_TOKEN_CHARS", "ViewerConfig", "is_loopback"]

DEFAULT_DISPLAY_POINTS = 200_000  # points drawn per scene; larger scenes are subsampled for display
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); any other name or address
    (``0.0.0.0``, a LAN address, a host name) can be reached from other machines."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ViewerConfig(StrictModel):
    """``openscene-ray view``: the inputs of ``query`` plus the web server's settings."""

    manifest: str = Field(..., description="scene manifest URI (points of every scene)")
    fused: str | None = Field(None, description="the fused output (fusion / ensemble features, database search)")
    checkpoint: str | None = Field(None, description="distilled 3D checkpoint (distill / ensemble features)")
    text: TextSpaceConfig = Field(default_factory=TextSpaceConfig)
    template: str | None = Field(None, description="text query template, e.g. 'a {} in a scene' (optional)")
    source: Mode = Field("fusion", description="feature source a page starts with")
    scene: str | None = Field(None, description="scene a page starts with (default: the manifest's first)")
    host: str = Field("127.0.0.1", description="address to listen on; a non-loopback host needs a token")
    port: int = Field(8080, ge=0, le=65535, description="port (0: any free port)")
    token: SecretStr | None = Field(None, description="access token the page and its websocket require")
    display_points: int = Field(DEFAULT_DISPLAY_POINTS, ge=1000, description="cap on points drawn per scene")
    point_size: float | None = Field(None, gt=0, description="point size in metres (default: from the density)")
    scene_cache: int = Field(2, ge=1, description="scenes (per feature source) kept in memory")
    embedding_cache: int = Field(512, ge=1, description="text embeddings kept, per (model, prompt)")
    search: SearchSettings = Field(default_factory=SearchSettings)
    device: str = "cpu"
    seed: int = Field(0, description="seed of the display subsample")

    @field_validator("template")
    @classmethod
    def _one_field(cls, template: str | None) -> str | None:
        if template is not None:
            check_template(template)
        return template

    @field_validator("token")
    @classmethod
    def _long_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        if len(token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"the token must have at least {MIN_TOKEN_CHARS} characters (or use --token auto)")
        if not re.fullmatch(r"[A-Za-z0-9._~-]+", token.get_secret_value()):
            raise ValueError("the token may contain only letters, digits and . _ ~ - "
                             "(it travels in a URL and a cookie)")
        return token

    @model_validator(mode="after")
    def _safe_and_complete(self) -> ViewerConfig:
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(f"host {self.host!r} is reachable from other machines: give a token "
                             "(--token auto prints one) or keep the default 127.0.0.1 and use SSH port forwarding")
        if self.fused is None and self.checkpoint is None:
            raise ValueError("give the fused output (fused) and/or a distilled checkpoint (checkpoint)")
        if self.source in ("fusion", "ensemble") and self.fused is None:
            raise ValueError(f"source {self.source!r} needs the fused output (fused)")
        if self.source in ("distill", "ensemble") and self.checkpoint is None:
            raise ValueError(f"source {self.source!r} needs a checkpoint")
        return self

    def sources(self) -> list[str]:
        """The feature sources these inputs allow, in the order the page offers them."""
        found = ["fusion"] if self.fused else []
        found += ["distill"] if self.checkpoint else []
        found += ["ensemble"] if self.fused and self.checkpoint else []
        return found
