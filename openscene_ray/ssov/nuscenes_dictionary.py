"""SSOV's nuScenes class dictionary: 175 phrases in 31 groups (seed facts §3.3).

The phrases, their order and their groups are those of ``CategoryProcessor.categories`` in the
original repository (sbysbysbys/UOV, renamed AFOV; identical in all five copies of
``nuscenes_tools.py``: afi/, pretrain/, ov_segment/SAN, CAT-Seg/demo, fc-clip/demo), read at commit
aaf6794. The vocabulary index of a phrase is its position in the flattened list: the 2D
segmenters' ``category_id``. Duplicates are kept where the original has them ("scooter" in the
motorcycle and the personal-mobility groups, "pavilion" twice among the man-made phrases), and
so is the leading space of " rolling hills".

Each group maps to a nuScenes lidarseg class (``get_class_id_to_real_class_id``, the raw index
0..31) and through ``eval_labels`` to the 16 evaluation classes; groups whose raw class is not
evaluated (bicycle rack, police vehicle, ambulance, stroller, wheelchair, personal mobility,
animal, pushable/pullable, debris, static.other, ego) map to ``None``: ignored.
"""

from __future__ import annotations

__all__ = ["NUSCENES_GROUPS", "RAW_TO_NUSCENES16"]

# nuScenes lidarseg raw index -> nuScenes-16 class name (``eval_labels``; the rest are ignored).
RAW_TO_NUSCENES16 = {
    2: "person", 3: "person", 4: "person", 6: "person", 9: "barrier", 12: "traffic cone", 14: "bicycle",
    15: "bus", 16: "bus", 17: "car", 18: "construction vehicle", 21: "motorcycle", 22: "trailer", 23: "truck",
    24: "drivable surface", 25: "other flat", 26: "sidewalk", 27: "terrain", 28: "manmade", 30: "vegetation",
}  # fmt: skip

# (nuScenes lidarseg class, its raw index, the group's phrases), in the original order.
NUSCENES_GROUPS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("vehicle.car", 17, ("car", "sedan", "hatch-back", "wagon", "van", "mini-van", "SUV", "jeep")),
    ("vehicle.truck", 23, ("truck", "pickup truck", "lorry truck", "semi truck", "personal use truck",
                           "cargo hauling truck", "trailer truck")),
    ("vehicle.bus.bendy", 15, ("bendy bus", "articulated bus", "multi-section shuttle")),
    ("vehicle.bus.rigid", 16, ("bus", "standard bus", "city bus", "rigid bus")),
    ("vehicle.construction", 18, ("construction vehicle", "crane", "bulldozer", "dump truck")),
    ("vehicle.motorcycle", 21, ("motorcycle", "a person on a motorcycle", "scooter", "vespa")),
    ("vehicle.bicycle", 14, ("bicycle", "road bicycle", "mountain bike", "electric bike", "a person on a bicycle")),
    ("static_object.bicycle_rack", 13, ("bicycle_rack", "bicycle parking", "bike rack", "cycle stand")),
    ("vehicle.trailer", 22, ("vehicle trailer", "truck trailer", "car trailer", "motorcycle trailer",
                             "container on a truck")),
    ("vehicle.emergency.police", 20, ("police vehicle", "police car", "police motorcycle", "police bicycle")),
    ("vehicle.emergency.ambulance", 19, ("ambulance", "emergency ambulance", "medical transport")),
    ("human.pedestrian.adult", 2, ("human", "person", "people", "adult", "walking adult", "mannequin")),
    ("human.pedestrian.child", 3, ("walking child", "child")),
    ("human.pedestrian.construction_worker", 4, ("construction worker", "construction site worker")),
    ("human.pedestrian.stroller", 7, ("stroller", "baby stroller", "child stroller", "a stroller with a child")),
    ("human.pedestrian.wheelchair", 8, ("wheelchair", "manual wheelchair", "a person on a manual wheelchair",
                                        "electric wheelchair", "a person on a electric wheelchair")),
    ("human.pedestrian.personal_mobility", 5, ("skateboard", "a person on a skateboard", "segway",
                                               "a person on a segway", "scooter", "a person on a scooter")),
    ("human.pedestrian.police_officer", 6, ("police_officer", "traffic police", "patrolling officer")),
    ("animal", 1, ("animal", "cat", "dog", "deer", "bird")),
    ("movable_object.trafficcone", 12, ("cone", "safety cone")),
    ("movable_object.barrier", 9, ("barrier", "construction zone barrier", "traffic barrier")),
    ("movable_object.pushable_pullable", 11, ("dolley", "wheelbarrow", "shopping cart", "garbage-bin with wheels")),
    ("movable_object.debris", 10, ("obstacle", "full trash bag", "construction material")),
    ("flat.driveable_surface", 24, ("driveable surface", "highway", "cement road", "asphalt road", "road",
                                    "gravel road", "paved road", "unpaved road")),
    ("flat.sidewalk", 26, ("walkway", "sidewalk", "bike path", "traffic island")),
    ("flat.terrain", 27, ("grass", "soil", "sand", " rolling hills", "earth",
                          "ground level horizontal vegetation (< 20 cm tall)")),
    ("flat.other", 25, ("rail track", "stairs with at most 3 steps", "lake", "river")),
    ("static.manmade", 28, (
        "man-made object", "building", "house", "premises", "structure", "part of construction", "windowspane",
        "door", "brick wall", "wall", "ceiling", "guard rail", "fence", "pole", "drainage", "hydrant", "flag",
        "street sign", "electric circuit box", "parking meter", "stairs with more than 3 steps", "utility pole",
        "signboard", "road sign", "traffic light", "bus shelter", "trash bin without wheels", "fire hydrant",
        "industrial building", "chair", "ladder", "pavilion", "plate", "billboard", "street lamp", "bench",
        "one side of the building", "bridge", "lamp", "banner", "generater", "telephone booth", "cell box",
        "pavilion", "tower", "curtain", "screen",
    )),
    ("static.vegetation", 30, ("bush", "tree", "potted plant", "plant")),
    ("static.other", 29, ("undistinguishable object", "sky", "cloudy sky", "clear sky", "overcast")),
    ("vehicle.ego", 31, ("bonnet under the picture",)),
)  # fmt: skip
