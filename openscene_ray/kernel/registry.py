"""One small registry helper for every set that grows: layouts, extractors, text encoders, label
sets, 3D models, backbones.

A :class:`Registry` maps names to entries (classes, factories or data). Built-in entries may live
in modules that are imported on first use (so TensorFlow or open_clip load only when asked for),
and, where a registry allows plugins, a name of the form ``package.module:attribute`` loads a
user's own entry without registering it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

from openscene_ray.kernel.errors import OpenSceneError

__all__ = ["Registry", "UnknownEntryError"]

T = TypeVar("T")


class UnknownEntryError(OpenSceneError, KeyError):
    """A name that no registry entry answers to (the message lists the known ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` appears in error messages)."""

    def __init__(self, kind: str, lazy_modules: Mapping[str, str] | None = None, plugins: bool = False):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy = dict(lazy_modules or {})
        self._plugins = plugins

    def register(self, name: str, entry: T | None = None, aliases: Iterable[str] = ()) -> Callable[[T], T] | T:
        """Register ``entry`` as ``name`` (and ``aliases``); without ``entry``, a decorator.

        Registering the same object again under the same name is a no-op (a module imported
        twice); another object under a taken name is an error.
        """
        if entry is None:
            return lambda obj: self.register(name, obj, aliases)
        for key in (name, *aliases):
            existing = self._entries.get(key)
            if existing is not None and existing is not entry:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = entry
        return entry

    def names(self) -> list[str]:
        """Every known name (registered or importable on first use), sorted."""
        return sorted(set(self._entries) | set(self._lazy))

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._lazy

    def get(self, name: str) -> T:
        """The entry ``name``; raises :class:`UnknownEntryError` (a KeyError) naming the known entries."""
        if self._plugins and ":" in name:
            module_name, _, attribute = name.partition(":")
            try:
                return getattr(importlib.import_module(module_name), attribute)
            except (ImportError, AttributeError) as exc:
                raise UnknownEntryError(f"cannot load plugin {self.kind} {name!r}: {exc}") from None
        if name not in self._entries and name in self._lazy:
            importlib.import_module(self._lazy[name])
        try:
            return self._entries[name]
        except KeyError:
            raise self.missing(name) from None

    def missing(self, name: str) -> UnknownEntryError:
        """The error for a name that is not registered (it lists the known names)."""
        return UnknownEntryError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")

    def values(self) -> list[T]:
        """The registered entries (lazy modules are not imported), without alias duplicates."""
        unique: dict[int, T] = {}
        for entry in self._entries.values():
            unique.setdefault(id(entry), entry)
        return list(unique.values())
