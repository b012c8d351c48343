import json

import numpy as np
import pytest
import torch

from openscene_ray.evaluation.metrics import (
    UNKNOWN,
    EvalCounts,
    compute_metrics,
    confusion_matrix,
    unknown_counts,
)

# 3 classes; the last two points are ignored (255 and the reference's -100).
GT = np.array([0, 0, 0, 1, 1, 2, 2, 2, 255, -100])
PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])


def test_confusion_rows_are_ground_truth_and_ignore_labels_are_dropped():
    conf = confusion_matrix(PRED, GT, 3)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, [[2, 1, 0], [0, 1, 1], [1, 0, 2]])
    # float64 labels as stored in reference .pth files, and ground truth >= K, are handled too
    gt_float = np.append(GT, 7).astype(np.float64)
    np.testing.assert_array_equal(confusion_matrix(np.append(PRED, 0), gt_float, 3), conf)
    # a custom ignore value
    np.testing.assert_array_equal(confusion_matrix(PRED, np.where(GT == 2, 9, GT), 3, ignore=9)[2], [0, 0, 0])


def test_hand_computed_iou_and_accuracy():
    m = compute_metrics(confusion_matrix(PRED, GT, 3))
    # IoU_0 = 2/(2+1+1), IoU_1 = 1/(1+1+1), IoU_2 = 2/(2+1+1)
    np.testing.assert_allclose(m["iou"], [0.5, 1 / 3, 0.5])
    np.testing.assert_allclose(m["acc"], [2 / 3, 1 / 2, 2 / 3])
    assert m["miou"] == pytest.approx(4 / 9)
    assert m["macc"] == pytest.approx(11 / 18)
    assert m["oacc"] == pytest.approx(5 / 8)
    assert m["num_points"] == 8 and m["num_present"] == 3 and m["num_unknown"] == 0


def test_absent_class_present_mean_vs_openscene_divide_by_k():
    conf = confusion_matrix(PRED, GT, 4)  # class 3 never occurs in the ground truth
    default = compute_metrics(conf)
    compat = compute_metrics(conf, openscene_compat=True)
    assert np.isnan(default["iou"][3]) and np.isnan(default["acc"][3])
    assert default["present"] == [True, True, True, False]
    assert default["miou"] == pytest.approx(4 / 9)  # mean over the 3 present classes
    assert default["macc"] == pytest.approx(11 / 18)
    assert compat["miou"] == pytest.approx((4 / 3) / 4)  # reference: sum over present / K
    assert compat["macc"] == pytest.approx((11 / 6) / 4)
    # a predicted-but-absent class still costs the present classes IoU (false positives)
    conf2 = confusion_matrix(np.array([3, 0]), np.array([0, 0]), 4)
    assert compute_metrics(conf2)["iou"][0] == pytest.approx(0.5)


def test_unknown_predictions_excluded_from_iou_but_counted_in_accuracy():
    gt = np.array([0, 0, 0, 1, 1])
    pred = np.array([0, UNKNOWN, UNKNOWN, 1, 0])
    counts = EvalCounts.from_predictions(pred, gt, 2)
    np.testing.assert_array_equal(counts.confusion, [[1, 0], [1, 1]])
    np.testing.assert_array_equal(counts.unknown, [2, 0])
    m = compute_metrics(counts.confusion, counts.unknown)
    np.testing.assert_allclose(m["iou"], [1 / 2, 1 / 2])  # unknown points are not FN
    np.testing.assert_allclose(m["acc"], [1 / 3, 1 / 2])  # ... but are in the accuracy denominator
    assert m["oacc"] == pytest.approx(2 / 5) and m["num_unknown"] == 2 and m["num_points"] == 5
    strict = compute_metrics(counts.confusion, counts.unknown, unknown_in_iou=True)
    np.testing.assert_allclose(strict["iou"], [1 / 4, 1 / 2])
    # without the unknown vector the accuracy denominator shrinks: the vector is what keeps both conventions
    np.testing.assert_allclose(compute_metrics(counts.confusion)["acc"], [1.0, 1 / 2])


