"""Chaos suite, Ray Train: a Train worker SIGKILLed after the first checkpoint resumes from the
latest checkpoint; a poisoned ``state.pt`` in the run's storage and a poisoned exported checkpoint
are refused before anything runs (the payloads never execute)."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from chaos_checks import record
from conftest import TEXT
from fault_injection import MarkerPayload, write_poisoned_state

from openscene_ray.distill.config import DistillConfig
from openscene_ray.distill.job import run_distill
from openscene_ray.kernel.config import load_config
from openscene_ray.kernel.manifest import load_points
from openscene_ray.kernel.train_runtime import STATE_FILE
from openscene_ray.models import load_checkpoint
from openscene_ray.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from openscene_ray.models.inference import distill_features

SMALL_NET = {"out_channels": 32, "init_dim": 16, "planes": [16, 32, 64, 64, 64, 32, 32, 32], "layers": [1] * 8}
VOXEL = 0.1
EPOCHS = 3


def _config(world, fused, storage_path, **overrides) -> DistillConfig:
    base = {
        "manifest": world.manifest, "fused": fused, "storage_path": storage_path, "name": "chaos",
        "model": SMALL_NET, "voxel_size": VOXEL, "batch_size": 1, "lr": 5e-3, "workers": 2, "cpus_per_worker": 1,
        "epochs": EPOCHS, "validate_every": 0, "keep_checkpoints": EPOCHS, "max_failures": 1, "text": TEXT,
    }  # fmt: skip
    return load_config(DistillConfig, base=base | overrides)


def _checkpoints(run_dir: str) -> dict[int, str]:
    """The run's Ray checkpoint folders, by the epoch saved in them."""
    found = {}
    for folder in sorted(glob.glob(os.path.join(run_dir, "checkpoint_*"))):
        if os.path.isdir(folder):
            found[torch.load(os.path.join(folder, STATE_FILE), weights_only=True)["epoch"]] = folder
    return found


@pytest.fixture(scope="module")
def killed_run(ray_session, synthetic_world, fused, tmp_path_factory):
    """3 epochs on 2 workers; rank 0 SIGKILLs its own process at the start of epoch 1 (after the
    epoch-0 checkpoint)."""
    root = tmp_path_factory.mktemp("chaos-train")
    marker = str(root / "killed")
    hook = {"name": "fault_injection:kill_once", "options": {"marker": marker, "at_epoch": 1}}
    config = _config(synthetic_world, fused, str(root / "runs"), epoch_hook=hook)
    start = time.perf_counter()
    summary = run_distill(config)
    return config, summary, marker, time.perf_counter() - start


@pytest.mark.slow
def test_train_worker_sigkilled_after_the_first_checkpoint_resumes_and_finishes(synthetic_world, killed_run):
    config, summary, marker, seconds = killed_run
    assert os.path.exists(marker), "no worker was killed: recovery was not exercised"
    # every epoch once, in order; epochs 1 and 2 ran after resuming from the epoch-0 checkpoint
    assert [(h["epoch"], h["resumed_from"]) for h in summary.history] == [(0, -1), (1, 0), (2, 0)]
    checkpoints = _checkpoints(summary.run_dir)
    assert sorted(checkpoints) == list(range(EPOCHS))  # epoch 1 checkpointed once, by the restarted group
    model, model_config, metadata = load_checkpoint(summary.model_uri)  # the export loads without Ray
    assert summary.source == "last" and metadata.extra["epoch"] == EPOCHS - 1 and model_config == config.model
    last = torch.load(os.path.join(checkpoints[EPOCHS - 1], STATE_FILE), weights_only=True)["model"]
    assert all(torch.equal(v, last[k]) for k, v in model.state_dict().items())
    xyz, _, _ = load_points(synthetic_world.records[0].points_uri)
    assert torch.isfinite(distill_features(model, xyz, VOXEL)).all()
    record("Train worker SIGKILLed after checkpoint", seconds=round(seconds, 1),
           history=[(h["epoch"], h["resumed_from"]) for h in summary.history])  # fmt: skip


