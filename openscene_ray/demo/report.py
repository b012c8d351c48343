"""The demo's markdown report."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["write_report"]


def write_report(summary: dict[str, Any], out: str) -> None:
    """``<out>/report.md``: metrics, figures, distillation history, query rankings, timings."""
    oracle = summary["models"]["extractor"] == "label-oracle"
    lines = ["# openscene-ray demo report", ""]
    if oracle:
        lines += [
            "**What these numbers mean.** The 2D model here is an *oracle* built from the synthetic",
            "world's ground-truth label maps, and the text embeddings are a seeded synthetic space",
            "(random directions per prompt), not CLIP. The numbers show the machinery working end to",
            "end — projection, occlusion, distributed fusion, distillation, evaluation, queries — not",
            "OpenScene's accuracy. Run `openscene-ray demo --openseg <SavedModel> --clip-checkpoint",
            "<file>` to use the real models.",
            "",
            "How to read them: *fusion* is near-perfect because the oracle's 2D maps are exact; its mAcc",
            "is lower because points that no view saw count as wrong (as in the reference). *distill* is",
            f"a MinkUNet18A after {len(summary['distill']['history'])} short epochs on a few rooms",
            "on CPU: it has learned the large surfaces (walls, floors), not yet the objects, which takes",
            "thousands of steps. *ensemble* takes the 2D feature where it is more confident.",
            "",
        ]
    lines += ["## Zero-shot segmentation (val rooms)", "", "| mode | mIoU | mAcc | points |", "|---|---|---|---|"]
    for mode, row in summary["evaluation"]["modes"].items():
        lines.append(f"| {mode} | {100 * (row['miou'] or 0):.1f} | {100 * (row['macc'] or 0):.1f} | {row['num_points']} |")
    lines += ["", "Per-class tables: [evaluation/metrics.md](evaluation/metrics.md).", ""]
    for mode in summary["evaluation"]["modes"]:
        lines += [f"### {mode}", "", f"![IoU per class](evaluation/iou_{mode}.png)",
                  f"![confusion](evaluation/confusion_{mode}.png)", ""]  # fmt: skip
    distill = summary["distill"]
    lines += ["## Distillation", "", "| epoch | train loss | val mIoU |", "|---|---|---|"]
    for h in distill["history"]:
        miou = h.get("val_miou")
        lines.append(f"| {h['epoch']} | {h['train_loss']:.4f} | {'' if miou is None or miou != miou else f'{100 * miou:.1f}'} |")
    lines += ["", f"Exported model: `{distill['model']}` ({distill['source']} checkpoint).", ""]
    lines += ["## Open-vocabulary queries", ""]
    for q in summary["queries"]:
        ranked = ", ".join(f"{s['scene_id']} ({s['score']:.2f})" for s in q["top_scenes"])
        lines += [f"- **a {q['query']} in a scene** — top scenes: {ranked}"]
        if "scenes_with_class" in q:
            lines += [f"  (ground truth: the class is in {', '.join(q['scenes_with_class']) or 'no room'})"]
        if "heatmap_png" in q:
            lines += ["", f"  ![{q['query']}]({q['heatmap_png']})", ""]
    lines += ["", "## Timings", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["stage_seconds"].items()]
    lines += [f"| **total** | **{summary['seconds']}** |", ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines))
