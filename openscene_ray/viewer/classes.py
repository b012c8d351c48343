"""Label sets for the page's segmentation mode: a registered set (ScanNet-20, Matterport-21/40/80/160,
nuScenes-16, with their own prompts) or a comma-separated list of class names typed by the user."""

from __future__ import annotations

from dataclasses import dataclass

from openscene_ray.kernel.labels import (
    LABEL_SETS,
    PROMPT_TEMPLATE,
    get_label_set,
    label_set_names,
)

__all__ = ["MAX_CLASS_CHARS", "MAX_CLASSES", "ClassSet", "label_set_choices", "parse_class_set"]

MAX_CLASSES = 200
MAX_CLASS_CHARS = 100


@dataclass(frozen=True)
class ClassSet:
    """Classes, the prompts that embed them and the class each prompt votes for (max over a
    class's prompts, as the evaluation does for nuScenes' detailed prompts)."""

    name: str
    class_names: tuple[str, ...]
    prompts: tuple[str, ...]
    prompt_to_class: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def label_set_choices() -> list[str]:
    """The registered label sets, ScanNet first, then Matterport by size, then the rest."""
    order = {"scannet20": 0, "matterport21": 1, "matterport40": 2, "matterport80": 3, "matterport160": 4}
    return sorted(label_set_names(), key=lambda name: (order.get(name, 99), name))


def parse_class_set(text: str, template: str | None = None) -> ClassSet:
    """A registered label set by name or alias (its own prompts), or a comma-separated list of
    class names, each embedded as ``template`` (default ``'a {} in a scene'``, the label sets'
    template). Raises ValueError with a message for the page."""
    text = (text or "").strip()
    if not text:
        raise ValueError("choose a label set or type class names separated by commas")
    if "," not in text:
        if text.lower() not in LABEL_SETS:
            raise ValueError(f"unknown label set {text[:60]!r}: choose one of {', '.join(label_set_choices())} "
                             "or type two or more class names separated by commas")
        labels = get_label_set(text.lower())
        return ClassSet(labels.name, labels.class_names, tuple(labels.prompts()), tuple(labels.prompt_to_class()))
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if len(names) < 2:
        raise ValueError("type at least two different class names separated by commas")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names)} class names; the limit is {MAX_CLASSES}")
    long = [name for name in names if len(name) > MAX_CLASS_CHARS]
    if long:
        raise ValueError(f"a class name has {len(long[0])} characters; the limit is {MAX_CLASS_CHARS}")
    template = template or PROMPT_TEMPLATE
    return ClassSet("custom", tuple(names), tuple(template.format(n) for n in names), tuple(range(len(names))))
