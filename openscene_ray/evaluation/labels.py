"""Label-valued evaluation modes (SSOV): predictions that are classes, not features.

* ``pseudo``: the lifted pseudo-labels themselves (``openscene-ray lift``); points without one are
  unknown (counted in the accuracy denominator, excluded from IoU, as fusion mode's unseen points).
* ``classify``: a trained SSOV network. A classifier export (``train-free``, ``extra.head =
  "classes"``) predicts the argmax of its logits; a TMP export (``extra.head = "features"``) is
  scored zero-shot: the argmax phrase of its normalised features against the vocabulary's text
  embeddings, mapped through the dictionary (an ignored phrase gives an unknown point).
* ``<mode>+afi``: the same predictions after AFI (:mod:`openscene_ray.ssov.afi`), when the
  evaluation config sets ``afi``.
"""

from __future__ import annotations

import numpy as np
import torch

from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.scene import IGNORE_LABEL, UNKNOWN_LABEL
from openscene_ray.ssov.afi import AFIConfig, apply_afi
from openscene_ray.ssov.lifted import labels_uri, read_labels
from openscene_ray.ssov.network import grid_from_metadata, point_outputs

__all__ = ["AFI_SUFFIX", "LABEL_MODES", "Classifier", "afi_labels", "pseudo_labels"]

LABEL_MODES = ("pseudo", "classify")
AFI_SUFFIX = "+afi"


def pseudo_labels(lifted: str, scene_id: str, num_points: int, label_set: str) -> np.ndarray:
    """int64 ``[N]`` pseudo-labels of a scene, UNKNOWN where it has none."""
    shard = read_labels(labels_uri(lifted, scene_id), num_points)
    found = shard.metadata.get("label_set")
    if found is not None and found != label_set:
        raise InputError(f"{labels_uri(lifted, scene_id)}: pseudo-labels of label set {found!r}, evaluated as "
                         f"{label_set!r} (set text.label_set={found})")  # fmt: skip
    label = shard.label.astype(np.int64)
    return np.where(label == IGNORE_LABEL, UNKNOWN_LABEL, label)


class Classifier:
    """A trained SSOV network loaded once: per-point class predictions for ``classify`` mode."""

    def __init__(self, uri: str, label_set: str, device: torch.device):
        from openscene_ray.models.checkpoint import load_checkpoint

        self.model, config, metadata = load_checkpoint(uri, device)
        self.grid = grid_from_metadata(metadata.extra, metadata.voxel_size)
        self.head = metadata.extra.get("head")
        if metadata.label_set != label_set:
            raise InputError(f"checkpoint {uri} predicts {metadata.label_set!r} classes, evaluated as {label_set!r}")
        if self.head == "features":
            self._zero_shot(uri, metadata.extra, config.out_channels)
        elif self.head != "classes":
            raise InputError(f"checkpoint {uri} is not an SSOV network (extra.head {self.head!r}); classify mode "
                             "runs train-free and pretrain exports")  # fmt: skip

    def _zero_shot(self, uri: str, extra: dict, feature_dim: int) -> None:
        from openscene_ray.ssov.dictionary import load_dictionary
        from openscene_ray.ssov.store import read_vocabulary

        try:
            vocabulary, dictionary = read_vocabulary(extra["segments"]), load_dictionary(extra["dictionary_spec"])
        except KeyError as exc:
            raise InputError(f"checkpoint {uri}: a TMP export needs extra.{exc.args[0]} for zero-shot scoring") from None
        if vocabulary.embeddings.shape[1] != feature_dim:
            raise InputError(f"checkpoint {uri}: {feature_dim}-d features but the vocabulary in {extra['segments']} "
                             f"has {vocabulary.embeddings.shape[1]}-d text embeddings")  # fmt: skip
        text = torch.from_numpy(vocabulary.embeddings)
        self.text = (text / text.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(next(self.model.parameters()).device)
        self.phrase_class = np.where(dictionary.phrase_class == IGNORE_LABEL, UNKNOWN_LABEL, dictionary.phrase_class)

    def predict(self, xyz: np.ndarray, rgb: np.ndarray | None) -> np.ndarray:
        """int64 ``[N]`` classes (UNKNOWN where a zero-shot phrase is ignored)."""
        out = point_outputs(self.model, xyz, rgb, self.grid)
        if self.head == "classes":
            return out.argmax(dim=1).cpu().numpy()
        phrase = (out @ self.text.T).argmax(dim=1).cpu().numpy()
        return self.phrase_class[phrase].astype(np.int64)


def afi_labels(xyz: np.ndarray, pred: np.ndarray, label_set: str, config: AFIConfig,
               pseudo: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """AFI on one scene's predictions, with the label set's ground rule (if it has one)."""
    labels = get_label_set(label_set)
    return apply_afi(xyz, pred, labels.num_classes, labels.ground_classes, config, pseudo).labels
