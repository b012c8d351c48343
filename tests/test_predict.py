import numpy as np
import pytest
import torch

from openscene_ray.evaluation.metrics import UNKNOWN, EvalCounts, compute_metrics
from openscene_ray.evaluation.predict import (
    ensemble,
    labels_from_logits,
    max_text_cosine,
    mode_logits,
    predict,
    reduce_prompts,
    text_logits,
)
from openscene_ray.kernel.labels import LabelSet

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

E = np.eye(4, dtype=np.float32)
TEXT = E[:3]  # three classes, text embeddings along the first three axes

# Constructed so each point's choice is known:
#   p0: 2D is exactly class 0 (cos 1), 3D best cos 0.8           -> 2D, class 0
#   p1: 2D best cos 0.8, 3D exactly class 2                        -> 3D, class 2
#   p2: no fused feature (its f2d row is garbage), 3D best cos 0.6 -> 3D, class 0
#   p3: tie, both cos 1 (2D says 1, 3D says 2)                     -> 3D (ties go to 3D), class 2
#   p4: huge-norm 2D with cos 0.8 vs tiny-norm 3D with cos 1       -> 3D (norms do not matter), class 1
F2D = np.stack([E[0], 0.8 * E[0] + 0.6 * E[1], 10 * E[1], E[1], 100 * (0.8 * E[0] + 0.6 * E[2])])
F3D = np.stack([0.6 * E[1] + 0.8 * E[2], E[2], 0.6 * E[0] + 0.8 * E[3], E[2], 0.1 * E[1]])
HAS2D = np.array([True, True, False, True, True])


