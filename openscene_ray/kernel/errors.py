"""This package's expected errors, and how every stage describes a failure in one line.

An *expected* error is bad input or an unavailable resource that the user can fix: its message
names the scene, file or field and the reason, so it is shown without a traceback (the CLI's
error boundary) and recorded as a scene's error row by the jobs. Every such error derives from
:class:`OpenSceneError` and survives pickling: Ray rebuilds an exception raised in a task, actor or
Train worker on the driver, and an error whose constructor takes several arguments would
otherwise fail to rebuild and hide the real message.
"""

from __future__ import annotations

import functools

__all__ = ["ERROR_TEXT_LIMIT", "InputError", "OpenSceneError", "describe_error", "scene_error"]

ERROR_TEXT_LIMIT = 2000  # characters of an error kept in index rows, reports and logs


def _rebuild(cls: type, args: tuple, kwargs: dict) -> OpenSceneError:
    return cls(*args, **kwargs)


class OpenSceneError(Exception):
    """Base of the expected errors (see the module docstring); picklable whatever its constructor."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def remembering_init(self, *args, **kw):
            if "_init_args" not in self.__dict__:  # the outermost constructor's arguments
                self._init_args = (args, kw)
            init(self, *args, **kw)

        cls.__init__ = remembering_init

    def __reduce__(self):
        args, kwargs = self.__dict__.get("_init_args", (self.args, {}))
        return (_rebuild, (type(self), args, kwargs))


class InputError(OpenSceneError, ValueError):
    """The inputs of a stage do not fit together (unknown scenes, a missing split, missing shards,
    a model for another feature width, ...); the message says what and where."""


def describe_error(exc: BaseException, limit: int = ERROR_TEXT_LIMIT) -> str:
    """One line for a failure: an expected error's own message (it names the file or field), any
    other exception as ``Type: message``; cut to ``limit`` characters."""
    text = str(exc) if isinstance(exc, OpenSceneError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scene_error(scene_id: str, exc: BaseException) -> str:
    """A scene's error row: :func:`describe_error`, prefixed with the scene unless it names it."""
    text = describe_error(exc)
    if scene_id in text:
        return text
    prefix = f"scene {scene_id!r}: "
    return prefix + describe_error(exc, ERROR_TEXT_LIMIT - len(prefix))
