"""The zero-shot evaluation job: exact distributed scoring as a Ray Data batch-inference job.

Plan::

    read_parquet(manifest, 3 columns) → filter(selected scenes) → repartition(1 scene/block)
      → map_batches(EvalActor, batch_size=1, ActorPoolStrategy(min,max), num_gpus, num_cpus)
            ├─ loads the 3D checkpoint and builds the text space ONCE per actor
            ├─ per scene: points + labels, the fusion shard (fusion/ensemble), then
            │  scene_counts() for each mode (one deterministic 3D pass shared by distill, ensemble and
            │  the saved outputs): the scoring Train-time validation uses too
            ├─ writes optional PLYs and per-point features itself (never through Ray blocks)
            └─ returns one small row per (scene, mode): confusion [K*K], unknown [K], error
      → driver: sum the counts per mode exactly (every scene, no equal-split drops)
            → compute_metrics → metrics.json, metrics.md, confusion/IoU PNGs per mode

Run folder (``output``)::

    metrics.json            per mode: mIoU, mAcc, per-class IoU/acc/points, confusion, unknown;
                            per (scene, mode): points, seconds, error; config, prompts, code version
    metrics.md              summary table and a per-class table per mode
    confusion_<mode>.png    recall-normalised confusion heatmap
    iou_<mode>.png          per-class IoU bars with the mIoU line
    ply/<scene>/gt.ply, ply/<scene>/<mode>.ply         (save_ply) coloured by class
    point_features/<scene>.parquet                      (save_point_features) 3D feature + pred_<mode>

Defaults are deterministic (no test-time rotation; mIoU over the classes present in the ground
truth). ``openscene_compat`` reproduces the reference: 5 seeded rotated/scaled test repeats summed
for the 3D modes, means divided by K, and the "other" prompt substitution. Test-time augmentation
can also be asked for alone (``tta_repeats`` > 1, seeded by ``tta_seed``). PLY and feature
outputs show the single deterministic pass, which is what is scored unless TTA is on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from openscene_ray import __version__
from openscene_ray.evaluation.metrics import MODES, Mode
from openscene_ray.kernel import storage
from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.manifest import SceneRecord, load_points, read_manifest
from openscene_ray.kernel.ray_runtime import (
    DataContextConfig,
    ResourcesConfig,
    actor_pool_options,
    scene_blocks,
)
from openscene_ray.kernel.text import text_model_spec

__all__ = [
    "ROW_SCHEMA",
    "EvalActor",
    "EvaluateConfig",
    "EvaluateSummary",
    "TextSpaceConfig",
    "aggregate_rows",
    "run_evaluate",
    "select_scenes",
    "mode_metrics",
    "write_report",
]

log = logging.getLogger(__name__)

COMPAT_TTA_REPEATS = 5

ROW_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("mode", pa.string()),
        ("n_points", pa.int64()),
        ("confusion", pa.list_(pa.int64())),  # [K*K] row-major, rows = ground truth; empty on error
        ("unknown", pa.list_(pa.int64())),  # [K]
        ("load_seconds", pa.float64()),
        ("seconds", pa.float64()),
        ("warning", pa.string()),
        ("error", pa.string()),
    ]
)


class TextSpaceConfig(StrictModel):
    """The label set's prompts and the text encoder that embeds them (shared with ``query``)."""

    label_set: str = "scannet20"
    encoder: str = Field("open_clip", description="text encoder kind: open_clip, synthetic, ...")
    options: dict[str, Any] = Field(
        default_factory=lambda: {"arch": "ViT-L-14-336", "checkpoint": "openai"},
        description="encoder options, e.g. {arch, checkpoint} or {dim, seed}",
    )
    on_mismatch: Literal["warn", "error"] = Field(
        "warn", description="when the features' text_model differs from this encoder's"
    )


def check_text_model(found: str | None, config: TextSpaceConfig, what: str) -> str:
    """``""`` when ``found`` matches the configured encoder; otherwise a warning, or an error raised."""
    expected = text_model_spec(config.encoder, config.options)
    if found is None or found == expected:
        return ""
    message = (
        f"{what} was made for text model {found!r} but the configured text encoder is {expected!r}: "
        "its features and these text embeddings live in different spaces, so scores are meaningless "
        "unless the two are the same model"
    )
    if config.on_mismatch == "error":
        raise ValueError(message + " (set text.on_mismatch=warn to go on anyway)")
    return message


