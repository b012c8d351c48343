"""SSOV's class dictionary (seed facts §3.3): every one of the 175 phrases maps to the nuScenes-16
class the facts give; the shipped YAML dictionaries load; user dictionaries are read safely."""

from __future__ import annotations

import numpy as np
import pytest

from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.ssov.dictionary import dictionary_yaml, load_dictionary

CONFIGS = "configs/ssov/dictionaries"

# The facts' group sizes, in order (31 groups, 175 phrases).
GROUP_SIZES = [8, 7, 3, 4, 4, 4, 5, 4, 5, 4, 3, 6, 2, 2, 4, 5, 6, 3, 5, 2, 3, 4, 3, 8, 4, 6, 4, 47, 4, 5, 1]

# Group by group, in vocabulary order: (the group's phrases, its nuScenes-16 class per the facts; None =
# ignored). "scooter" is in two groups (motorcycle, then personal mobility: ignored), "pavilion" twice.
TABLE = [
    (["car", "sedan", "hatch-back", "wagon", "van", "mini-van", "SUV", "jeep"], "car"),
    (["truck", "pickup truck", "lorry truck", "semi truck", "personal use truck", "cargo hauling truck",
      "trailer truck"], "truck"),
    (["bendy bus", "articulated bus", "multi-section shuttle"], "bus"),
    (["bus", "standard bus", "city bus", "rigid bus"], "bus"),
    (["construction vehicle", "crane", "bulldozer", "dump truck"], "construction vehicle"),
    (["motorcycle", "a person on a motorcycle", "scooter", "vespa"], "motorcycle"),
    (["bicycle", "road bicycle", "mountain bike", "electric bike", "a person on a bicycle"], "bicycle"),
    (["bicycle_rack", "bicycle parking", "bike rack", "cycle stand"], None),
    (["vehicle trailer", "truck trailer", "car trailer", "motorcycle trailer", "container on a truck"], "trailer"),
    (["police vehicle", "police car", "police motorcycle", "police bicycle"], None),
    (["ambulance", "emergency ambulance", "medical transport"], None),
    (["human", "person", "people", "adult", "walking adult", "mannequin"], "person"),
    (["walking child", "child"], "person"),
    (["construction worker", "construction site worker"], "person"),
    (["stroller", "baby stroller", "child stroller", "a stroller with a child"], None),
    (["wheelchair", "manual wheelchair", "a person on a manual wheelchair", "electric wheelchair",
      "a person on a electric wheelchair"], None),
    (["skateboard", "a person on a skateboard", "segway", "a person on a segway", "scooter",
      "a person on a scooter"], None),
    (["police_officer", "traffic police", "patrolling officer"], "person"),
    (["animal", "cat", "dog", "deer", "bird"], None),
    (["cone", "safety cone"], "traffic cone"),
    (["barrier", "construction zone barrier", "traffic barrier"], "barrier"),
    (["dolley", "wheelbarrow", "shopping cart", "garbage-bin with wheels"], None),
    (["obstacle", "full trash bag", "construction material"], None),
    (["driveable surface", "highway", "cement road", "asphalt road", "road", "gravel road", "paved road",
      "unpaved road"], "drivable surface"),
    (["walkway", "sidewalk", "bike path", "traffic island"], "sidewalk"),
    (["grass", "soil", "sand", " rolling hills", "earth", "ground level horizontal vegetation (< 20 cm tall)"],
     "terrain"),
    (["rail track", "stairs with at most 3 steps", "lake", "river"], "other flat"),
    (["man-made object", "building", "house", "premises", "structure", "part of construction", "windowspane",
      "door", "brick wall", "wall", "ceiling", "guard rail", "fence", "pole", "drainage", "hydrant", "flag",
      "street sign", "electric circuit box", "parking meter", "stairs with more than 3 steps", "utility pole",
      "signboard", "road sign", "traffic light", "bus shelter", "trash bin without wheels", "fire hydrant",
      "industrial building", "chair", "ladder", "pavilion", "plate", "billboard", "street lamp", "bench",
      "one side of the building", "bridge", "lamp", "banner", "generater", "telephone booth", "cell box",
      "pavilion", "tower", "curtain", "screen"], "manmade"),
    (["bush", "tree", "potted plant", "plant"], "vegetation"),
    (["undistinguishable object", "sky", "cloudy sky", "clear sky", "overcast"], None),
    (["bonnet under the picture"], None),
]  # fmt: skip

ROWS = [(i, phrase, cls) for i, (phrase, cls) in enumerate((p, c) for phrases, c in TABLE for p in phrases)]