def test_class_seen_only_through_unknown_points_is_present_with_zero_iou():
    counts = EvalCounts.from_predictions(np.array([0, UNKNOWN, UNKNOWN]), np.array([0, 1, 1]), 2)
    m = compute_metrics(counts.confusion, counts.unknown)
    assert m["present"] == [True, True]
    assert m["iou"] == [1.0, 0.0] and m["acc"] == [1.0, 0.0]
    assert m["miou"] == pytest.approx(0.5)


def _reference_style(pred, gt, k):
    """An independent re-derivation of the reference's evaluate(): confusion indexed [pred, gt] with an
    extra 'no feature' class cropped away, loops over classes present in gt, divides by K."""
    pred = np.where(pred == UNKNOWN, k, pred)
    keep = gt != 255
    conf = np.bincount(pred[keep] * (k + 1) + gt[keep], minlength=(k + 1) ** 2).reshape(k + 1, k + 1)[:k, :k]
    miou = macc = 0.0
    for c in range(k):
        n = (gt == c).sum()
        if n == 0:
            continue
        tp = conf[c, c]
        miou += tp / (tp + conf[c, :].sum() - tp + conf[:, c].sum() - tp)
        macc += tp / n
    return miou / k, macc / k


def test_openscene_compat_matches_reference_formula_on_random_data():
    rng = np.random.default_rng(7)
    k = 6
    gt = rng.integers(0, k - 1, 5000)  # class 5 absent
    gt[rng.random(5000) < 0.1] = 255
    pred = np.where(rng.random(5000) < 0.6, gt, rng.integers(0, k, 5000))
    pred = np.where(gt == 255, rng.integers(0, k, 5000), pred)
    pred[rng.random(5000) < 0.05] = UNKNOWN
    counts = EvalCounts.from_predictions(pred, gt, k)
    m = compute_metrics(counts.confusion, counts.unknown, openscene_compat=True)
    ref_miou, ref_macc = _reference_style(pred, gt, k)
    assert m["miou"] == pytest.approx(ref_miou, abs=1e-12)
    assert m["macc"] == pytest.approx(ref_macc, abs=1e-12)
    assert compute_metrics(counts.confusion, counts.unknown)["miou"] == pytest.approx(ref_miou * k / (k - 1))


def test_counts_from_scenes_sum_exactly_and_serialise():
    rng = np.random.default_rng(3)
    k, n = 5, 3000
    gt = rng.integers(0, k, n)
    gt[::17] = 255
    pred = rng.integers(-1, k, n)
    whole = EvalCounts.from_predictions(pred, gt, k)
    parts = [EvalCounts.from_predictions(pred[s], gt[s], k) for s in np.array_split(np.arange(n), 4)]
    total = sum(parts, EvalCounts.zeros(k))
    np.testing.assert_array_equal(total.confusion, whole.confusion)
    np.testing.assert_array_equal(total.unknown, whole.unknown)
    assert int(total.confusion.sum() + total.unknown.sum()) == int((gt != 255).sum())
    restored = EvalCounts.from_dict(json.loads(json.dumps(total.to_dict())))
    assert compute_metrics(restored.confusion, restored.unknown) == compute_metrics(whole.confusion, whole.unknown)
    with pytest.raises(ValueError, match="cannot add"):
        total + EvalCounts.zeros(k + 1)


def test_torch_inputs_and_invalid_values():
    conf = confusion_matrix(torch.as_tensor(PRED), torch.as_tensor(GT), 3)
    np.testing.assert_array_equal(conf, confusion_matrix(PRED, GT, 3))
    np.testing.assert_array_equal(unknown_counts(torch.tensor([-1, 0]), torch.tensor([2, 255]), 3), [0, 0, 1])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([256]), np.array([0]), 3)  # the reference's NO_FEATURE id must be mapped to -1
    with pytest.raises(ValueError, match="integers"):
        confusion_matrix(np.array([0]), np.array([0.5]), 3)
    with pytest.raises(ValueError, match="length"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 3)
    with pytest.raises(ValueError):
        EvalCounts(np.zeros((2, 2)), np.zeros(3))