class EvaluateConfig(StrictModel):
    manifest: str = Field(..., description="scene manifest URI")
    output: str = Field(..., description="run folder for metrics, figures and optional outputs")
    fusion_output: str | None = Field(None, description="fusion job output root (features/<scene>.parquet)")
    checkpoint: str | None = Field(None, description="3D checkpoint folder (distill/ensemble)")
    modes: list[Mode] | None = Field(None, description="default: every mode the given inputs allow")
    split: str | None = Field("val", description="manifest split to evaluate; null: every scene")
    scenes: list[str] | None = Field(None, description="these scene ids instead of a split")
    text: TextSpaceConfig = Field(default_factory=TextSpaceConfig)
    openscene_compat: bool = Field(False, description="reproduce the reference's protocol and quirks")
    tta_repeats: int | None = Field(None, ge=1, description=f"3D test repeats; default 1 ({COMPAT_TTA_REPEATS} in compat)")
    tta_seed: int = 0
    save_ply: bool = Field(False, description="per-scene PLYs coloured by ground truth and by each mode")
    save_point_features: bool = Field(False, description="per-scene Parquet of 3D features + predictions")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")

    @model_validator(mode="after")
    def _inputs_cover_modes(self) -> EvaluateConfig:
        if self.modes is not None:
            if not self.modes:
                raise ValueError("modes is empty")
            if len(set(self.modes)) != len(self.modes):
                raise ValueError(f"modes has duplicates: {self.modes}")
            needs = {m for m in self.modes if m != "fusion"}
            if needs and self.checkpoint is None:
                raise ValueError(f"mode(s) {sorted(needs)} need a 3D checkpoint (set checkpoint)")
            needs = {m for m in self.modes if m != "distill"}
            if needs and self.fusion_output is None:
                raise ValueError(f"mode(s) {sorted(needs)} need the fused features (set fusion_output)")
        elif self.checkpoint is None and self.fusion_output is None:
            raise ValueError("nothing to evaluate: set fusion_output and/or checkpoint")
        if self.save_point_features and self.checkpoint is None:
            raise ValueError("save_point_features writes the 3D features: it needs a checkpoint")
        return self

    def resolved_modes(self) -> list[str]:
        if self.modes is not None:
            return [m for m in MODES if m in self.modes]
        return [
            m for m in MODES
            if (m == "distill" or self.fusion_output is not None) and (m == "fusion" or self.checkpoint is not None)
        ]  # fmt: skip

    def resolved_tta_repeats(self) -> int:
        if self.tta_repeats is not None:
            return self.tta_repeats
        return COMPAT_TTA_REPEATS if self.openscene_compat else 1


def select_scenes(config: EvaluateConfig, records: list[SceneRecord]) -> list[SceneRecord]:
    """The scenes to evaluate: ``config.scenes`` (all must exist), else the split, else all."""
    if config.scenes is not None:
        by_id = {r.scene_id: r for r in records}
        unknown = sorted(set(config.scenes) - set(by_id))
        if unknown:
            raise ValueError(f"scenes not in the manifest {config.manifest}: {unknown}")
        return [by_id[s] for s in sorted(set(config.scenes))]
    chosen = [r for r in records if config.split is None or r.split == config.split]
    if not chosen:
        splits = sorted({r.split for r in records})
        raise ValueError(f"no scene of split {config.split!r} in {config.manifest} (splits: {splits})")
    return chosen


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


# ---------------------------------------------------------------- the actor