def test_the_nuscenes_dictionary_has_175_phrases_in_31_groups():
    d = load_dictionary("nuscenes16")
    assert (d.size, len(d.groups), d.label_set) == (175, 31, "nuscenes16")
    assert [len(g.phrases) for g in d.groups] == GROUP_SIZES == [len(p) for p, _ in TABLE]
    assert len(ROWS) == 175


@pytest.mark.parametrize(("index", "phrase", "expected"), ROWS, ids=[f"{i}:{p.strip()}" for i, p, _ in ROWS])
def test_every_phrase_maps_to_the_class_the_facts_give(index, phrase, expected):
    d = load_dictionary("nuscenes16")
    names = get_label_set("nuscenes16").class_names
    assert d.phrases[index] == phrase
    assert d.phrase_class[index] == (255 if expected is None else names.index(expected))


def test_the_raw_lidarseg_chain_of_the_reference():
    # group -> nuScenes raw class (get_class_id_to_real_class_id) as the reference lists it
    raw = [17, 23, 15, 16, 18, 21, 14, 13, 22, 20, 19, 2, 3, 4, 7, 8, 5, 6, 1, 12, 9, 11, 10, 24, 26, 27, 25, 28, 30, 29,
           31]  # fmt: skip
    assert [g.raw_class for g in load_dictionary("nuscenes16").groups] == raw


def test_the_shipped_yaml_is_the_builtin_dictionary():
    assert load_dictionary(f"{CONFIGS}/nuscenes16.yaml") == load_dictionary("nuscenes16")
    again = load_dictionary("nuscenes16")
    assert dictionary_yaml(again).count("\n- name:") == 31


@pytest.mark.parametrize("name", ["scannet20", "matterport21", "scannet20-classes"])
def test_indoor_dictionaries_cover_their_label_sets(name):
    d = load_dictionary(f"{CONFIGS}/{name}.yaml")
    labels = get_label_set(d.label_set)
    covered = {int(c) for c in d.phrase_class if c != 255}
    assert covered == set(range(labels.num_classes))
    first = [g.phrases[0] for g in d.groups if g.label is not None]
    assert first == [g.label for g in d.groups if g.label is not None]  # the class name leads its group
    assert d.prompts()[0] == "a wall in a scene"


def test_the_class_names_dictionary_is_the_label_sets_prompts():
    from openscene_ray.kernel.text import TextSpaceConfig, build_text_space

    d = load_dictionary(f"{CONFIGS}/scannet20-classes.yaml")
    space = build_text_space(TextSpaceConfig(label_set="scannet20", encoder="synthetic", options={"dim": 32}), False)
    assert d.size == 20 and list(d.prompts()) == list(space.prompts)


def test_same_group_blocks_and_groups():
    d = load_dictionary("nuscenes16")
    same = d.same_group()
    assert same.shape == (175, 175) and same.sum() == sum(n * n for n in GROUP_SIZES)
    assert np.array_equal(same, same.T) and same.diagonal().all()


def test_user_dictionaries_are_validated_and_read_safely(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\nlabel_set: scannet20\ngroups:\n  - {class: sofa, phrases: [couch, settee]}\n"
                    "  - {name: junk, class: null, phrases: [junk]}\n")  # fmt: skip
    d = load_dictionary(str(good))
    assert d.phrases == ("couch", "settee", "junk") and list(d.phrase_class) == [5, 5, 255]
    bad = {
        "unknown class": ("name: x\nlabel_set: scannet20\ngroups: [{class: spaceship, phrases: [ufo]}]\n",
                          "groups.0.class"),
        "no phrases": ("name: x\nlabel_set: scannet20\ngroups: [{class: sofa, phrases: []}]\n", "groups.0.phrases"),
        "unknown key": ("name: x\nlabel_set: scannet20\ngroups: [{klass: sofa, phrases: [a]}]\n", "groups.0"),
        "label set": ("name: x\nlabel_set: nope\ngroups: [{class: sofa, phrases: [a]}]\n", "label_set"),
        "not a mapping": ("- a\n- b\n", "top level"),
        "python tag": ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    }  # fmt: skip
    for case, (text, field) in bad.items():
        path = tmp_path / f"{case.replace(' ', '_')}.yaml"
        path.write_text(text)
        with pytest.raises(InputError, match=field) as info:
            load_dictionary(str(path))
        assert str(path) in str(info.value), case
    with pytest.raises(InputError, match="neither a built-in"):
        load_dictionary(str(tmp_path / "absent.yaml"))
