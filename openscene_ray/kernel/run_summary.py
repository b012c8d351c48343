"""What one run of a per-scene job did: the base of every such stage's summary (fuse, segment,
lift, fit3d-lift, hierarchy). Scenes are done, skipped (complete from an earlier run) or failed
(with the error naming the scene); one failed scene never stops the others."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SceneRunSummary", "new_run_id"]


def new_run_id() -> str:
    """A sortable, unique run id: the local time to the second and six random hex digits."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


@dataclass
class SceneRunSummary:
    """The scenes of one run by outcome, and its wall time; stages add their own figures."""

    run_id: str = field(default_factory=new_run_id)
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no scene failed."""
        return not self.failed

    def scene_counts(self) -> dict[str, Any]:
        """The run id, the number of scenes per outcome and the failures (scene -> error)."""
        return {"run_id": self.run_id, "done": len(self.done), "skipped": len(self.skipped),
                "failed": len(self.failed), "failures": self.failed}  # fmt: skip