class EvalActor:
    """Loads the 3D network and the text space once; scores one scene per call."""

    def __init__(self, config: EvaluateConfig, use_gpu: bool):
        import torch

        from openscene_ray.evaluation.scene_eval import build_text_space

        self.config = config
        self.modes = config.resolved_modes()
        self.repeats = config.resolved_tta_repeats()
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        t = config.text
        self.text = build_text_space(t.label_set, t.encoder, t.options, config.openscene_compat)
        self.model = self.voxel_size = self.text_model_3d = None
        if config.checkpoint is not None:
            from openscene_ray.models.checkpoint import load_checkpoint

            self.model, _, meta = load_checkpoint(config.checkpoint, self.device)
            if meta.feature_dim != self.text.embeddings.shape[1]:
                raise ValueError(
                    f"checkpoint {config.checkpoint} outputs {meta.feature_dim}-d features but the text "
                    f"encoder {t.encoder} gives {self.text.embeddings.shape[1]}-d embeddings"
                )
            self.voxel_size, self.text_model_3d = meta.voxel_size, meta.text_model

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = []
        for scene_id, points_uri, num_points in zip(batch["scene_id"], batch["points_uri"], batch["num_points"]):
            rows.extend(self.evaluate_scene(str(scene_id), str(points_uri), int(num_points)))
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)

    def _row(self, scene_id: str, mode: str, **values) -> dict[str, Any]:
        row = {"scene_id": scene_id, "mode": mode, "n_points": 0, "confusion": [], "unknown": [],
               "load_seconds": 0.0, "seconds": 0.0, "warning": "", "error": ""}  # fmt: skip
        row.update(values)
        return row

    def _load_fused(self, scene_id: str, n: int) -> tuple[np.ndarray, np.ndarray, str]:
        from openscene_ray.kernel.features import read_features, shard_uri

        shard = read_features(shard_uri(self.config.fusion_output, scene_id))
        warning = check_text_model(shard.metadata.get("text_model"), self.config.text, "the fusion shards")
        f2d, has2d = shard.dense(n)
        return f2d, has2d, warning

    def evaluate_scene(self, scene_id: str, points_uri: str, num_points: int) -> list[dict[str, Any]]:
        """One row per mode; a failure becomes that mode's (or every mode's) error row."""
        from openscene_ray.evaluation.scene_eval import distill_features, scene_counts

        start = time.perf_counter()
        try:
            xyz, rgb, labels = load_points(points_uri)
            if len(xyz) != num_points:
                raise ValueError(f"{points_uri} holds {len(xyz)} points, the manifest says {num_points}")
        except Exception as exc:  # noqa: BLE001 - a bad scene is data
            return [self._row(scene_id, m, error=f"{scene_id}: {_describe(exc)}") for m in self.modes]
        n = len(xyz)
        f2d = has2d = None
        fused_error = warning = ""
        if any(m != "distill" for m in self.modes):
            try:
                f2d, has2d, warning = self._load_fused(scene_id, n)
            except Exception as exc:  # noqa: BLE001
                fused_error = f"{scene_id}: fused features: {_describe(exc)}"
        load_seconds = time.perf_counter() - start
        rows, done = [], []
        f3d = None  # the deterministic 3D pass, shared by the 3D modes and the saved outputs
        for mode in self.modes:
            row = self._row(scene_id, mode, n_points=n, load_seconds=load_seconds, warning=warning)
            if mode != "distill" and fused_error:
                row["error"] = fused_error
                rows.append(row)
                continue
            t0 = time.perf_counter()
            try:
                if mode != "fusion" and f3d is None:
                    f3d = distill_features(self.model, xyz, self.voxel_size, rgb)
                counts = scene_counts(
                    mode, labels, self.text, f2d=f2d, has2d=has2d, model=self.model, xyz=xyz, rgb=rgb,
                    voxel_size=self.voxel_size, tta_repeats=self.repeats, tta_seed=self.config.tta_seed, f3d=f3d,
                )  # fmt: skip
                row.update(confusion=counts.confusion.reshape(-1).tolist(), unknown=counts.unknown.tolist())
                done.append(mode)
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"{scene_id}: {mode}: {_describe(exc)}"
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
        if done and (self.config.save_ply or self.config.save_point_features):
            try:
                self._write_outputs(scene_id, xyz, rgb, labels, f2d, has2d, f3d, done)
            except Exception as exc:  # noqa: BLE001 - the scene's outputs are part of its result
                for row in rows:
                    row["error"] = row["error"] or f"{scene_id}: writing outputs: {_describe(exc)}"
        return rows

    def _write_outputs(self, scene_id, xyz, rgb, labels, f2d, has2d, f3d, modes: list[str]) -> None:
        """PLYs and point features from one deterministic pass (what is scored unless TTA is on);
        ``f3d`` is that pass when a 3D mode already ran it."""
        from openscene_ray.evaluation.predict import predict
        from openscene_ray.evaluation.scene_eval import distill_features
        from openscene_ray.kernel.ply import write_ply
        from openscene_ray.kernel.visual import label_colors

        out, k = self.config.output, self.text.num_classes
        if f3d is None and self.model is not None and self.config.save_point_features:
            f3d = distill_features(self.model, xyz, self.voxel_size, rgb)
        preds = {
            mode: predict(mode, self.text.embeddings, f2d=f2d, has2d=has2d, f3d=f3d,
                          prompt_to_class=self.text.prompt_to_class, num_classes=k).cpu().numpy()
            for mode in modes
        }  # fmt: skip
        if self.config.save_ply:
            write_ply(storage.join(out, "ply", scene_id, "gt.ply"), xyz, label_colors(labels, k))
            for mode, pred in preds.items():
                write_ply(storage.join(out, "ply", scene_id, f"{mode}.ply"), xyz, label_colors(pred, k))
        if self.config.save_point_features:
            write_point_features(
                storage.join(out, "point_features", f"{scene_id}.parquet"), scene_id,
                f3d.cpu().numpy(), preds, self.text_model_3d,
            )  # fmt: skip