def test_text_logits_cosine_and_raw_with_fp16_features():
    feats = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float16)
    text = np.eye(2, dtype=np.float32)
    cos = text_logits(feats, text)
    assert cos.dtype == torch.float32
    np.testing.assert_allclose(cos.numpy(), [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(text_logits(feats, text, normalize=False).numpy(), [[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(max_text_cosine(feats, text).numpy(), [0.8, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="expected features"):
        text_logits(feats, np.eye(3, dtype=np.float32))


def test_text_logits_over_several_chunks_match_a_plain_matmul():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((70_000, 8)).astype(np.float16)  # more rows than one chunk
    text = rng.standard_normal((5, 8)).astype(np.float32)
    expected = feats.astype(np.float64) @ text.T.astype(np.float64)
    np.testing.assert_allclose(text_logits(feats, text, normalize=False).numpy(), expected, rtol=1e-4, atol=1e-4)
    norms = np.linalg.norm(feats.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(text_logits(feats, text).numpy(), expected / norms, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_ensemble_takes_2d_only_where_it_is_more_confident(device):
    f2d = torch.from_numpy(F2D).half().to(device)  # fused features are stored as fp16
    f3d = torch.from_numpy(F3D).to(device)
    features, use_2d = ensemble(f2d, torch.from_numpy(HAS2D), f3d, TEXT)
    assert features.device.type == device
    assert use_2d.cpu().tolist() == [True, False, False, False, False]
    np.testing.assert_allclose(features.cpu().numpy(), np.where(use_2d.cpu().numpy()[:, None], F2D, F3D), atol=1e-3)
    assert predict("ensemble", TEXT, f2d=f2d, has2d=HAS2D, f3d=f3d).cpu().tolist() == [0, 2, 0, 2, 1]
    np.testing.assert_array_equal(f3d.cpu().numpy(), F3D)  # inputs are left untouched
    for normalize in (True, False):  # mode logits = logits of the ensembled features
        logits, known = mode_logits("ensemble", TEXT, f2d=f2d, has2d=HAS2D, f3d=f3d, normalize=normalize)
        np.testing.assert_allclose(logits.cpu().numpy(), text_logits(features, TEXT, normalize).cpu().numpy(),
                                   atol=1e-3)
        assert known.all()


def test_modes_and_unknown_points():
    assert predict("fusion", TEXT, f2d=F2D, has2d=HAS2D).tolist() == [0, 0, UNKNOWN, 1, 0]
    assert predict("distill", TEXT, f3d=F3D).tolist() == [2, 2, 0, 2, 1]
    logits, known = mode_logits("fusion", TEXT, f2d=F2D, has2d=HAS2D)
    assert logits.shape == (5, 3) and known.tolist() == [True, True, False, True, True]
    assert mode_logits("distill", TEXT, f3d=F3D)[1].all()
    with pytest.raises(ValueError, match="unknown mode"):
        predict("fused", TEXT, f2d=F2D, has2d=HAS2D)
    with pytest.raises(ValueError, match="needs f3d"):
        predict("distill", TEXT, f2d=F2D, has2d=HAS2D)
    with pytest.raises(ValueError, match="needs f2d, has2d and f3d"):
        predict("ensemble", TEXT, f3d=F3D)


def test_fusion_unknowns_flow_into_metrics():
    gt = np.array([0, 2, 0, 1, 1])
    pred = predict("fusion", TEXT, f2d=F2D, has2d=HAS2D)
    counts = EvalCounts.from_predictions(pred, gt, 3)
    m = compute_metrics(counts.confusion, counts.unknown)
    np.testing.assert_array_equal(counts.unknown, [1, 0, 0])
    # class 0: TP 1 (p0), FP 2 (p1, p4), FN 0 (p2 is unknown) -> IoU 1/3; accuracy 1/2 (p2 in the denominator)
    assert m["iou"][0] == pytest.approx(1 / 3) and m["acc"][0] == pytest.approx(1 / 2)


def test_detailed_prompts_reduce_with_max_not_sum():
    mapping = [0, 0, 1, 2, 1]
    logits = torch.tensor([[0.9, 0.0, 0.5, 0.1, 0.6], [0.1, 0.2, 0.3, 0.7, 0.0]])
    np.testing.assert_allclose(reduce_prompts(logits, mapping).numpy(), [[0.9, 0.6, 0.1], [0.2, 0.3, 0.7]])
    # a sum over prompts would pick class 1 (1.1 > 0.9) for the first point
    assert labels_from_logits(logits, prompt_to_class=mapping).tolist() == [0, 2]
    assert labels_from_logits(logits, torch.tensor([True, False]), mapping).tolist() == [0, UNKNOWN]
    with pytest.raises(ValueError, match="without a prompt"):
        reduce_prompts(logits, mapping, num_classes=4)
    with pytest.raises(ValueError, match="entries"):
        reduce_prompts(logits, [0, 1])


def test_predict_with_a_label_set_of_detailed_prompts():
    labels = LabelSet("toy", ("vehicle", "ground"), detailed_prompts=(("car", 0), ("road", 1), ("truck", 0)))
    text = E[:3]  # one embedding per prompt
    f3d = np.stack([E[2], 0.6 * E[1] + 0.8 * E[3], E[0]])  # truck -> vehicle, road -> ground, car -> vehicle
    pred = predict("distill", text, f3d=f3d, prompt_to_class=labels.prompt_to_class(), num_classes=labels.num_classes)
    assert pred.tolist() == [0, 1, 0]


def test_summed_repeats_reduce_after_summing_prompt_logits():
    mapping = [0, 0, 1]
    # each repeat alone favours class 0 (through a different prompt), but class 1 wins on the summed logits,
    # which is what the reference's accumulation over prompt logits gives
    r1 = torch.tensor([[0.9, 0.0, 0.6]])
    r2 = torch.tensor([[0.0, 0.9, 0.6]])
    assert labels_from_logits(r1, prompt_to_class=mapping).item() == 0
    assert labels_from_logits(r2, prompt_to_class=mapping).item() == 0
    assert labels_from_logits(r1 + r2, prompt_to_class=mapping).item() == 1
