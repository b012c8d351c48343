"""LSeg's objective and the per-view 2D score (pure torch; seed-systems facts §1.5).

Loss: per-pixel logits ``1/0.07 x <f, t>`` of the normalised stride-2 features against the frozen
text embeddings of the label set's prompts, upsampled x2 (bilinear, ``align_corners=True``),
reduced to classes (max over a class's prompts; one prompt per class for plain label sets) and
scored with per-pixel cross-entropy, ignore index 255.

Score: every pixel of a view gets the class of its best prompt under the extraction recipe's
features at the original resolution (:func:`openscene_ray.extractors.lseg.lseg_features`), the
same features the fusion stage projects onto the points; counts add over views and ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from openscene_ray.evaluation.metrics import EvalCounts
from openscene_ray.evaluation.predict import labels_from_logits, reduce_prompts
from openscene_ray.extractors.lseg import lseg_features
from openscene_ray.kernel.scene import IGNORE_LABEL
from openscene_ray.models.lseg import LSegNet, lseg_logits

__all__ = ["class_logits", "segmentation_loss", "view_counts"]


def class_logits(logits: torch.Tensor, prompt_to_class: Sequence[int], num_classes: int) -> torch.Tensor:
    """``[B, P, H, W]`` prompt logits -> ``[B, K, H, W]`` class logits (max over each class's prompts,
    as the evaluation reduces them)."""
    if list(prompt_to_class) == list(range(num_classes)):
        return logits
    batch, prompts, height, width = logits.shape
    flat = reduce_prompts(logits.permute(0, 2, 3, 1).reshape(-1, prompts), prompt_to_class, num_classes)
    return flat.reshape(batch, height, width, num_classes).permute(0, 3, 1, 2)


def segmentation_loss(features: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                      prompt_to_class: Sequence[int], num_classes: int) -> torch.Tensor:
    """Cross-entropy of ``[B, C, h, w]`` features against ``[B, 2h, 2w]`` labels (255 ignored)."""
    logits = class_logits(lseg_logits(features, text), prompt_to_class, num_classes)
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_LABEL)


@torch.no_grad()
def view_counts(net: LSegNet, colors: np.ndarray, labels: np.ndarray, text: torch.Tensor,
                prompt_to_class: Sequence[int], num_classes: int, flip: bool = True) -> EvalCounts:
    """Confusion counts over every pixel of uint8 ``[B, H, W, 3]`` views with ``[B, H, W]`` labels."""
    device = text.device
    features = lseg_features(net, torch.from_numpy(np.ascontiguousarray(colors)).to(device), flip)
    logits = torch.einsum("bchw,pc->bhwp", features, text.to(features.dtype)).reshape(-1, text.shape[0])
    pred = labels_from_logits(logits, None, prompt_to_class, num_classes)
    return EvalCounts.from_predictions(pred.cpu().numpy(), np.asarray(labels).reshape(-1), num_classes)