def write_point_features(uri: str, scene_id: str, f3d: np.ndarray, preds: dict[str, np.ndarray],
                         text_model: str | None) -> int:
    """Per-point 3D features (fp16 fixed_size_list, the fusion shards' layout, every point) plus
    ``pred_<mode>`` int16 columns; readable by ``openscene-ray query --database``."""
    n, c = f3d.shape
    values = pa.array(np.ascontiguousarray(f3d, dtype=np.float16).reshape(-1), type=pa.float16())
    columns = {
        "scene_id": pa.array([scene_id] * n, pa.string()),
        "point_index": pa.array(np.arange(n, dtype=np.int32), pa.int32()),
        "feature": pa.FixedSizeListArray.from_arrays(values, c),
    }
    columns.update({f"pred_{m}": pa.array(p.astype(np.int16), pa.int16()) for m, p in preds.items()})
    meta = {"scene_id": scene_id, "feature_dim": c, "text_model": text_model, "n_points": n,
            "n_seen": n, "code_version": __version__}  # fmt: skip
    table = pa.table(columns).replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()})
    return storage.write_parquet(uri, table, row_group_size=1 << 20)


# ---------------------------------------------------------------- the driver


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
                m: {"miou": _finite(r["miou"]), "macc": _finite(r["macc"]), "num_points": r["num_points"],
                    "num_scenes": r["num_scenes"]}
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
    """Exact per-mode sums of the successful rows: ``({mode: EvalCounts}, {mode: scenes summed},
    {scene: {mode: error}})``. Every (scene, mode) must have exactly one row."""
    from openscene_ray.evaluation.metrics import EvalCounts

    seen = [(r["scene_id"], r["mode"]) for r in rows]
    expected = [(s, m) for s in scene_ids for m in modes]
    if sorted(seen) != sorted(expected):
        missing = sorted(set(expected) - set(seen))
        extra = sorted(set(seen) - set(expected))
        raise RuntimeError(f"evaluation rows do not cover the scenes exactly: missing {missing[:10]}, extra {extra[:10]}")
    totals = {m: EvalCounts.zeros(num_classes) for m in modes}
    counted = dict.fromkeys(modes, 0)
    failed: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["error"]:
            failed.setdefault(row["scene_id"], {})[row["mode"]] = row["error"]
            continue
        conf = np.asarray(row["confusion"], np.int64).reshape(num_classes, num_classes)
        totals[row["mode"]] = totals[row["mode"]] + EvalCounts(conf, np.asarray(row["unknown"], np.int64))
        counted[row["mode"]] += 1
    return totals, counted, failed


def mode_metrics(config: EvaluateConfig, totals: dict, counted: dict) -> dict[str, dict[str, Any]]:
    """Per mode: the metrics of the summed counts, per-class rows, the confusion and unknown counts."""
    from openscene_ray.evaluation.metrics import compute_metrics

    names = list(get_label_set(config.text.label_set).class_names)
    out = {}
    for mode, counts in totals.items():
        metrics = compute_metrics(counts.confusion, counts.unknown, openscene_compat=config.openscene_compat)
        gt_points = (counts.confusion.sum(axis=1) + counts.unknown).tolist()
        metrics.update(
            num_scenes=counted[mode],
            per_class={n: {"iou": metrics["iou"][k], "acc": metrics["acc"][k], "points": gt_points[k]}
                       for k, n in enumerate(names)},
            confusion=counts.confusion.tolist(),
            unknown=counts.unknown.tolist(),
        )  # fmt: skip
        out[mode] = metrics
    return out