@pytest.mark.slow
def test_poisoned_state_in_the_latest_checkpoint_is_refused_and_never_runs(killed_run, tmp_path):
    """Replace the latest checkpoint's ``state.pt`` with a payload and rerun the same run name
    (one more epoch): the resume refuses the file naming the unsupported global, the payload never
    runs and training does not go on."""
    config, summary, _, _ = killed_run
    checkpoints = _checkpoints(summary.run_dir)
    payload_ran = tmp_path / "payload-ran"
    write_poisoned_state(os.path.join(checkpoints[max(checkpoints)], STATE_FILE), str(payload_ran))
    exported = Path(summary.model_uri, WEIGHTS_NAME).read_bytes()
    start = time.perf_counter()
    with pytest.raises(Exception) as failure:
        run_distill(config.model_copy(update={"epochs": EPOCHS + 1, "epoch_hook": None, "max_failures": 0,
                                              "workers": 1}))  # fmt: skip
    seconds = time.perf_counter() - start
    text = str(failure.value)
    assert re.search(r"Unsupported global: GLOBAL (io|builtins)\.open", text), text[-3000:]  # names the global
    assert not payload_ran.exists(), "the payload in state.pt ran"
    folders = [p for p in glob.glob(os.path.join(summary.run_dir, "checkpoint_*")) if os.path.isdir(p)]
    assert len(folders) == EPOCHS  # no epoch trained, nothing checkpointed
    assert Path(summary.model_uri, WEIGHTS_NAME).read_bytes() == exported  # no new export
    record("poisoned state.pt on resume", seconds=round(seconds, 1), error=text[text.find("Unsupported global"):][:200])


def _poisoned_export(source: str, root, how: str) -> str:
    """A copy of the exported model folder, poisoned: ``checkpoint.json`` naming ``../evil.pt`` (a
    pickle payload placed there), or weights overwritten with garbage (with or without a matching
    digest)."""
    import hashlib

    folder = root / how / "model"
    shutil.copytree(source, folder)
    document_path = folder / CONFIG_NAME
    document = json.loads(document_path.read_text())
    if how == "weights_outside_folder":
        torch.save({"w": MarkerPayload(str(root / "payload-ran"))}, str(root / how / "evil.pt"))
        document["weights"]["name"] = "../evil.pt"
    else:
        weights = b"\x93NUMPY garbage" + os.urandom(256)
        (folder / WEIGHTS_NAME).write_bytes(weights)
        if how == "corrupt_weights_matching_digest":
            document["weights"]["sha256"] = hashlib.sha256(weights).hexdigest()
    document_path.write_text(json.dumps(document))
    return str(folder)


@pytest.mark.slow
@pytest.mark.parametrize("how, says", [
    ("weights_outside_folder", "names weights '../evil.pt'"),
    ("corrupt_weights", "do not match the digest"),
    ("corrupt_weights_matching_digest", "unreadable weights"),
])  # fmt: skip
def test_a_poisoned_exported_checkpoint_is_refused_by_evaluate_on_the_driver(
    synthetic_world, killed_run, tmp_path, monkeypatch, capsys, how, says
):
    """``openscene-ray evaluate`` checks the checkpoint on the driver before starting Ray or any
    actor: exit 2 and one message naming the checkpoint; the evil weights are never loaded."""
    from openscene_ray.cli import main
    from openscene_ray.evaluation import job

    _, summary, _, _ = killed_run
    checkpoint = _poisoned_export(summary.model_uri, tmp_path, how)

    def no_ray(*args, **kwargs):
        raise AssertionError("evaluate started Ray / actors for a poisoned checkpoint")

    monkeypatch.setattr(job, "init_ray", no_ray)
    monkeypatch.setattr(job, "build_dataset", no_ray)
    code = main(["evaluate", "--manifest", synthetic_world.manifest, "--output", str(tmp_path / "eval"),
                 "--mode", "distill", "--checkpoint", checkpoint,
                 "--set", "text.encoder=synthetic", "--set", "text.options={dim: 32, seed: 0}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("openscene-ray evaluate: error: ") and checkpoint in err and says in err, err
    assert not (tmp_path / "payload-ran").exists() and not (tmp_path / "eval").exists()
