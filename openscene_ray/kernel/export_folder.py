"""Weights folders: the one on-disk shape of every network this project exports.

A folder (any storage URI) holds ``model.safetensors`` (a state dict) and a JSON document with
the format and its version, the code version, the SHA-256 of the weights and the format's own
fields (configuration, metadata). The weights are written first and the document last, each
atomically, so a reader that finds the document finds the weights it describes; the digest
catches a folder mixed from two exports. The document must name ``model.safetensors``: a name
pointing out of the folder (``../x.pt``) is never followed. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from openscene_ray import __version__
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import describe_error

__all__ = ["WEIGHTS_NAME", "ExportFormat", "cpu_state"]

WEIGHTS_NAME = "model.safetensors"


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict as contiguous CPU copies (what safetensors writes)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its name and version, its document's file name, the error it raises
    and what a folder of it is called in messages (``"an LSeg export"``)."""

    name: str
    version: int
    document: str
    error: type[Exception]
    what: str

    def exists(self, uri: str) -> bool:
        """True when ``uri`` holds this format's document (a finished export)."""
        return storage.exists(storage.join(uri, self.document))

    def write(self, uri: str, state: dict[str, torch.Tensor], fields: dict[str, Any]) -> str:
        """Write ``state`` and the document (``fields`` plus format, versions, digest); returns ``uri``."""
        weights = save_safetensors(state, metadata={"format": self.name})
        document = {
            **fields,
            "format": self.name,
            "format_version": self.version,
            "code_version": __version__,
            "weights": {"name": WEIGHTS_NAME, "sha256": hashlib.sha256(weights).hexdigest(), "bytes": len(weights)},
        }
        storage.write_bytes(storage.join(uri, WEIGHTS_NAME), weights)
        storage.write_bytes(storage.join(uri, self.document), json.dumps(document, indent=2, sort_keys=True).encode())
        return uri

    def read_document(self, uri: str) -> dict[str, Any]:
        """The document of the folder ``uri``, checked for format, version and the weights' name."""
        document_uri = storage.join(uri, self.document)
        try:
            document = json.loads(storage.read_bytes(document_uri))
        except storage.ObjectNotFound:
            raise self.error(f"{uri}: no {self.document}; not {self.what} (or the export did not finish)") from None
        except json.JSONDecodeError as exc:
            raise self.error(f"{document_uri}: not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise self.error(f"{document_uri}: expected a JSON object, got {type(document).__name__}")
        if document.get("format") != self.name or document.get("format_version") != self.version:
            raise self.error(
                f"{document_uri}: format {document.get('format')!r} version {document.get('format_version')!r}; "
                f"this code reads {self.name!r} version {self.version}"
            )
        try:
            name = str(document["weights"]["name"])
            str(document["weights"]["sha256"])
        except (KeyError, TypeError) as exc:
            raise self.error(f"{document_uri}: malformed ({describe_error(exc)})") from None
        if name != WEIGHTS_NAME:
            raise self.error(f"{document_uri}: names weights {name!r}; expected {WEIGHTS_NAME!r}")
        return document

    def read_weights(self, uri: str, document: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The state dict of the folder ``uri`` whose document is ``document``, checked against its digest."""
        weights = storage.read_bytes(storage.join(uri, WEIGHTS_NAME))
        if hashlib.sha256(weights).hexdigest() != document["weights"]["sha256"]:
            raise self.error(f"{uri}: the weights do not match the digest in {self.document} (mixed or corrupt export)")
        try:
            return load_safetensors(weights)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types
            raise self.error(f"{storage.join(uri, WEIGHTS_NAME)}: unreadable weights ({describe_error(exc)})") from None