def write_report(config: EvaluateConfig, rows: list[dict[str, Any]], summary: EvaluateSummary) -> None:
    """metrics.json, metrics.md and per-mode confusion-heatmap and IoU-bar PNGs under the run folder."""
    from openscene_ray.evaluation.plots import (
        confusion_heatmap_png,
        iou_bar_chart_png,
        markdown_table,
    )

    labels = get_label_set(config.text.label_set)
    out, names = config.output, list(labels.class_names)
    md = [f"# Zero-shot evaluation ({len(summary.scenes)} scenes, label set {config.text.label_set})", "",
          "| mode | mIoU (%) | mAcc (%) | overall acc (%) | points | scenes |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    sections = []
    for mode, metrics in summary.modes.items():
        confusion_heatmap_png(np.asarray(metrics["confusion"]), names, storage.join(out, f"confusion_{mode}.png"))
        iou_bar_chart_png(metrics["iou"], names, storage.join(out, f"iou_{mode}.png"), miou=metrics["miou"])
        pct = [f"{100 * v:.1f}" if math.isfinite(v) else "–" for v in (metrics["miou"], metrics["macc"], metrics["oacc"])]
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
        "text_model": text_model_spec(config.text.encoder, config.text.options),
        "tta_repeats": config.resolved_tta_repeats(),
        "modes": summary.modes,
        "scenes": [{k: r[k] for k in ("scene_id", "mode", "n_points", "load_seconds", "seconds", "error")} for r in rows],
        "failed": summary.failed,
        "warnings": summary.warnings,
        "seconds": summary.seconds,
    }
    storage.write_bytes(storage.join(out, "metrics.json"), json.dumps(_json_safe(document), indent=2).encode())


def build_dataset(config: EvaluateConfig, scenes: list[SceneRecord]):
    """The lazy Ray Data plan (see the module docstring)."""
    ds = scene_blocks(config.manifest, [r.scene_id for r in scenes], ["scene_id", "points_uri", "num_points"])
    return ds.map_batches(
        EvalActor,
        fn_constructor_kwargs={"config": config, "use_gpu": config.resources.gpus_per_actor > 0},
        batch_size=1,
        batch_format="numpy",
        **actor_pool_options(config.resources),
    )


def run_evaluate(config: EvaluateConfig) -> EvaluateSummary:
    """Run the evaluation job (connecting to or starting Ray), write the report, return the summary."""
    from openscene_ray.kernel.ray_runtime import configure_data_context, init_ray

    start = time.perf_counter()
    scenes = select_scenes(config, read_manifest(config.manifest))
    modes = config.resolved_modes()
    summary = EvaluateSummary(output=config.output, scenes=[r.scene_id for r in scenes])
    if config.checkpoint is not None:
        from openscene_ray.models.checkpoint import read_checkpoint_metadata

        text_model = read_checkpoint_metadata(config.checkpoint).text_model
        warning = check_text_model(text_model, config.text, f"checkpoint {config.checkpoint}")
        if warning:
            summary.warnings.append(warning)
    num_classes = get_label_set(config.text.label_set).num_classes
    log.info("evaluate: %d scene(s), modes %s, %d test repeat(s)", len(scenes), modes, config.resolved_tta_repeats())
    init_ray(config.address)
    configure_data_context(config.data)
    rows = build_dataset(config, scenes).take_all()
    rows = [{k: (r[k].tolist() if isinstance(r[k], np.ndarray) else r[k]) for k in ROW_SCHEMA.names} for r in rows]
    rows.sort(key=lambda r: (r["scene_id"], MODES.index(r["mode"])))
    totals, counted, summary.failed = aggregate_rows(rows, summary.scenes, modes, num_classes)
    for warning in sorted({r["warning"] for r in rows if r["warning"]}):
        summary.warnings.append(warning)
    for warning in summary.warnings:
        log.warning("%s", warning)
    for scene_id, errors in summary.failed.items():
        log.error("scene %s failed: %s", scene_id, errors)
    summary.modes = mode_metrics(config, totals, counted)
    summary.seconds = time.perf_counter() - start
    write_report(config, rows, summary)
    return summary
