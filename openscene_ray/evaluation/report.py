"""The evaluation driver's pure side: exact aggregation of per-scene rows, the metrics of each mode,
and the report (metrics.json, metrics.md, confusion and IoU figures)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openscene_ray import __version__
from openscene_ray.evaluation.config import EvaluateConfig
from openscene_ray.evaluation.metrics import EvalCounts, compute_metrics
from openscene_ray.evaluation.plots import (
    confusion_heatmap_png,
    iou_bar_chart_png,
    markdown_table,
)
from openscene_ray.kernel import storage
from openscene_ray.kernel.labels import get_label_set

__all__ = ["EvaluateSummary", "aggregate_rows", "mode_metrics", "write_report"]


@dataclass
class EvaluateSummary:
    output: str
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode -> compute_metrics() + counts
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # scene -> mode -> error
    warnings: list[str] = field(default_factory=list)
    scenes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "scenes": len(self.scenes),
            "modes": {
                m: {"miou": _finite(r["miou"]), "macc": _finite(r["macc"]), "coverage": _finite(r["coverage"]),
                    "num_points": r["num_points"], "num_scenes": r["num_scenes"]}
                for m, r in self.modes.items()
            },  # fmt: skip
            "failed": self.failed,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 2),
        }


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return _finite(value)


def aggregate_rows(rows: list[dict[str, Any]], scene_ids: list[str], modes: list[str], num_classes: int):
    """Exact per-mode sums of the successful rows: ``({mode: EvalCounts}, {mode: {scenes, evaluated,
    covered}}, {scene: {mode: error}})``. Every (scene, mode) must have exactly one row."""
    seen = [(r["scene_id"], r["mode"]) for r in rows]
    expected = [(s, m) for s in scene_ids for m in modes]
    if sorted(seen) != sorted(expected):
        missing = sorted(set(expected) - set(seen))
        extra = sorted(set(seen) - set(expected))
        raise RuntimeError(f"evaluation rows do not cover the scenes exactly: missing {missing[:10]}, extra {extra[:10]}")
    totals = {m: EvalCounts.zeros(num_classes) for m in modes}
    counted = {m: {"scenes": 0, "evaluated": 0, "covered": 0} for m in modes}
    failed: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["error"]:
            failed.setdefault(row["scene_id"], {})[row["mode"]] = row["error"]
            continue
        conf = np.asarray(row["confusion"], np.int64).reshape(num_classes, num_classes)
        totals[row["mode"]] = totals[row["mode"]] + EvalCounts(conf, np.asarray(row["unknown"], np.int64))
        tally = counted[row["mode"]]
        tally["scenes"] += 1
        tally["evaluated"] += int(row.get("evaluated", 0))
        tally["covered"] += int(row.get("covered", 0))
    return totals, counted, failed


def mode_metrics(config: EvaluateConfig, totals: dict, counted: dict) -> dict[str, dict[str, Any]]:
    """Per mode: the metrics of the summed counts, the coverage (the fraction of the points with a
    ground-truth label that have a prediction), per-class rows, the confusion and unknown counts."""
    names = list(get_label_set(config.text.label_set).class_names)
    out = {}
    for mode, counts in totals.items():
        metrics = compute_metrics(counts.confusion, counts.unknown, openscene_compat=config.openscene_compat)
        gt_points = (counts.confusion.sum(axis=1) + counts.unknown).tolist()
        metrics.update(
            num_scenes=counted[mode]["scenes"],
            coverage=counted[mode]["covered"] / counted[mode]["evaluated"] if counted[mode]["evaluated"] else math.nan,
            per_class={n: {"iou": metrics["iou"][k], "acc": metrics["acc"][k], "points": gt_points[k]}
                       for k, n in enumerate(names)},
            confusion=counts.confusion.tolist(),
            unknown=counts.unknown.tolist(),
        )  # fmt: skip
        out[mode] = metrics
    return out


def write_report(config: EvaluateConfig, rows: list[dict[str, Any]], summary: EvaluateSummary) -> None:
    """metrics.json, metrics.md and per-mode confusion-heatmap and IoU-bar PNGs under the run folder."""

    labels = get_label_set(config.text.label_set)
    out, names = config.output, list(labels.class_names)
    md = [f"# Zero-shot evaluation ({len(summary.scenes)} scenes, label set {config.text.label_set})", "",
          "| mode | mIoU (%) | mAcc (%) | overall acc (%) | coverage (%) | samples | scenes |",
          "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    sections = []
    for mode, metrics in summary.modes.items():
        confusion_heatmap_png(np.asarray(metrics["confusion"]), names, storage.join(out, f"confusion_{mode}.png"))
        iou_bar_chart_png(metrics["iou"], names, storage.join(out, f"iou_{mode}.png"), miou=metrics["miou"])
        pct = [f"{100 * v:.1f}" if math.isfinite(v) else "–"
               for v in (metrics["miou"], metrics["macc"], metrics["oacc"], metrics["coverage"])]  # fmt: skip
        md.append(f"| {mode} | {' | '.join(pct)} | {metrics['num_points']} | {metrics['num_scenes']} |")
        sections += ["", f"## {mode}", "", markdown_table(metrics, names).rstrip()]
    protocol = (
        f"Protocol: {'openscene_compat (means divided by K, reference prompts)' if config.openscene_compat else 'default (means over classes present in the ground truth)'}; "
        f"3D test repeats {config.resolved_tta_repeats()}"
        + (f" (seed {config.tta_seed})" if config.resolved_tta_repeats() > 1 else " (deterministic)")
    )  # fmt: skip
    md += ["", protocol, *sections]
    if summary.failed:
        md += ["", "## Failed scenes", ""] + [f"- {s} ({m}): {e}" for s, d in summary.failed.items() for m, e in d.items()]
    if summary.warnings:
        md += ["", "## Warnings", ""] + [f"- {w}" for w in summary.warnings]
    storage.write_bytes(storage.join(out, "metrics.md"), ("\n".join(md) + "\n").encode())
    document = {
        "code_version": __version__,
        "config": config.model_dump(mode="json"),
        "label_set": config.text.label_set,
        "class_names": names,
        "prompts": labels.prompts(openscene_compat=config.openscene_compat),
        "text_model": config.text.spec(),
        "tta_repeats": config.resolved_tta_repeats(),
        "modes": summary.modes,
        "scenes": [{k: r[k] for k in ("scene_id", "mode", "n_points", "load_seconds", "seconds", "error")} for r in rows],
        "failed": summary.failed,
        "warnings": summary.warnings,
        "seconds": summary.seconds,
    }
    storage.write_bytes(storage.join(out, "metrics.json"), json.dumps(_json_safe(document), indent=2).encode())
