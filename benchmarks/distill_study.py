"""What distillation needs to learn objects from geometry on the synthetic world (held-out rooms).

``python -m benchmarks.distill_study [--rooms 8] [--steps 600] [--lrs 1e-3,1e-4] [--inputs 1,3]``

Label-oracle features (exact 2D features, so the study measures the 3D side alone) are fused in
this process onto a synthetic world; MinkUNet18A is trained on the train rooms with the
distillation's own data path (:class:`~openscene_ray.distill.data.SparseCollate`: the reference's
augmentation, voxelisation, cosine loss, Adam, batch of 2 rooms) for each learning rate and input
(1: geometry only, the reference's default; 3: colour), and scored zero-shot on the held-out
rooms every ``--eval-every`` steps with the evaluation's scoring. Prints one JSON line per
evaluation and writes them to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

__all__ = ["main"]


def _arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=8, help="synthetic rooms (half train, half held out)")
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--points", type=int, default=12_000)
    parser.add_argument("--voxel", type=float, default=0.05)
    parser.add_argument("--dim", type=int, default=32, help="synthetic text space width = network head")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--lrs", default="1e-3,1e-4", help="Adam learning rates")
    parser.add_argument("--inputs", default="1,3", help="input channels: 1 geometry only, 3 colour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="benchmarks/results/distill_study.jsonl")
    return parser.parse_args(argv)


def _world(args, root: str, text: dict):
    """Write, ingest and fuse (label oracle, in this process) the rooms; ``(records, fused folder)``."""
    from openscene_ray.datasets.ingest import ingest
    from openscene_ray.datasets.layouts import build_layout
    from openscene_ray.extractors import build_extractor
    from openscene_ray.fusion.config import FusionSettings
    from openscene_ray.fusion.core import fuse_views
    from openscene_ray.fusion.scene import fusion_params
    from openscene_ray.kernel.features import shard_uri, write_features
    from openscene_ray.kernel.manifest import load_scene
    from openscene_ray.synth.world import SynthConfig
    from openscene_ray.synth.writer import write_world

    write_world(SynthConfig(seed=args.seed, num_scenes=args.rooms, views_per_scene=args.views,
                            points_per_scene=args.points, val_fraction=0.5), os.path.join(root, "raw"))  # fmt: skip
    layout = build_layout("scannet", overrides=["visibility_threshold=0.05"])
    records = ingest(layout, os.path.join(root, "raw"), os.path.join(root, "ingested")).records
    oracle, fused = build_extractor("label-oracle", text=text), os.path.join(root, "fused")
    for record in records:
        scene = load_scene(record)
        result = fuse_views(scene.xyz, scene.views, oracle, fusion_params(record, FusionSettings()))
        seen = np.flatnonzero(result.mask)
        write_features(shard_uri(fused, record.scene_id), record.scene_id, seen, result.features.numpy(),
                       result.n_views[seen], {"text_model": oracle.text_model})  # fmt: skip
    return records, fused


def _held_out_miou(model, records, fused, text_space, voxel: float) -> float:
    from openscene_ray.evaluation.metrics import EvalCounts, compute_metrics
    from openscene_ray.evaluation.scoring import scene_counts
    from openscene_ray.kernel.manifest import load_points

    model.eval()
    total = EvalCounts.zeros(text_space.num_classes)
    with torch.no_grad():
        for record in records:
            xyz, rgb, labels = load_points(record.points_uri)
            total = total + scene_counts("distill", labels, text_space, model=model, xyz=xyz, rgb=rgb, voxel_size=voxel)
    model.train()
    return float(compute_metrics(total.confusion, total.unknown)["miou"])


def _train(args, train, val, fused, text_space, lr: float, in_channels: int) -> list[dict]:
    from openscene_ray.distill.data import SparseCollate, training_rows
    from openscene_ray.models import AugmentConfig, MinkUNetConfig, build_model, cosine_distill_loss

    torch.manual_seed(args.seed)
    rows = training_rows(train, fused)
    model = build_model(MinkUNetConfig(in_channels=in_channels, out_channels=args.dim))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(args.seed)
    results, losses, start = [], [], time.perf_counter()
    for step in range(1, args.steps + 1):
        picked = [rows[i] for i in rng.choice(len(rows), size=min(2, len(rows)), replace=False)]
        batch = SparseCollate(args.voxel, in_channels, AugmentConfig(), args.seed, step)(
            {key: np.array([r[key] for r in picked]) for key in picked[0]}
        )
        loss = cosine_distill_loss(model(batch["coords"], batch["feats"], int(batch["num_scenes"])),
                                   batch["target"], batch["has_target"])  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % args.eval_every == 0 or step == args.steps:
            result = {"lr": lr, "in_channels": in_channels, "step": step, "train_loss": float(np.mean(losses[-20:])),
                      "held_out_miou": _held_out_miou(model, val, fused, text_space, args.voxel),
                      "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def main(argv=None) -> None:
    from openscene_ray.kernel.text import TextSpaceConfig, build_text_space

    args = _arguments(argv)
    text = {"label_set": "scannet20", "encoder": "synthetic", "options": {"dim": args.dim, "seed": args.seed}}
    text_space = build_text_space(TextSpaceConfig(**text))
    with tempfile.TemporaryDirectory(prefix="distill-study-") as root:
        records, fused = _world(args, root, text)
        train = [r for r in records if r.split == "train"]
        val = [r for r in records if r.split == "val"]
        results = []
        for in_channels in (int(x) for x in args.inputs.split(",")):
            for lr in (float(x) for x in args.lrs.split(",")):
                results += _train(args, train, val, fused, text_space, lr, in_channels)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in results)


if __name__ == "__main__":
    main()
