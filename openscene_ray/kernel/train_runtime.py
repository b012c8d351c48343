"""What every Ray Train stage shares: the run settings, the ``TorchTrainer`` wiring, the resumable
training state and the cross-rank helpers (distillation, 2D training, and later stages).

A run lives in ``<storage_path>/<name>/`` (a local path or ``s3://``): Ray Train's checkpoints,
each one ``state.pt`` (model, optimizer, LR scheduler, AMP scaler, epoch, metric history), loaded
weights-only; rerunning the same name and storage path resumes after the latest checkpoint, and
a worker failure restarts the worker group from it (``max_failures`` times).
"""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field, field_validator

from openscene_ray.kernel import storage
from openscene_ray.kernel.config import StrictModel, Uri
from openscene_ray.kernel.ray_runtime import (
    DataContextConfig,
    configure_data_context,
    init_ray,
)

__all__ = [
    "STATE_FILE",
    "HookConfig",
    "TrainRunConfig",
    "TrainState",
    "all_gather",
    "all_reduce",
    "distributed",
    "fit",
    "load_train_state",
    "poly_lambda",
    "report_epoch",
    "restore_state",
    "run_hook",
    "save_train_state",
    "unwrap",
    "worker_context",
]

STATE_FILE = "state.pt"
COMMIT_TIMEOUT_S = 600.0  # a report is committed within one controller poll (seconds); never hang on it
MAX_ROW_BLOCKS = 1024


