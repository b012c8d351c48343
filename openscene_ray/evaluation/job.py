"""The zero-shot evaluation job: exact distributed scoring as a Ray Data batch-inference job.

Plan::

    the driver's manifest rows (3 Arrow columns, one scene per block)
      → map_batches(EvalActor, batch_size=1, ActorPoolStrategy(min,max), num_gpus, num_cpus)
            ├─ loads the 3D checkpoint and builds the text space ONCE per actor
            ├─ per scene: points + labels, the fused shard (fusion/ensemble), then
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

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa

from openscene_ray.evaluation.config import EvaluateConfig, select_scenes
from openscene_ray.evaluation.metrics import MODES
from openscene_ray.evaluation.report import (
    EvaluateSummary,
    aggregate_rows,
    mode_metrics,
    write_report,
)
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError, describe_error
from openscene_ray.kernel.features import read_features, shard_uri, write_features
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.manifest import SceneRecord, load_points, read_manifest
from openscene_ray.kernel.ray_runtime import (
    actor_pool_options,
    configure_data_context,
    init_ray,
    scene_blocks,
)
from openscene_ray.kernel.scene import IGNORE_LABEL
from openscene_ray.kernel.text import build_text_space, check_text_model

__all__ = ["ROW_SCHEMA", "EvalActor", "build_dataset", "run_evaluate", "write_point_features"]

log = logging.getLogger(__name__)

ROW_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("mode", pa.string()),
        ("n_points", pa.int64()),
        ("confusion", pa.list_(pa.int64())),  # [K*K] row-major, rows = ground truth; empty on error
        ("unknown", pa.list_(pa.int64())),  # [K]
        ("evaluated", pa.int64()),  # points with a ground-truth label
        ("covered", pa.int64()),  # of those, points with a prediction
        ("load_seconds", pa.float64()),
        ("seconds", pa.float64()),
        ("warning", pa.string()),
        ("error", pa.string()),
    ]
)


class EvalActor:
    """Loads the 3D network and the text space once; scores one scene per call."""

    def __init__(self, config: EvaluateConfig, use_gpu: bool):
        import torch

        self.config = config
        self.modes = [m for m in config.resolved_modes() if m in MODES]  # the feature modes
        self.view_modes = [m for m in config.resolved_modes() if m == "2d"]
        self.label_modes = [m for m in config.reported_modes() if m not in (*MODES, "2d")]  # pseudo, classify, +afi
        self.extractor = None  # the 2d mode's 2D model, built from the first shard's metadata
        self.repeats = config.resolved_tta_repeats()
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.text = build_text_space(config.text, config.openscene_compat) if self.modes or self.view_modes else None
        self.model = self.voxel_size = self.text_model_3d = self.classifier = None
        if "classify" in self.label_modes:
            from openscene_ray.evaluation.labels import Classifier

            self.classifier = Classifier(config.checkpoint, config.text.label_set, self.device)
        if config.checkpoint is not None and {"distill", "ensemble"} & set(self.modes):
            from openscene_ray.models.checkpoint import load_checkpoint

            self.model, _, meta = load_checkpoint(config.checkpoint, self.device)
            if meta.feature_dim != self.text.embeddings.shape[1]:
                raise InputError(
                    f"checkpoint {config.checkpoint} outputs {meta.feature_dim}-d features but the text "
                    f"encoder {config.text.encoder} gives {self.text.embeddings.shape[1]}-d embeddings"
                )
            self.voxel_size, self.text_model_3d = meta.voxel_size, meta.text_model

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = []
        for i, (scene_id, points_uri, num_points) in enumerate(
            zip(batch["scene_id"], batch["points_uri"], batch["num_points"])
        ):
            rows.extend(self.evaluate_scene(str(scene_id), str(points_uri), int(num_points)))
            if self.view_modes:
                rows.append(self._view_row(SceneRecord.from_row({key: batch[key][i] for key in batch})))
        for row in rows:
            if row["mode"] != "2d" and not row["error"]:  # one sample per point: the counts say it
                row["covered"] = int(sum(row["confusion"]))
                row["evaluated"] = row["covered"] + int(sum(row["unknown"]))
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)

    def _view_row(self, record: SceneRecord) -> dict[str, Any]:
        """The ``2d`` row: the fusion's 2D model rerun on every view, scored at the points it sees."""
        from openscene_ray.evaluation.views2d import per_view_counts, shard_extractor, shard_fusion_params
        from openscene_ray.kernel.manifest import load_scene

        start = time.perf_counter()
        row = self._row(record.scene_id, "2d", n_points=record.num_points)
        try:
            metadata = read_features(shard_uri(self.config.fused, record.scene_id)).metadata
            if self.extractor is None:
                self.extractor = shard_extractor(metadata, str(self.device))
            scene = load_scene(record)
            row["load_seconds"] = time.perf_counter() - start
            counts, _ = per_view_counts(scene.xyz, scene.labels, scene.views, self.extractor,
                                               shard_fusion_params(metadata), self.text)  # fmt: skip
            evaluated = int((scene.labels != IGNORE_LABEL).sum())
            row.update(confusion=counts.confusion.reshape(-1).tolist(), unknown=counts.unknown.tolist(),
                       evaluated=evaluated, covered=evaluated - int(counts.unknown.sum()))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a bad scene is data
            row["error"] = f"{record.scene_id}: 2d: {describe_error(exc)}"
        row["seconds"] = time.perf_counter() - start - row["load_seconds"]
        return row

    def _row(self, scene_id: str, mode: str, **values) -> dict[str, Any]:
        row = {"scene_id": scene_id, "mode": mode, "n_points": 0, "confusion": [], "unknown": [], "evaluated": 0,
               "covered": 0, "load_seconds": 0.0, "seconds": 0.0, "warning": "", "error": ""}  # fmt: skip
        row.update(values)
        return row

    def _load_fused(self, scene_id: str, n: int) -> tuple[np.ndarray, np.ndarray, str]:
        shard = read_features(shard_uri(self.config.fused, scene_id))
        warning = check_text_model(shard.metadata.get("text_model"), self.config.text, "the fusion shards")
        f2d, has2d = shard.dense(n)
        return f2d, has2d, warning

    def evaluate_scene(self, scene_id: str, points_uri: str, num_points: int) -> list[dict[str, Any]]:
        """One row per mode; a failure becomes that mode's (or every mode's) error row."""
        from openscene_ray.evaluation.scoring import scene_counts
        from openscene_ray.models.inference import distill_features

        start = time.perf_counter()
        try:
            xyz, rgb, labels = load_points(points_uri)
            if len(xyz) != num_points:
                raise ValueError(f"{points_uri} holds {len(xyz)} points, the manifest says {num_points}")
        except Exception as exc:  # noqa: BLE001 - a bad scene is data
            modes = self.modes + self.label_modes
            return [self._row(scene_id, m, error=f"{scene_id}: {describe_error(exc)}") for m in modes]
        label_rows = self._label_rows(scene_id, xyz, rgb, labels, time.perf_counter() - start)
        n = len(xyz)
        f2d = has2d = None
        fused_error = warning = ""
        if any(m != "distill" for m in self.modes):
            try:
                f2d, has2d, warning = self._load_fused(scene_id, n)
            except Exception as exc:  # noqa: BLE001
                fused_error = f"{scene_id}: fused features: {describe_error(exc)}"
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
                row["error"] = f"{scene_id}: {mode}: {describe_error(exc)}"
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
        if done and (self.config.save_ply or self.config.save_point_features):
            try:
                self._write_outputs(scene_id, xyz, rgb, labels, f2d, has2d, f3d, done)
            except Exception as exc:  # noqa: BLE001 - the scene's outputs are part of its result
                for row in rows:
                    row["error"] = row["error"] or f"{scene_id}: writing outputs: {describe_error(exc)}"
        return rows + label_rows

    def _label_rows(self, scene_id: str, xyz, rgb, labels, load_seconds: float) -> list[dict[str, Any]]:
        """The rows of the label modes (pseudo, classify, and their ``+afi`` variants)."""
        from openscene_ray.evaluation.labels import (
            AFI_SUFFIX,
            afi_labels,
            pseudo_labels,
        )
        from openscene_ray.evaluation.metrics import EvalCounts

        rows, preds, label_set = [], {}, self.config.text.label_set
        k = get_label_set(label_set).num_classes
        for mode in self.label_modes:
            row = self._row(scene_id, mode, n_points=len(xyz), load_seconds=load_seconds)
            t0 = time.perf_counter()
            base = mode.removesuffix(AFI_SUFFIX)
            try:
                if mode == "pseudo":
                    preds[mode] = pseudo_labels(self.config.lifted, scene_id, len(xyz), label_set)
                elif mode == "classify":
                    preds[mode] = self.classifier.predict(xyz, rgb)
                elif base not in preds:
                    raise RuntimeError(f"{base} failed, so {mode} has no predictions")
                else:
                    pseudo = preds.get("pseudo") if self.config.afi.mix_pseudo else None
                    preds[mode] = afi_labels(xyz, preds[base], label_set, self.config.afi, pseudo)
                counts = EvalCounts.from_predictions(preds[mode], labels, k)
                row.update(confusion=counts.confusion.reshape(-1).tolist(), unknown=counts.unknown.tolist())
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"{scene_id}: {mode}: {describe_error(exc)}"
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
        return rows

    def _write_outputs(self, scene_id, xyz, rgb, labels, f2d, has2d, f3d, modes: list[str]) -> None:
        """PLYs and point features from one deterministic pass (what is scored unless TTA is on);
        ``f3d`` is that pass when a 3D mode already ran it."""
        from openscene_ray.evaluation.predict import predict
        from openscene_ray.kernel.ply import write_ply
        from openscene_ray.kernel.visual import label_colors
        from openscene_ray.models.inference import distill_features

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
    """Per-point 3D features (the shard format, every point) plus ``pred_<mode>`` int16 columns;
    searchable like a fused output's shards (``openscene-ray query --fused <run>/point_features``)."""
    n, c = f3d.shape
    preds_columns = {f"pred_{m}": pa.array(p.astype(np.int16), pa.int16()) for m, p in preds.items()}
    metadata = {"feature_dim": c, "text_model": text_model, "n_points": n, "n_seen": n}
    return write_features(uri, scene_id, np.arange(n, dtype=np.int32), f3d, None, metadata, preds_columns)


