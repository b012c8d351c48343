"""2D training (train-2d): views and augmentation, the objective, the optimizer (no Ray), then
2-worker CPU Ray Train runs that train, resume and export an LSeg the ``lseg`` extractor loads."""

import numpy as np
import pytest
import torch
from conftest import TEXT

from openscene_ray.kernel.config import load_config
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.scene import IGNORE_LABEL
from openscene_ray.models.lseg import LOGIT_SCALE, build_lseg, lseg_config
from openscene_ray.train2d.config import Train2DConfig
from openscene_ray.train2d.data import (
    AugmentSettings,
    ViewCollate,
    augment_view,
    read_view,
    view_rows,
)
from openscene_ray.train2d.job import model_config
from openscene_ray.train2d.loop import build_optimizer
from openscene_ray.train2d.objective import class_logits, segmentation_loss

# ---------------------------------------------------------------- views and augmentation (no Ray)


def _batch(rows) -> dict[str, np.ndarray]:
    """Rows as Ray Data hands them to a numpy collate."""
    return {k: np.array([r[k] for r in rows], dtype=object if isinstance(rows[0][k], str) else None) for k in rows[0]}


def test_view_rows_name_every_labelled_view(synthetic_world):
    train = [r for r in synthetic_world.records if r.split == "train"]
    rows = view_rows(train)
    assert len(rows) == sum(len(r.views) for r in train) and len(view_rows(train, stride=3)) == 2 * 4
    assert set(rows[0]) == {"scene_id", "frame_id", "color_uri", "label_uri", "width", "height"}
    color, label = read_view(rows[0], num_classes=20)
    assert color.shape == (240, 320, 3) and label.shape == (240, 320) and label.dtype == np.uint8
    assert set(np.unique(label)) <= set(range(20)) | {IGNORE_LABEL}
    unlabelled = train[0].views[0].__class__(**{**train[0].views[0].__dict__, "label_uri": None})
    record = train[0].__class__(**{**train[0].__dict__, "views": (unlabelled,)})
    with pytest.raises(ValueError, match="no label map"):
        view_rows([record])