class HookConfig(StrictModel):
    """A ``package.module:function`` called as ``function(epoch=, rank=, **options)`` on every worker
    at the start of every epoch (profiling, fault injection: ``tests/fault_injection.py:fail_once``)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _module_function(cls, value: str) -> str:
        module, _, function = value.partition(":")
        if not module or not function:
            raise ValueError(f"expected 'package.module:function', got {value!r}")
        return value


class TrainRunConfig(StrictModel):
    """The Ray Train settings of a training stage (its config derives from this)."""

    storage_path: Uri = Field(..., description="Ray Train storage: a local path or s3://bucket/prefix")
    name: str = Field("run", description="run name; rerunning the same name resumes it")
    workers: int = Field(1, ge=1, description="Train workers (Ray Train's local mode keeps no checkpoints)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, description="also the worker's torch threads")
    amp: bool = Field(True, description="mixed precision (autocast + GradScaler) on CUDA")
    keep_checkpoints: int = Field(2, ge=1, description="latest checkpoints kept (best/ is kept apart)")
    max_failures: int = Field(3, ge=-1, description="worker-group restarts from the latest checkpoint")
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    epoch_hook: HookConfig | None = None

    @property
    def run_dir(self) -> str:
        """The run folder: Ray Train checkpoints, ``best/`` and the exported ``model/``."""
        return storage.join(self.storage_path, self.name)

    @property
    def best_uri(self) -> str:
        """The best model by validation (each stage decides what "best" means)."""
        return storage.join(self.run_dir, "best")


def fit(train_loop, loop_config: dict[str, Any], config: TrainRunConfig, rows: list[dict[str, Any]], seed: int):
    """Run ``train_loop`` on ``config.workers`` Ray Train workers over ``rows`` (small dicts naming
    the samples; the workers read the data themselves) and return Ray's ``Result``.

    Rows are shuffled once here and their blocks again every epoch (a full random_shuffle costs an
    all-to-all exchange per epoch for a few small rows)."""
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    init_ray(config.address)
    configure_data_context(config.data)
    rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_ROW_BLOCKS)).randomize_block_order()
    resources = {"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})}
    filesystem, path = storage.to_pyarrow_filesystem(config.storage_path)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=config.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=config.name,
            storage_path=path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
        datasets={"train": dataset},
    )
    return trainer.fit()


def poly_lambda(total_steps: int, power: float):
    """LR factor at step ``t``: ``(1 - t / total_steps) ** power`` (the reference's poly decay)."""

    def factor(step: int) -> float:
        return max(0.0, 1.0 - step / total_steps) ** power

    return factor


def load_train_state(checkpoint_dir: str) -> dict[str, Any]:
    """The training state saved in a (local) Ray checkpoint folder.

    Loaded weights-only: a checkpoint folder in shared storage is untrusted, and a full unpickle
    of a replaced ``state.pt`` would run its payload inside the Train worker."""
    return torch.load(os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=True)


def save_train_state(folder, model, optimizer, scheduler, scaler, epoch: int, history: list) -> None:
    """Write the resumable training state (tensors and plain containers only: it must load
    weights-only) into a local checkpoint folder."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "history": history,
    }
    torch.save(state, os.path.join(folder, STATE_FILE))


@dataclass
class TrainState:
    """A worker's training objects and where its epochs start."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    resumed_from: int = -1


def restore_state(state: TrainState, base_lrs: list[float]) -> TrainState:
    """Load the latest Ray checkpoint of this run into ``state`` (unchanged without one).

    A rerun may change the learning rates or the number of epochs: the schedule continues from
    ``base_lrs`` (one per param group) at the saved step."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return state
    with checkpoint.as_directory() as folder:
        saved = load_train_state(folder)
    unwrap(state.model).load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    state.scheduler.base_lrs = list(base_lrs)
    for group, lr, factor in zip(state.optimizer.param_groups, base_lrs, state.scheduler.lr_lambdas):
        group["lr"] = lr * factor(state.scheduler.last_epoch)
    state.history, state.resumed_from = saved["history"], saved["epoch"]
    state.start_epoch = state.resumed_from + 1
    return state


def report_epoch(metrics: dict[str, Any], rank: int, state: TrainState, epoch: int) -> None:
    """All ranks report (a barrier); rank 0 attaches the checkpoint of this epoch.

    Then every rank waits until Ray Train has committed the report: the controller collects the
    ranks' reports only when it next polls them, and a worker killed before that poll (SIGKILL,
    OOM, a lost node) would take this epoch's checkpoint with it: the restarted worker group
    would resume from the checkpoint before (or from scratch after the first epoch)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
    else:
        with tempfile.TemporaryDirectory(prefix="train-ckpt-", ignore_cleanup_errors=True) as folder:
            save_train_state(folder, unwrap(state.model), state.optimizer, state.scheduler, state.scaler, epoch,
                             state.history)  # fmt: skip
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED,
                                           timeout_s=COMMIT_TIMEOUT_S)  # fmt: skip


def worker_context(cpus_per_worker: float) -> tuple[int, int, torch.device]:
    """Inside a Train worker: ``(rank, world size, device)``, with torch's threads set to the
    worker's CPUs (oversubscribed threads slow every worker on the node)."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(cpus_per_worker)))
    return context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare network inside DistributedDataParallel / DataParallel wrappers."""
    while isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        model = model.module
    return model


def distributed() -> bool:
    """True inside an initialised process group (a multi-worker Train run)."""
    return dist.is_available() and dist.is_initialized()


def all_reduce(values: np.ndarray, device: torch.device) -> np.ndarray:
    """Element-wise sum over ranks (identity without a process group); dtype preserved."""
    tensor = torch.from_numpy(np.ascontiguousarray(values)).to(device)
    if distributed():
        dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def all_gather(values: list[float], device: torch.device) -> list[list[float]]:
    """Every rank's ``values``, in rank order."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if not distributed():
        return [tensor.tolist()]
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return [p.tolist() for p in parts]


def run_hook(hook: HookConfig | None, epoch: int, rank: int) -> None:
    """Call the configured epoch hook, if any."""
    if hook is None:
        return
    module_name, _, attr = hook.name.partition(":")
    getattr(importlib.import_module(module_name), attr)(epoch=epoch, rank=rank, **hook.options)
