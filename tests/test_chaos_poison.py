"""Poisoned training state: a ``state.pt`` replaced in shared run storage must be refused, and
its payload must never run; the real state must round-trip weights-only.

End to end (a real distill run resumed over a poisoned ``state.pt``; poisoned exported checkpoints
refused by ``openscene-ray evaluate``): ``tests/test_chaos_train.py``."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from openscene_ray.kernel.train_runtime import (
    STATE_FILE,
    load_train_state,
    poly_lambda,
    save_train_state,
)
from openscene_ray.models import MinkUNetConfig, build_model


class _Payload:
    """Unpickling this calls ``os.system``-like code: here it writes a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_real_training_state_loads_weights_only(tmp_path):
    model = build_model(MinkUNetConfig(out_channels=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(10, 0.9))
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    history = [{"epoch": 0, "train_loss": 0.5, "worker_voxels_per_s": [1.0, 2.0], "new_best": True}]
    save_train_state(str(tmp_path), model, optimizer, scheduler, scaler, 0, history)
    state = load_train_state(str(tmp_path))
    assert state["epoch"] == 0 and state["history"] == history
    assert set(state["model"]) == set(model.state_dict())


def test_poisoned_state_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    with open(tmp_path / STATE_FILE, "wb") as f:
        torch.save({"model": {}, "epoch": _Payload(str(marker))}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_train_state(str(tmp_path))
    assert not marker.exists(), "the payload ran while loading state.pt"
    assert not os.path.exists(marker)
