"""Label sets (a registry) and the text prompts built from them.

Class names follow the OpenScene reference (reference facts §5; the Matterport-40/80/160 and
nuScenes lists are those of OpenScene's ``dataset/label_constants.py``, spelling included, e.g.
"refridgerator", "excercise equipment"). Class ``k`` of a label set is label id ``k`` in points and
label maps; 255 is ignore. The reference's "other" substitutions (last ScanNet class, second-to-last
class of every Matterport set) are applied only when ``openscene_compat`` is requested.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openscene_ray.kernel.registry import Registry

__all__ = ["LABEL_SETS", "PROMPT_TEMPLATE", "LabelSet", "get_label_set", "label_set_names", "register_label_set"]

PROMPT_TEMPLATE = "a {} in a scene"


@dataclass(frozen=True)
class LabelSet:
    """Ordered class names plus optional detailed prompts mapped onto the classes.

    ``prompt_classes`` (nuScenes) lists extra prompts and the class index each maps to; logits
    of prompts that share a class are reduced with max. ``compat_other_index`` is the class whose
    prompt the reference replaces by the bare word "other". ``ground_classes`` are the classes
    of the road-level ground (outdoor LiDAR sets only): SSOV's AFI keeps only these on the
    ground plane it fits near the ego vehicle; empty means the set has no such rule.
    """

    name: str
    class_names: tuple[str, ...]
    detailed_prompts: tuple[tuple[str, int], ...] = ()
    compat_other_index: int | None = None
    aliases: tuple[str, ...] = field(default=())
    ground_classes: tuple[int, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prompts(self, openscene_compat: bool = False) -> list[str]:
        """Text prompts, one per query: the template over the class names (or detailed prompts).

        With ``openscene_compat`` the prompt of ``compat_other_index`` is the bare word "other",
        as the reference does after templating.
        """
        if self.detailed_prompts:
            return [PROMPT_TEMPLATE.format(p) for p, _ in self.detailed_prompts]
        prompts = [PROMPT_TEMPLATE.format(n) for n in self.class_names]
        if openscene_compat and self.compat_other_index is not None:
            prompts[self.compat_other_index] = "other"
        return prompts

    def prompt_to_class(self) -> list[int]:
        """For each prompt of :meth:`prompts`, the class index it votes for."""
        if self.detailed_prompts:
            return [c for _, c in self.detailed_prompts]
        return list(range(self.num_classes))


LABEL_SETS: Registry[LabelSet] = Registry("label set")


def register_label_set(label_set: LabelSet) -> LabelSet:
    """Make ``label_set`` available by its name and aliases."""
    return LABEL_SETS.register(label_set.name, label_set, aliases=label_set.aliases)


get_label_set = LABEL_SETS.get


def label_set_names() -> list[str]:
    """The label sets' names (aliases excluded)."""
    return sorted(ls.name for ls in LABEL_SETS.values())


SCANNET_20 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)  # fmt: skip

register_label_set(LabelSet("scannet20", SCANNET_20, compat_other_index=19, aliases=("scannet",)))

# Matterport-21: ScanNet-20 with "other" in place of otherfurniture, plus ceiling.
MATTERPORT_21 = (*SCANNET_20[:19], "other", "ceiling")
register_label_set(LabelSet("matterport21", MATTERPORT_21, compat_other_index=19, aliases=("matterport",)))

