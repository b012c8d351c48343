"""Label sets: sizes, names at known positions, the reference's "other" substitutions, prompts."""

from __future__ import annotations

from collections import Counter

import pytest

from openscene_ray.kernel.labels import PROMPT_TEMPLATE, get_label_set, label_set_names


@pytest.mark.parametrize(
    ("name", "count"),
    [("scannet20", 20), ("matterport21", 21), ("matterport40", 40), ("matterport80", 80),
     ("matterport160", 160), ("nuscenes16", 16)],
)  # fmt: skip
def test_class_counts(name, count):
    label_set = get_label_set(name)
    assert label_set.num_classes == count
    assert len(set(label_set.class_names)) == count
    assert name in label_set_names()


def test_aliases():
    assert get_label_set("scannet") is get_label_set("scannet20")
    assert get_label_set("matterport") is get_label_set("matterport21")
    assert get_label_set("nuscenes") is get_label_set("nuscenes16")
    with pytest.raises(KeyError, match="matterport160"):
        get_label_set("matterport41")


@pytest.mark.parametrize(
    ("name", "index", "class_name"),
    [
        ("scannet20", 0, "wall"), ("scannet20", 15, "shower curtain"), ("scannet20", 19, "otherfurniture"),
        ("matterport21", 19, "other"), ("matterport21", 20, "ceiling"),
        ("matterport40", 0, "wall"), ("matterport40", 1, "door"), ("matterport40", 19, "night stand"),
        ("matterport40", 38, "air vent"), ("matterport40", 39, "faucet"),
        ("matterport80", 40, "photo"), ("matterport80", 49, "refridgerator"), ("matterport80", 78, "headboard"),
        ("matterport80", 79, "bucket"),
        ("matterport160", 80, "candle"), ("matterport160", 112, "excercise equipment"),
        ("matterport160", 158, "person"), ("matterport160", 159, "alarm"),
        ("nuscenes16", 4, "construction vehicle"), ("nuscenes16", 15, "vegetation"),
    ],
)  # fmt: skip
def test_known_names(name, index, class_name):
    assert get_label_set(name).class_names[index] == class_name


def test_matterport_sets_extend_each_other():
    m40, m80, m160 = (get_label_set(f"matterport{k}").class_names for k in (40, 80, 160))
    assert m80[:40] == m40 and m160[:80] == m80


def test_prompt_template():
    assert PROMPT_TEMPLATE == "a {} in a scene"
    prompts = get_label_set("matterport40").prompts()
    assert prompts[0] == "a wall in a scene"
    assert prompts[19] == "a night stand in a scene"
    assert get_label_set("scannet20").prompts()[-1] == "a otherfurniture in a scene"


@pytest.mark.parametrize(
    ("name", "other_index", "replaced"),
    [("scannet20", 19, "a otherfurniture in a scene"), ("matterport21", 19, "a other in a scene"),
     ("matterport40", 38, "a air vent in a scene"), ("matterport80", 78, "a headboard in a scene"),
     ("matterport160", 158, "a person in a scene")],
)  # fmt: skip
def test_openscene_compat_other(name, other_index, replaced):
    label_set = get_label_set(name)
    plain, compat = label_set.prompts(), label_set.prompts(openscene_compat=True)
    assert plain[other_index] == replaced
    assert compat[other_index] == "other"
    changed = [i for i, (a, b) in enumerate(zip(plain, compat)) if a != b]
    assert changed == [other_index]
    if name.startswith("matterport"):
        assert other_index == label_set.num_classes - 2
    assert label_set.prompt_to_class() == list(range(label_set.num_classes))


def test_nuscenes_detailed_prompts():
    label_set = get_label_set("nuscenes16")
    prompts = label_set.prompts()
    mapping = label_set.prompt_to_class()
    assert len(prompts) == len(mapping) == 43
    assert prompts == label_set.prompts(openscene_compat=True)
    assert prompts[0] == "a barrier in a scene" and prompts[-1] == "a woods in a scene"
    pairs = dict(zip(prompts, mapping))
    named = {
        "barricade": "barrier", "bulldozer": "construction vehicle", "pedestrian": "person",
        "shipping container": "trailer", "road": "drivable surface", "curb": "other flat",
        "traffic median": "other flat", "meadow": "terrain", "awning": "manmade", "tree trunk": "vegetation",
    }  # fmt: skip
    for prompt, class_name in named.items():
        assert label_set.class_names[pairs[PROMPT_TEMPLATE.format(prompt)]] == class_name
    per_class = Counter(mapping)
    assert sorted(per_class) == list(range(16))  # every class has at least one prompt
    assert [per_class[k] for k in range(16)] == [2, 1, 1, 1, 5, 1, 2, 1, 5, 1, 1, 3, 1, 6, 4, 8]
    assert mapping == sorted(mapping)
