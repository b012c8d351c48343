"""Ultrametric Feature Fields: the pure cores (no Ray) on hand-built inputs with known answers."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from openscene_ray.hierarchy.cluster import (
    relabel_by_size,
    segment_levels,
    transfer_labels,
)
from openscene_ray.hierarchy.field import (
    FeatureField,
    HashGridEncoding,
    PositionNormaliser,
)
from openscene_ray.hierarchy.losses import contrastive_loss, cosine_similarity
from openscene_ray.hierarchy.masks import (
    MaskError,
    level_maps,
    load_view_masks,
    mask_relations,
    write_view_masks,
)
from openscene_ray.hierarchy.metrics import normal_covering, view_consistency
from openscene_ray.hierarchy.sampling import direct_parents, sample_pairs
from openscene_ray.hierarchy.ultrametric import (
    knn_edges,
    merge_tree,
    ultrametric_similarity,
)
from openscene_ray.kernel import images

# ---------------------------------------------------------------- ultrametric similarity


def _unit(*vectors):
    t = torch.tensor(vectors, dtype=torch.float64)
    return torch.nn.functional.normalize(t, dim=1)


def test_ultrametric_similarity_is_the_weakest_link_of_a_hand_built_graph():
    """Five pixels on a line, each joined to its image neighbours (k=2). Features rotate slowly
    from 0 to 2 and jump between 2 and 3: the weakest link between {0,1,2} and {3,4} is edge 2-3,
    so every cross pair gets f2·f3, while 0-2 gets the weaker of its two links (1-2)."""
    angles = np.radians([0.0, 10.0, 30.0, 100.0, 105.0])
    features = _unit(*[(np.cos(a), np.sin(a)) for a in angles]).requires_grad_()
    pixels = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    pairs = np.array([[0, 4], [1, 3], [0, 2], [3, 4], [2, 2]])
    similarity = ultrametric_similarity(features, pixels, np.zeros((0, 5), bool), pairs, neighbours=2)
    f = features.detach()
    expected = [f[2] @ f[3], f[2] @ f[3], f[1] @ f[2], f[3] @ f[4], 1.0]
    np.testing.assert_allclose(similarity.detach().numpy(), expected, atol=1e-12)
    similarity[0].backward()  # the gradient reaches only the selected edge's endpoints
    touched = features.grad.abs().sum(1) > 0
    assert touched.tolist() == [False, False, True, True, False]


def test_a_mask_boundary_moves_the_weakest_link():
    """The same line, features nearly equal everywhere; a mask holding pixels 0-1 adds 10 to edge
    1-2, which becomes the weakest link of 0-4 although its cosine is the largest."""
    features = _unit((1.0, 0.0), (1.0, 0.01), (1.0, 0.02), (1.0, 0.2), (1.0, 0.21))
    pixels = np.stack([np.arange(5.0), np.zeros(5)], axis=1)
    mask = np.array([[True, True, False, False, False]])
    without = ultrametric_similarity(features, pixels, np.zeros((0, 5), bool), np.array([[0, 4]]), neighbours=2)
    with_mask = ultrametric_similarity(features, pixels, mask, np.array([[0, 4]]), neighbours=2)
    f = features
    assert float(without[0]) == pytest.approx(float(f[2] @ f[3]))
    assert float(with_mask[0]) == pytest.approx(float(f[1] @ f[2]))


def test_merge_tree_lca_matches_the_minimax_path_on_random_graphs():
    rng = np.random.default_rng(3)
    for _ in range(10):
        n = int(rng.integers(4, 30))
        src, dst = knn_edges(rng.random((n, 2)), 3)
        lengths = rng.random(len(src))
        low, high = np.minimum(src, dst), np.maximum(src, dst)
        # one length per undirected edge
        key = {}
        for i, pair in enumerate(zip(low.tolist(), high.tolist())):
            lengths[i] = key.setdefault(pair, lengths[i])
        dist = np.full((n, n), np.inf)
        for (a, b), w in key.items():
            dist[a, b] = dist[b, a] = w
        np.fill_diagonal(dist, 0.0)
        for k in range(n):  # minimax (bottleneck) path lengths, Floyd-Warshall style
            dist = np.minimum(dist, np.maximum(dist[:, k : k + 1], dist[k : k + 1, :]))
        if not np.isfinite(dist).all():
            continue
        tree = merge_tree(n, src, dst, lengths)
        a, b = np.triu_indices(n, 1)
        np.testing.assert_allclose(tree.lengths[tree.lca(a, b) - n], dist[a, b])


# ---------------------------------------------------------------- 3D clustering


def test_two_feature_groups_split_below_their_gap_and_merge_above_it():
    """Two touching rows of points; features inside a group step by 0.02, the groups are 0.3 apart.
    Every threshold in (0.02, 0.3] gives exactly the two groups; above 0.3 they merge into one."""
    xyz = np.stack([np.arange(20.0) * 0.1, np.zeros(20), np.zeros(20)], axis=1)
    features = np.zeros((20, 2), np.float32)
    features[:10, 0] = np.arange(10) * 0.02
    features[10:, 0] = 0.18 + 0.3 + np.arange(10) * 0.02
    src, dst = knn_edges(xyz, 4)
    thresholds = [0.01, 0.05, 0.29, 0.31, 0.5]
    levels = segment_levels(features, src, dst, thresholds, max_segments=200)
    assert len(np.unique(levels[0])) == 20  # below the in-group step: every point alone
    for level in (1, 2):
        assert levels[level][:10].tolist() == [levels[level][0]] * 10
        assert levels[level][10:].tolist() == [levels[level][10]] * 10
        assert levels[level][0] != levels[level][10]
    assert len(np.unique(levels[3])) == 1 and len(np.unique(levels[4])) == 1


def test_segments_are_numbered_by_size_and_capped():
    labels = np.array([5, 5, 1, 1, 1, 9, 7, 7, 7, 7])
    assert relabel_by_size(labels, 200).tolist() == [2, 2, 1, 1, 1, 3, 0, 0, 0, 0]
    assert relabel_by_size(labels, 2).tolist() == [2, 2, 1, 1, 1, 2, 0, 0, 0, 0]


def test_transfer_takes_the_mode_of_the_nearest_points_and_cuts_far_pixels():
    from scipy.spatial import cKDTree

    xyz = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5, 0, 0], [5.1, 0, 0]], float)
    levels = np.array([[3, 3, 4, 7, 7]], np.uint8)
    query = np.array([[0.05, 0, 0], [5.05, 0, 0], [20, 0, 0]])
    out = transfer_labels(cKDTree(xyz), levels, query, k=3, max_distance=5.5, unassigned=200)
    assert out.tolist() == [[3, 7, 200]]


# ---------------------------------------------------------------- masks: rules, format, levels


def _disk_masks() -> np.ndarray:
    """12 masks on 20x20: a big square, a child, a grandchild, a near-copy of the child, 8 dots."""
    masks = np.zeros((12, 20, 20), bool)
    masks[0, 2:18, 2:18] = True
    masks[1, 4:10, 4:10] = True
    masks[2, 5:7, 5:7] = True
    masks[3, 4:10, 4:11] = True  # IoU with mask 1 = 36/42 < 0.9, mask 1 inside it
    for i in range(8):
        masks[4 + i, 12 + i // 4, 12 + 2 * (i % 4)] = True
    return masks


def test_mask_relations_follow_the_inside_and_same_rules():
    masks = _disk_masks()
    inside, same = mask_relations(masks)
    assert inside[1, 0] and inside[2, 1] and inside[2, 0] and inside[1, 3] and not inside[0, 1]
    assert not inside[3, 1]  # 36/42 of mask 3 is in mask 1: not > 0.95
    near = masks.copy()
    near[3] = masks[1]
    near[3, 4, 10] = True  # IoU 36/37 > 0.9: the same mask, not a child
    inside2, same2 = mask_relations(near)
    assert same2[1, 3] and not inside2[1, 3] and np.diag(same2).all()


def test_masks_round_trip_in_lexicographic_file_order(tmp_path):
    masks = _disk_masks()
    write_view_masks(str(tmp_path), "scene", "20", masks)
    names = sorted(os.listdir(tmp_path / "scene" / "seg" / "20"))
    assert names[:4] == ["0.png", "1.png", "10.png", "11.png"]
    loaded = load_view_masks(str(tmp_path), "scene", "20", 20, 20)
    order = [int(n[:-4]) for n in names]
    np.testing.assert_array_equal(loaded.masks, masks[order])
    expected_inside, _ = mask_relations(masks[order])
    np.testing.assert_array_equal(loaded.inside, expected_inside)
    resized = load_view_masks(str(tmp_path), "scene", "20", 40, 40)  # nearest resize, same aspect
    assert resized.masks.shape == (12, 40, 40)
    assert load_view_masks(str(tmp_path), "scene", "absent", 20, 20) is None


def test_bad_mask_files_are_errors_that_name_the_file(tmp_path):
    write_view_masks(str(tmp_path), "s", "0", _disk_masks()[:3])
    hierarchy = tmp_path / "s" / "seg_hierarchy" / "0_inside.npy"
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    hierarchy.write_bytes(buffer.getvalue())
    with pytest.raises(MaskError, match="0_inside.npy") as error:
        load_view_masks(str(tmp_path), "s", "0", 20, 20)
    assert "not a plain .npy" in str(error.value)
    np.save(hierarchy, np.zeros((2, 2), bool))
    with pytest.raises(MaskError, match=r"expected shape \[3, 3\].*0_inside.npy"):
        load_view_masks(str(tmp_path), "s", "0", 20, 20)
    hierarchy.unlink()
    with pytest.raises(MaskError, match="missing hierarchy matrix.*0_inside.npy"):
        load_view_masks(str(tmp_path), "s", "0", 20, 20)
    np.save(hierarchy, np.zeros((3, 3), bool))
    (tmp_path / "s" / "seg" / "0" / "1.png").write_bytes(b"not a png")
    with pytest.raises(MaskError, match="1.png"):
        load_view_masks(str(tmp_path), "s", "0", 20, 20)
    (tmp_path / "s" / "seg" / "0" / "1.png").write_bytes(images.encode_png(np.zeros((30, 10), np.uint8)))
    with pytest.raises(MaskError, match="does not match the view's 20x20.*1.png"):
        load_view_masks(str(tmp_path), "s", "0", 20, 20)


def test_level_maps_cut_the_mask_tree_by_depth():
    masks = _disk_masks()
    inside, _ = mask_relations(masks)
    stack, unassigned = level_maps(masks, inside, 4)
    assert unassigned == 12 and stack.shape == (4, 20, 20)
    assert stack[0, 5, 5] == 0 and stack[0, 0, 0] == 12  # roots: the big square (it contains mask 3)
    assert stack[1, 5, 5] == 3 and stack[2, 5, 5] == 1 and stack[3, 5, 5] == 2
    assert stack[3, 12, 12] == 4  # a leaf dot stays at the deeper levels


# ---------------------------------------------------------------- pair sampling


def test_hierarchical_pairs_walk_up_the_inside_tree():
    """Samples 0-99: mask A holds 0-59 with child B (0-29) with child C (0-9)."""
    masks = np.zeros((3, 100), bool)
    masks[0, :60], masks[1, :30], masks[2, :10] = True, True, True
    inside, _ = mask_relations(masks)
    assert direct_parents(inside, 2).tolist() == [1]
    pairs = sample_pairs(masks, inside, np.random.default_rng(0), pairs_per_mask=16)
    # flat groups (3) + A's and B's residuals (2) + C's walk: C|B, B|A, top (3)
    assert pairs.positives.shape == (8, 16, 2) and pairs.negatives.shape == (8, 16, 2)
    walk_pos, walk_neg = pairs.positives[-3:], pairs.negatives[-3:]
    assert (walk_pos[0] < 10).all()  # inside C
    assert (walk_neg[0][:, 0] < 10).all() and ((walk_neg[0][:, 1] >= 10) & (walk_neg[0][:, 1] < 30)).all()
    np.testing.assert_array_equal(walk_pos[1], walk_neg[0])  # the level below's negatives
    assert ((walk_neg[1][:, 0] >= 10) & (walk_neg[1][:, 0] < 30)).all()
    assert ((walk_neg[1][:, 1] >= 30) & (walk_neg[1][:, 1] < 60)).all()
    np.testing.assert_array_equal(walk_pos[2], walk_neg[1])
    assert (walk_neg[2][:, 1] >= 60).all()  # outside the top mask
    flat = sample_pairs(masks, inside, np.random.default_rng(0), pairs_per_mask=16, hierarchical=False)
    assert flat.positives.shape[0] == 3


def test_masks_with_too_few_samples_inside_or_outside_are_dropped():
    masks = np.zeros((3, 100), bool)
    masks[0, :5] = True  # 5 inside: not more than 5
    masks[1, :95] = True  # 5 outside
    masks[2, :50] = True
    pairs = sample_pairs(masks, np.zeros((3, 3), bool), np.random.default_rng(0))
    assert pairs.groups == 1


# ---------------------------------------------------------------- losses and field


def test_contrastive_loss_prefers_similar_positives():
    features = _unit((1.0, 0.0), (1.0, 0.05), (0.0, 1.0)).float()
    good = contrastive_loss(cosine_similarity(features, np.array([[[0, 1]]])),
                            cosine_similarity(features, np.array([[[0, 2]]])))  # fmt: skip
    bad = contrastive_loss(cosine_similarity(features, np.array([[[0, 2]]])),
                           cosine_similarity(features, np.array([[[0, 1]]])))  # fmt: skip
    assert float(good) < 1e-3 < 5 < float(bad)


def test_field_outputs_unit_256_features_and_learns():
    torch.manual_seed(0)
    field = FeatureField(HashGridEncoding(levels=4, features_per_level=2, log2_table_size=10, max_resolution=32))
    xyz = np.random.default_rng(0).random((200, 3)) * [4.0, 3.0, 2.5]
    unit = torch.as_tensor(PositionNormaliser(xyz)(xyz))
    assert unit.min() >= 0 and unit.max() <= 1
    features, norms = field(unit)
    assert features.shape == (200, 256)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(200))
    left = unit[:, 0] < 0.5
    optimiser = torch.optim.Adam(field.parameters(), lr=1e-2, eps=1e-15)
    for _ in range(60):  # pull the two halves of the box apart
        features, _ = field(unit)
        similarity = features @ features.T
        same = left[:, None] == left[None, :]
        loss = similarity[~same].mean() - similarity[same].mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < -1.0


# ---------------------------------------------------------------- metrics


def test_normal_covering_of_the_ground_truth_is_one_and_of_a_merge_is_lower():
    gt = np.zeros((10, 20), np.int64)
    gt[:, :10], gt[:, 10:] = 1, 2
    rng = np.random.default_rng(0)
    assert normal_covering(gt, gt[None], rng).score == pytest.approx(1.0)
    merged = np.zeros((1, 10, 20), np.int64)
    assert normal_covering(gt, merged, rng).score == pytest.approx(0.5)
    both = np.stack([merged[0], gt])  # the best level wins
    cover = normal_covering(gt, both, rng)
    assert cover.score == pytest.approx(1.0) and (cover.levels == 1).all()


def test_view_consistency_is_one_for_consistent_labels_and_drops_for_inconsistent_ones():
    gt = np.zeros((10, 20), np.int64)
    gt[:, :10], gt[:, 10:] = 1, 2
    stack_a = gt[None].copy()
    pix = np.arange(200)
    rng = np.random.default_rng(0)
    cover = normal_covering(gt, stack_a, rng)
    assert view_consistency(gt, stack_a, stack_a, pix, pix, 99, cover, rng) == pytest.approx(1.0)
    stack_b = stack_a.copy()
    stack_b[0, :5, :] = 7  # B splits both segments along another line
    score = view_consistency(gt, stack_a, stack_b, pix, pix, 99, cover, rng)
    assert 0.3 < score < 0.8


# ---------------------------------------------------------------- configs


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "hierarchy")


@pytest.mark.parametrize("name", ["synthetic", "posed-rgbd", "sam", "cluster"])
def test_shipped_configs_validate(name):
    from openscene_ray.hierarchy.config import HierarchyConfig
    from openscene_ray.kernel.config import load_config

    paths = [os.path.join(CONFIGS, f"{name}.yaml")]
    config = load_config(HierarchyConfig, paths, base={"manifest": "m.parquet", "output": "out", "masks": "masks"})
    assert config.train.temperature == 0.1 and config.train.euclidean_weight == config.train.ultrametric_weight == 1
    assert len(config.segment.thresholds) == 50 and config.segment.neighbours == 16
    if name == "sam":
        assert config.sam.checkpoint.endswith("sam_vit_h_4b8939.pth") and os.path.isabs(config.sam.checkpoint)


def test_synth_world_config_validates():
    from openscene_ray.kernel.config import load_config
    from openscene_ray.synth import SynthConfig

    config = load_config(SynthConfig, os.path.join(CONFIGS, "synth-world.yaml"))
    assert config.hierarchy is not None and config.hierarchy.drop == 0.15


def test_config_errors_name_the_field():
    from openscene_ray.hierarchy.config import HierarchyConfig
    from openscene_ray.kernel.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="masks: give a masks root"):
        load_config(HierarchyConfig, base={"manifest": "m", "output": "o"})
    with pytest.raises(ConfigError, match=r"level indices \[60\]"):
        load_config(HierarchyConfig, base={"manifest": "m", "output": "o", "masks": "k", "segment": {"view_levels": [60]}})
