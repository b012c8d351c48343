"""Label sets (a registry) and the text prompts built from them.

Class names follow the OpenScene reference (see the project's reference facts §5). Class ``k`` of
a label set is label id ``k`` in points and label maps; 255 is ignore. The reference's "other"
substitutions are applied only when ``openscene_compat`` is requested.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LabelSet", "PROMPT_TEMPLATE", "get_label_set", "label_set_names", "register_label_set"]

PROMPT_TEMPLATE = "a {} in a scene"


@dataclass(frozen=True)
class LabelSet:
    """Ordered class names plus optional detailed prompts mapped onto the classes.

    ``prompt_classes`` (nuScenes) lists extra prompts and the class index each maps to; logits
    of prompts that share a class are reduced with max. ``compat_other_index`` is the class whose
    prompt the reference replaces by the bare word "other".
    """

    name: str
    class_names: tuple[str, ...]
    detailed_prompts: tuple[tuple[str, int], ...] = ()
    compat_other_index: int | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prompts(self, openscene_compat: bool = False) -> list[str]:
        """Text prompts, one per query: the template over the class names (or detailed prompts)."""
        if self.detailed_prompts:
            return [PROMPT_TEMPLATE.format(p) for p, _ in self.detailed_prompts]
        names = list(self.class_names)
        if openscene_compat and self.compat_other_index is not None:
            names[self.compat_other_index] = "other"
        return [PROMPT_TEMPLATE.format(n) for n in names]

    def prompt_to_class(self) -> list[int]:
        """For each prompt of :meth:`prompts`, the class index it votes for."""
        if self.detailed_prompts:
            return [c for _, c in self.detailed_prompts]
        return list(range(self.num_classes))


_REGISTRY: dict[str, LabelSet] = {}


def register_label_set(label_set: LabelSet) -> LabelSet:
    for key in (label_set.name, *label_set.aliases):
        if key in _REGISTRY:
            raise ValueError(f"label set {key!r} is already registered")
        _REGISTRY[key] = label_set
    return label_set


def get_label_set(name: str) -> LabelSet:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(label_set_names())}") from None


def label_set_names() -> list[str]:
    return sorted({ls.name for ls in _REGISTRY.values()})


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
