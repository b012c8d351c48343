"""The one place that connects to Ray and configures Ray Data's DataContext."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from pydantic import Field

from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.manifest import SceneRecord, manifest_table

__all__ = [
    "DataContextConfig",
    "ResourcesConfig",
    "actor_pool_options",
    "configure_data_context",
    "init_ray",
    "scene_blocks",
]

log = logging.getLogger(__name__)

# Transient S3 errors worth retrying on top of Ray's defaults (throttling, dropped connections);
# access denied is not transient, and retrying it only delays the error.
EXTRA_RETRIED_IO_ERRORS = ("Connection reset", "SlowDown", "RequestTimeout")


class DataContextConfig(StrictModel):
    """Ray Data knobs. Long scenes and slow GPU scale-up need a no-progress timeout above Ray's 30 min."""

    no_progress_timeout_s: float = Field(
        3600, description="fail a job that makes no progress this long (slow GPU scale-up needs more than Ray's "
        "30 min default); -1 disables the stall guard"
    )
    retried_io_errors: list[str] = Field(default_factory=lambda: list(EXTRA_RETRIED_IO_ERRORS))
    progress_bars: bool | None = Field(None, description="None: on, except under CI")
    max_errored_blocks: int = 0
    target_max_block_size_mb: int | None = None


class ResourcesConfig(StrictModel):
    """Actor pool sizing and per-actor resources (num_gpus 0 runs the pool on CPU)."""

    min_actors: int = Field(1, ge=1)
    max_actors: int = Field(1, ge=1)
    gpus_per_actor: float = Field(0.0, ge=0)
    cpus_per_actor: float = Field(1.0, gt=0)
    memory_per_actor_gb: float | None = Field(None, gt=0)
    loader_cpus: float = Field(0.5, gt=0, description="CPUs per scene-loading task")
    loader_concurrency: int | None = Field(None, ge=1, description="cap on concurrent loading tasks")


def actor_pool_options(resources: ResourcesConfig) -> dict:
    """``map_batches`` keyword arguments for an actor pool sized and resourced by ``resources``."""
    import ray.data

    return {
        "compute": ray.data.ActorPoolStrategy(
            min_size=resources.min_actors, max_size=max(resources.min_actors, resources.max_actors)
        ),
        "num_gpus": resources.gpus_per_actor,
        "num_cpus": resources.cpus_per_actor,
        "memory": int(resources.memory_per_actor_gb * 1024**3) if resources.memory_per_actor_gb else None,
    }


def scene_blocks(records: Sequence[SceneRecord], columns: list[str] | None = None):
    """Manifest rows as a Ray Dataset with one scene per block (so that scenes load and run
    independently): Arrow columns straight from the driver's one read of the manifest."""
    import ray.data

    table = manifest_table(records)
    if columns is not None:
        table = table.select(columns)
    return ray.data.from_arrow([table.slice(i, 1) for i in range(table.num_rows)])


def configure_data_context(config: DataContextConfig):
    """Apply ``config`` to the current DataContext (call before building datasets)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_no_progress_timeout_s = config.no_progress_timeout_s
    for pattern in config.retried_io_errors:
        if pattern not in ctx.retried_io_errors:
            ctx.retried_io_errors.append(pattern)
    progress = config.progress_bars if config.progress_bars is not None else not os.environ.get("CI")
    ctx.enable_progress_bars = progress
    ctx.enable_operator_progress_bars = progress
    ctx.max_errored_blocks = config.max_errored_blocks
    if config.target_max_block_size_mb is not None:
        ctx.target_max_block_size = config.target_max_block_size_mb * 1024 * 1024
    return ctx


def init_ray(address: str | None = None, **kwargs) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``); otherwise start or join a local single-node Ray."""
    import ray

    if ray.is_initialized():
        return
    # A local Ray started here inherits this process's environment (S3 settings included), so
    # credentials never travel through runtime_env, which Ray records and shows.
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address, **kwargs)
    log.info("Ray resources: %s", ray.cluster_resources())