def test_augmentation_scales_pads_crops_and_flips_as_lseg():
    color = np.zeros((24, 32, 3), np.uint8)
    color[:, 16:] = 255  # right half white
    label = np.zeros((24, 32), np.uint8)
    label[:, 16:] = 7
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        image, target = augment_view(color, label, AugmentSettings(32, None, (0.5, 2.0)), rng)
        assert image.shape == (3, 32, 32) and target.shape == (32, 32) and target.dtype == torch.int64
        assert image.min() >= -1.0 - 1e-6 and image.max() <= 1.0 + 1e-6
        valid = target != IGNORE_LABEL
        assert torch.all(image[:, ~valid] == -1.0)  # padding: normalised black, labels ignored
        white, black = valid & (image[0] > 0.99), valid & (image[0] < -0.99)  # bilinear blends the edge
        assert torch.all(target[white] == 7) and torch.all(target[black] == 0)  # image and labels move together
        seen.add(bool((~valid).any()))
    assert seen == {True, False}  # small scales pad, large ones do not
    a = augment_view(color, label, AugmentSettings(32, None, (0.5, 2.0)), np.random.default_rng(5))
    b = augment_view(color, label, AugmentSettings(32, None, (0.5, 2.0)), np.random.default_rng(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_collate_is_seeded_per_epoch(synthetic_world):
    rows = view_rows([r for r in synthetic_world.records if r.split == "train"])[:3]
    settings = AugmentSettings(64, None, (0.5, 2.0))
    first = ViewCollate(settings, 20, seed=0, epoch=0)(_batch(rows))
    assert first["images"].shape == (3, 3, 64, 64) and first["labels"].shape == (3, 64, 64)
    again = ViewCollate(settings, 20, seed=0, epoch=0)(_batch(rows[1:2]))
    assert torch.equal(again["images"][0], first["images"][1])  # independent of batching
    other = ViewCollate(settings, 20, seed=0, epoch=1)(_batch(rows[1:2]))
    assert not torch.equal(other["images"][0], first["images"][1])


# ---------------------------------------------------------------- objective and optimisation (no Ray)


def test_loss_is_lseg_cross_entropy_with_ignore():
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.tensor([[[0, 1], [2, IGNORE_LABEL]]]).repeat_interleave(2, 1).repeat_interleave(2, 2)
    perfect = text[labels.clamp(max=2)[:, ::2, ::2]].permute(0, 3, 1, 2)  # [1, 8, 2, 2]
    loss = segmentation_loss(perfect, text, labels, [0, 1, 2], 3)
    logits = LOGIT_SCALE * torch.einsum("bchw,kc->bkhw", perfect, text)
    up = torch.nn.functional.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(up, labels, ignore_index=IGNORE_LABEL))
    assert loss < segmentation_loss(-perfect, text, labels, [0, 1, 2], 3)
    # detailed prompts: a class's logit is the max over its prompts
    prompt_logits = torch.arange(4.0).view(1, 4, 1, 1)
    assert class_logits(prompt_logits, [0, 1, 0, 1], 2).flatten().tolist() == [2.0, 3.0]


def test_optimizer_follows_the_reference(tmp_path):
    config = load_config(Train2DConfig, base={"manifest": "m", "storage_path": str(tmp_path), "batch_size": 8})
    net = build_lseg(lseg_config("lseg-tiny"))
    optimizer, lrs = build_optimizer(net, config)
    assert isinstance(optimizer, torch.optim.SGD) and lrs == [0.004 / 16 * 8, 0.004 / 16 * 8 * 10]
    group = optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-4
    assert len(group["params"]) + len(optimizer.param_groups[1]["params"]) == sum(
        p.requires_grad for p in net.parameters()
    )
    assert not net.scratch.refinenet4.resConfUnit1.conv1.weight.requires_grad  # never called, frozen
    adamw, lrs = build_optimizer(net, config.model_copy(update={"optimizer": "adamw", "lr": 1e-3}))
    assert isinstance(adamw, torch.optim.AdamW) and lrs == [1e-3, 1e-2]
    assert model_config(config, 64).out_dim == 64
    with pytest.raises(ValueError, match="out_dim=16 but the text space"):
        model_config(config.model_copy(update={"model_options": {"out_dim": 16}}), 64)
    with pytest.raises(ValueError, match="holds a CLIP tower"):
        model_config(config.model_copy(update={"model": "lseg-vitl16-384"}), 512)


# ---------------------------------------------------------------- Ray Train (2 CPU workers)

SMALL = {"crop_size": 64, "batch_size": 2, "optimizer": "adamw", "lr": 2e-3, "val_view_stride": 5,
         "workers": 2, "cpus_per_worker": 1, "max_failures": 1, "text": TEXT,
         "data": {"progress_bars": False}}  # fmt: skip


@pytest.fixture(scope="module")
def trained_2d(ray_session, synthetic_world, tmp_path_factory):
    from openscene_ray.train2d.job import run_train2d

    base = {"manifest": synthetic_world.manifest, "storage_path": str(tmp_path_factory.mktemp("train2d")),
            "name": "tiny", "epochs": 2, **SMALL}  # fmt: skip
    config = load_config(Train2DConfig, base=base)
    return config, run_train2d(config)


@pytest.mark.slow
def test_train_2d_trains_validates_and_exports(synthetic_world, trained_2d):
    from openscene_ray.extractors.base import build_extractor
    from openscene_ray.kernel.manifest import load_view

    _, summary = trained_2d
    history = summary.history
    assert [(h["epoch"], h["resumed_from"]) for h in history] == [(0, -1), (1, -1)]
    assert all(h["steps"] == 10 and h["images"] == 20 for h in history)  # 20 train views, 2 per worker-step
    assert all(0.0 <= h["val_miou"] <= 1.0 for h in history) and history[1]["lr"] < history[0]["lr"]
    extractor = build_extractor("lseg", checkpoint=summary.model_uri)
    assert extractor.text_model == "synthetic:dim=32,seed=0" and extractor.feature_dim == 32
    record = synthetic_world.records[0]
    features = extractor.extract([load_view(record, record.views[0])], 240, 320)
    assert features.shape == (1, 240, 320, 32) and torch.isfinite(features).all()
    from openscene_ray.models.lseg_checkpoint import read_lseg_export

    model, info, _ = read_lseg_export(summary.model_uri)
    assert model.name == "lseg-tiny" and info.label_set == "scannet20" and info.extra["epoch"] == 1
    assert [h["epoch"] for h in info.extra["history"]] == [0, 1] and info.labels == list(get_label_set("scannet20").class_names)


@pytest.mark.slow
def test_train_2d_rerun_continues_from_the_checkpoint(trained_2d):
    from openscene_ray.train2d.job import run_train2d

    config, summary = trained_2d
    again = run_train2d(config.model_copy(update={"epochs": 3}))
    assert again.history[:2] == summary.history  # restored, not retrained
    assert again.history[2]["epoch"] == 2 and again.history[2]["resumed_from"] == 1
