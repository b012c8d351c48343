"""The class dictionary: an open vocabulary of phrases, grouped, each group mapped to a class of a
label set (or ignored). SSOV's 2D segmenters label pixels with phrases; the dictionary turns a
phrase (its vocabulary index) into the label set's class (seed facts §3.3).

A dictionary is built in (``nuscenes16``: SSOV's 175 phrases in 31 groups) or a YAML file read
with ``yaml.safe_load`` (``configs/ssov/dictionaries/*.yaml``)::

    name: scannet20
    label_set: scannet20                # a registered label set
    template: "a {} in a scene"         # prompt template for the text encoder (optional)
    groups:
      - name: sofa                      # optional; defaults to the class
        class: sofa                     # a class name of the label set, or null: ignored
        phrases: [sofa, couch]

The vocabulary index of a phrase is its position in the flattened groups. Phrases sharing a group
share a class and form the "same class" blocks of TMP's soft text target.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

import numpy as np
import yaml
from pydantic import AfterValidator, ConfigDict, Field, ValidationError

from openscene_ray.kernel import storage
from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.labels import PROMPT_TEMPLATE, get_label_set
from openscene_ray.kernel.scene import IGNORE_LABEL
from openscene_ray.ssov.nuscenes_dictionary import NUSCENES_GROUPS, RAW_TO_NUSCENES16

__all__ = [
    "BUILTIN_DICTIONARIES",
    "Dictionary",
    "DictionaryGroup",
    "DictionarySpec",
    "dictionary_yaml",
    "load_dictionary",
]


@dataclass(frozen=True)
class DictionaryGroup:
    """Phrases that name one class of the label set (or an ignored group)."""

    name: str
    label: str | None  # a class name of the label set; None: ignored
    phrases: tuple[str, ...]
    raw_class: int | None = None  # the dataset's own class index (nuScenes lidarseg), for reference


@dataclass(frozen=True)
class Dictionary:
    """Phrases grouped and mapped to the classes of ``label_set``."""

    name: str
    label_set: str
    groups: tuple[DictionaryGroup, ...]
    template: str = PROMPT_TEMPLATE

    @property
    def phrases(self) -> tuple[str, ...]:
        """Every phrase, group by group (the vocabulary order)."""
        return tuple(p for g in self.groups for p in g.phrases)

    @property
    def size(self) -> int:
        """The number of phrases."""
        return sum(len(g.phrases) for g in self.groups)

    @cached_property
    def phrase_group(self) -> np.ndarray:
        """int32 ``[V]``: the group index of each phrase."""
        return np.repeat(np.arange(len(self.groups), dtype=np.int32), [len(g.phrases) for g in self.groups])

    @cached_property
    def phrase_class(self) -> np.ndarray:
        """int16 ``[V]``: the label set's class of each phrase, 255 (ignore) for ignored groups."""
        names = get_label_set(self.label_set).class_names
        group_class = [IGNORE_LABEL if g.label is None else names.index(g.label) for g in self.groups]
        return np.asarray(group_class, dtype=np.int16)[self.phrase_group]

    def same_group(self) -> np.ndarray:
        """bool ``[V, V]``: phrases i and j belong to the same group."""
        return self.phrase_group[:, None] == self.phrase_group[None, :]

    def prompts(self) -> list[str]:
        """The text prompts of the phrases, in vocabulary order."""
        return [self.template.format(p) for p in self.phrases]

    def to_dict(self) -> dict:
        """The dictionary as its YAML document (``name``, ``label_set``, ``template``, ``groups``)."""
        groups = []
        for g in self.groups:
            entry = {"name": g.name, "class": g.label, "phrases": list(g.phrases)}
            if g.raw_class is not None:
                entry["raw_class"] = g.raw_class
            groups.append(entry)
        return {"name": self.name, "label_set": self.label_set, "template": self.template, "groups": groups}


class _GroupSpec(StrictModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    label: str | None = Field(..., alias="class", description="a class of the label set, or null: ignored")
    phrases: list[str] = Field(..., min_length=1)
    raw_class: int | None = None


class _DictionarySpec(StrictModel):
    name: str
    label_set: str
    template: str = PROMPT_TEMPLATE
    groups: list[_GroupSpec] = Field(..., min_length=1)


def _build(spec: _DictionarySpec, source: str) -> Dictionary:
    try:
        class_names = get_label_set(spec.label_set).class_names
    except KeyError as exc:
        raise InputError(f"{source}: field label_set: {exc}") from None
    if "{}" not in spec.template:
        raise InputError(f"{source}: field template: {spec.template!r} has no '{{}}' for the phrase")
    groups = []
    for i, g in enumerate(spec.groups):
        if g.label is not None and g.label not in class_names:
            raise InputError(f"{source}: field groups.{i}.class: {g.label!r} is not a class of {spec.label_set} "
                             f"({', '.join(class_names)})")  # fmt: skip
        if any(not p.strip() for p in g.phrases):
            raise InputError(f"{source}: field groups.{i}.phrases: empty phrase")
        groups.append(DictionaryGroup(g.name or str(g.label), g.label, tuple(g.phrases), g.raw_class))
    return Dictionary(spec.name, spec.label_set, tuple(groups), spec.template)


def nuscenes16_dictionary() -> Dictionary:
    """SSOV's 175-phrase, 31-group dictionary onto nuScenes-16 (see :mod:`.nuscenes_dictionary`)."""
    groups = tuple(
        DictionaryGroup(name, RAW_TO_NUSCENES16.get(raw), phrases, raw) for name, raw, phrases in NUSCENES_GROUPS
    )
    return Dictionary("nuscenes16", "nuscenes16", groups)


BUILTIN_DICTIONARIES = {"nuscenes16": nuscenes16_dictionary}


def _absolute_spec(value: str) -> str:
    """A built-in name as it is; a dictionary file as an absolute URI (resolved on the driver)."""
    return value if value in BUILTIN_DICTIONARIES else storage.absolute_uri(value)


DictionarySpec = Annotated[str, AfterValidator(_absolute_spec)]
"""A config field naming a dictionary: a built-in name, or a YAML file (made absolute)."""


def load_dictionary(spec: str) -> Dictionary:
    """A built-in dictionary by name (``nuscenes16``), or a YAML file at any storage URI."""
    if spec in BUILTIN_DICTIONARIES:
        return BUILTIN_DICTIONARIES[spec]()
    try:
        data = yaml.safe_load(storage.read_bytes(spec).decode("utf-8"))
    except storage.ObjectNotFound:
        known = ", ".join(sorted(BUILTIN_DICTIONARIES))
        raise InputError(f"dictionary {spec!r}: neither a built-in dictionary ({known}) nor a file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{spec}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{spec}: the top level must be a mapping, got {type(data).__name__}")
    try:
        parsed = _DictionarySpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"field {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InputError(f"{spec}: invalid dictionary: {problems}") from None
    return _build(parsed, spec)


def dictionary_yaml(dictionary: Dictionary) -> str:
    """The dictionary as the YAML that :func:`load_dictionary` reads back."""
    return yaml.safe_dump(dictionary.to_dict(), sort_keys=False, allow_unicode=True, width=120)
