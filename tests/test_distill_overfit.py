"""Distillation demonstrably learns: MinkUNet18A overfits one synthetic room's fused features.

The training steps go through the real data path of ``openscene-ray distill``: the Ray Data
collate (:class:`~openscene_ray.distill.data.SparseCollate`: shard and points read through the
storage layer, augmentation seeded per epoch, voxelisation, each voxel's representative point's
fused feature as the target) and the cosine loss; the check goes through the evaluation's
inference path (:func:`~openscene_ray.models.inference.distill_features`: voxelise, run, map back
to the points). A bug in any of them (the inverse map, features misaligned with voxels, an
augmentation applied to the coordinates but not the targets, batch norm statistics) is what
these tests are here to catch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TEXT

from openscene_ray.distill.data import SparseCollate, training_rows
from openscene_ray.evaluation.predict import text_logits
from openscene_ray.extractors import build_extractor
from openscene_ray.fusion.config import FusionSettings
from openscene_ray.fusion.core import fuse_views
from openscene_ray.fusion.scene import fusion_params
from openscene_ray.kernel.features import read_features, shard_uri, write_features
from openscene_ray.kernel.manifest import load_points, load_scene
from openscene_ray.kernel.text import TextSpaceConfig, build_text_space
from openscene_ray.models import (
    AugmentConfig,
    MinkUNetConfig,
    build_model,
    cosine_distill_loss,
)
from openscene_ray.models.inference import distill_features

VOXEL = 0.05
LR = 1e-3  # the reference's effective rate (distill.config.REFERENCE_EFFECTIVE_LR)


@pytest.fixture(scope="module")
def room(synthetic_world, tmp_path_factory):
    """``(record, fused folder)``: one room fused in process with the label oracle (no Ray)."""
    record = synthetic_world.records[0]
    scene = load_scene(record)
    result = fuse_views(scene.xyz, scene.views, build_extractor("label-oracle", text=TEXT),
                        fusion_params(record, FusionSettings()))  # fmt: skip
    fused = str(tmp_path_factory.mktemp("overfit-fused"))
    seen = np.flatnonzero(result.mask)
    write_features(shard_uri(fused, record.scene_id), record.scene_id, seen, result.features.numpy(),
                   result.n_views[seen], {"text_model": "synthetic"})  # fmt: skip
    return record, fused


def _rows(record, fused):
    rows = training_rows([record], fused)
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def _overfit(record, fused, augment: AugmentConfig | None, steps: int) -> tuple[list[float], float]:
    """Train on one room for ``steps`` steps; ``(losses, argmax agreement with fusion on its seen points)``."""
    torch.manual_seed(0)
    batch_rows = _rows(record, fused)
    model = build_model(MinkUNetConfig(out_channels=32))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    losses = []
    model.train()
    for step in range(steps):
        batch = SparseCollate(VOXEL, 1, augment, seed=0, epoch=step)(batch_rows)
        pred = model(batch["coords"], batch["feats"], int(batch["num_scenes"]))
        loss = cosine_distill_loss(pred, batch["target"], batch["has_target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    model.eval()
    xyz, _, _ = load_points(record.points_uri)
    with torch.no_grad():
        predicted = distill_features(model, xyz, VOXEL)
    fused_features, seen = read_features(shard_uri(fused, record.scene_id)).dense(record.num_points)
    text = build_text_space(TextSpaceConfig(**TEXT)).embeddings
    net_class = text_logits(predicted, text).argmax(1).numpy()
    fused_class = text_logits(torch.from_numpy(fused_features.astype(np.float32)), text).argmax(1).numpy()
    agreement = float((net_class[seen] == fused_class[seen]).mean())
    print(f"overfit: loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.4f}, agreement {agreement:.4f} ({seen.sum()} points)")
    return losses, agreement


def test_minkunet_reproduces_one_rooms_fused_features(room):
    """The issue's criterion. Measured: loss 0.99 -> 0.0013 and 99.7% agreement after 120 steps."""
    losses, agreement = _overfit(*room, augment=None, steps=120)
    assert np.mean(losses[-10:]) < 0.02, losses[::10]
    assert agreement >= 0.95, agreement


def test_minkunet_learns_one_room_under_the_reference_augmentation(room):
    """Rotations, flips, scaling and elastic distortion: features must follow their points through
    every transform. Measured: loss 0.99 -> 0.10 and 89.0% agreement after 150 steps (the network
    has to become rotation-invariant, so it converges more slowly than without augmentation)."""
    losses, agreement = _overfit(*room, augment=AugmentConfig(), steps=150)
    assert np.mean(losses[-10:]) < 0.2, losses[::10]
    assert agreement >= 0.8, agreement
