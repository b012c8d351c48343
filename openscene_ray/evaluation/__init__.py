"""Zero-shot evaluation core (Ray-free): metrics, predictions, figures and point-cloud outputs."""

from openscene_ray.evaluation.metrics import (
    IGNORE_LABEL,
    UNKNOWN,
    EvalCounts,
    compute_metrics,
    confusion_matrix,
    unknown_counts,
)
from openscene_ray.evaluation.predict import (
    MODES,
    ensemble,
    labels_from_logits,
    max_text_cosine,
    mode_logits,
    predict,
    reduce_prompts,
    text_logits,
)

__all__ = [
    "IGNORE_LABEL",
    "MODES",
    "UNKNOWN",
    "EvalCounts",
    "compute_metrics",
    "confusion_matrix",
    "ensemble",
    "labels_from_logits",
    "max_text_cosine",
    "mode_logits",
    "predict",
    "reduce_prompts",
    "text_logits",
    "unknown_counts",
]