NUSCENES_16 = (
    "barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "person",
    "traffic cone", "trailer", "truck", "drivable surface", "other flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)  # fmt: skip

# Matterport-40/80/160: the first K NYU class names of Matterport's category_mapping.tsv in file
# order, skipping void/unknown. Each list extends the previous one.
MATTERPORT_40 = (
    "wall", "door", "ceiling", "floor", "picture", "window", "chair", "pillow", "lamp", "cabinet",
    "curtain", "table", "plant", "mirror", "towel", "sink", "shelves", "sofa", "bed", "night stand",
    "toilet", "column", "banister", "stairs", "stool", "vase", "television", "pot", "desk", "box",
    "coffee table", "counter", "bench", "garbage bin", "fireplace", "clothes", "bathtub", "book",
    "air vent", "faucet",
)  # fmt: skip
MATTERPORT_80 = (
    *MATTERPORT_40,
    "photo", "toilet paper", "fan", "railing", "sculpture", "dresser", "rug", "ottoman", "bottle",
    "refridgerator", "bookshelf", "wardrobe", "pipe", "monitor", "stand", "drawer", "container",
    "light switch", "purse", "door way", "basket", "chandelier", "oven", "clock", "stove",
    "washing machine", "shower curtain", "fire alarm", "bin", "chest", "microwave", "blinds", "bowl",
    "tissue box", "plate", "tv stand", "shoe", "heater", "headboard", "bucket",
)  # fmt: skip
MATTERPORT_160 = (
    *MATTERPORT_80,
    "candle", "flower pot", "speaker", "furniture", "sign", "air conditioner", "fire extinguisher",
    "curtain rod", "floor mat", "printer", "telephone", "blanket", "handle", "shower head", "soap",
    "keyboard", "thermostat", "radiator", "kitchen island", "paper towel", "sheet", "glass",
    "dishwasher", "cup", "ladder", "garage door", "hat", "exit sign", "piano", "board", "rope", "ball",
    "excercise equipment", "hanger", "candlestick", "light", "scale", "bag", "laptop", "treadmill",
    "guitar", "display case", "toilet paper holder", "bar", "tray", "urn", "decorative plate",
    "pool table", "jacket", "bottle of soap", "water cooler", "utensil", "tea pot", "stuffed animal",
    "paper towel dispenser", "lamp shade", "car", "toilet brush", "doll", "drum", "whiteboard",
    "range hood", "candelabra", "toy", "foot rest", "soap dish", "placemat", "cleaner", "computer",
    "knob", "paper", "projector", "coat hanger", "case", "pan", "luggage", "trinket", "chimney",
    "person", "alarm",
)  # fmt: skip
for _k, _names in ((40, MATTERPORT_40), (80, MATTERPORT_80), (160, MATTERPORT_160)):
    register_label_set(LabelSet(f"matterport{_k}", _names, compat_other_index=_k - 2))

# nuScenes: 43 detailed prompts, each voting for one of the 16 classes (max over its prompts).
NUSCENES_DETAILED = (
    ("barrier", 0), ("barricade", 0), ("bicycle", 1), ("bus", 2), ("car", 3), ("bulldozer", 4),
    ("excavator", 4), ("concrete mixer", 4), ("crane", 4), ("dump truck", 4), ("motorcycle", 5),
    ("person", 6), ("pedestrian", 6), ("traffic cone", 7), ("trailer", 8), ("semi trailer", 8),
    ("cargo container", 8), ("shipping container", 8), ("freight container", 8), ("truck", 9),
    ("road", 10), ("curb", 11), ("traffic island", 11), ("traffic median", 11), ("sidewalk", 12),
    ("grass", 13), ("grassland", 13), ("lawn", 13), ("meadow", 13), ("turf", 13), ("sod", 13),
    ("building", 14), ("wall", 14), ("pole", 14), ("awning", 14), ("tree", 15), ("trunk", 15),
    ("tree trunk", 15), ("bush", 15), ("shrub", 15), ("plant", 15), ("flower", 15), ("woods", 15),
)  # fmt: skip
# Ground classes (AFI's ground rule, seed facts §3.6 step 4): drivable surface, other flat,
# sidewalk, terrain.
register_label_set(LabelSet("nuscenes16", NUSCENES_16, detailed_prompts=NUSCENES_DETAILED, aliases=("nuscenes",),
                            ground_classes=(10, 11, 12, 13)))