def build_dataset(config: EvaluateConfig, scenes: list[SceneRecord]):
    """The lazy Ray Data plan (see the module docstring)."""
    # the 2d mode reloads each scene's views: it needs the whole manifest row
    ds = scene_blocks(scenes, None if "2d" in config.resolved_modes() else ["scene_id", "points_uri", "num_points"])
    return ds.map_batches(
        EvalActor,
        fn_constructor_kwargs={"config": config, "use_gpu": config.resources.gpus_per_actor > 0},
        batch_size=1,
        batch_format="numpy",
        **actor_pool_options(config.resources),
    )


def run_evaluate(config: EvaluateConfig) -> EvaluateSummary:
    """Run the evaluation job (connecting to or starting Ray), write the report, return the summary."""
    start = time.perf_counter()
    scenes = select_scenes(config, read_manifest(config.manifest))
    modes = config.reported_modes()
    summary = EvaluateSummary(output=config.output, scenes=[r.scene_id for r in scenes])
    if config.checkpoint is not None and {"distill", "ensemble"} & set(modes):
        from openscene_ray.models.checkpoint import load_checkpoint

        # on the driver first: a bad checkpoint fails here with its URI, not as dying actors
        text_model = load_checkpoint(config.checkpoint)[2].text_model
        warning = check_text_model(text_model, config.text, f"checkpoint {config.checkpoint}")
        if warning:
            summary.warnings.append(warning)
    num_classes = get_label_set(config.text.label_set).num_classes
    log.info("evaluate: %d scene(s), modes %s, %d test repeat(s)", len(scenes), modes, config.resolved_tta_repeats())
    init_ray(config.address)
    configure_data_context(config.data)
    rows = build_dataset(config, scenes).take_all()
    rows = [{k: (r[k].tolist() if isinstance(r[k], np.ndarray) else r[k]) for k in ROW_SCHEMA.names} for r in rows]
    rows.sort(key=lambda r: (r["scene_id"], modes.index(r["mode"])))
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
