"""LSeg network (pure torch): shapes, the state-dict layout of the release, safe checkpoint loading
and the safetensors export round trip."""

import argparse
import collections
import io
import os
import sys
import types

import pytest
import torch

from openscene_ray.kernel.safe_load import (
    CallbackKey,
    UnsafePickleError,
    load_torch_checkpoint,
)
from openscene_ray.models.lseg import (
    LOGIT_SCALE,
    LSEG_CONFIGS,
    LSegConfig,
    build_lseg,
    lseg_config,
    lseg_logits,
)
from openscene_ray.models.lseg_checkpoint import (
    LSegCheckpointError,
    LSegInfo,
    load_lseg,
    read_lseg_export,
    save_lseg_export,
)

TINY = lseg_config("lseg-tiny", out_dim=16)
CALLBACK_MODULE = "pytorch_lightning.callbacks.model_checkpoint"


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return build_lseg(TINY).eval()


@pytest.fixture(scope="module")
def reference_keys() -> dict[str, tuple[int, ...]]:
    """The released configuration's state dict, built on the meta device (no weights allocated)."""
    net = build_lseg("lseg-vitl16-384", device="meta")
    assert all(p.is_meta for p in net.parameters())
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_tiny_forward_shapes_and_normalisation(tiny_net):
    x = torch.randn(2, 3, 96, 128)
    feats = tiny_net(x)
    assert feats.shape == (2, 16, 48, 64)
    assert torch.allclose(feats.norm(dim=1), torch.ones(2, 48, 64), atol=1e-5)
    text = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    logits = lseg_logits(feats, text)
    assert logits.shape == (2, 5, 96, 128)
    # before the x2 upsampling (align_corners=True keeps the corners) the logits are 1/0.07 cosines
    assert torch.allclose(logits[:, :, 0, 0], LOGIT_SCALE * feats[:, :, 0, 0] @ text.T, atol=1e-4)
    assert float(logits.detach().abs().max()) <= LOGIT_SCALE + 1e-3
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_net(torch.randn(1, 3, 80, 96))


def test_tiny_key_layout_follows_the_release(tiny_net):
    keys = set(tiny_net.state_dict())
    assert {k.split(".")[0] for k in keys} == {"pretrained", "scratch"}  # no CLIP tower in the tiny config
    for key in ("pretrained.model.blocks.0.attn.qkv.weight", "pretrained.model.pos_embed",
                "pretrained.act_postprocess1.0.project.0.weight", "pretrained.act_postprocess1.4.weight",
                "pretrained.act_postprocess4.4.weight", "scratch.refinenet1.resConfUnit1.conv1.weight",
                "scratch.refinenet4.resConfUnit2.bn2.running_var", "scratch.head1.weight"):  # fmt: skip
        assert key in keys
    assert not any(k.startswith("pretrained.act_postprocess3.4") for k in keys)
    assert tiny_net.state_dict()["scratch.head1.weight"].shape == (16, TINY.num_features, 1, 1)


# (key, shape) from the facts' table (seed-systems facts §1.2), without the "net." prefix.
FACTS = {
    "pretrained.model.patch_embed.proj.weight": (1024, 3, 16, 16), "pretrained.model.patch_embed.proj.bias": (1024,),
    "pretrained.model.cls_token": (1, 1, 1024), "pretrained.model.pos_embed": (1, 577, 1024),
    "pretrained.model.blocks.23.norm1.weight": (1024,), "pretrained.model.blocks.23.attn.qkv.weight": (3072, 1024),
    "pretrained.model.blocks.23.attn.qkv.bias": (3072,), "pretrained.model.blocks.23.attn.proj.weight": (1024, 1024),
    "pretrained.model.blocks.23.mlp.fc1.weight": (4096, 1024), "pretrained.model.blocks.23.mlp.fc1.bias": (4096,),
    "pretrained.model.blocks.23.mlp.fc2.weight": (1024, 4096), "pretrained.model.norm.weight": (1024,),
    "pretrained.model.head.weight": (1000, 1024), "pretrained.model.head.bias": (1000,),
    **{f"pretrained.act_postprocess{k}.0.project.0.weight": (1024, 2048) for k in range(1, 5)},
    **{f"pretrained.act_postprocess{k}.0.project.0.bias": (1024,) for k in range(1, 5)},
    "pretrained.act_postprocess1.3.weight": (256, 1024, 1, 1), "pretrained.act_postprocess1.4.weight": (256, 256, 4, 4),
    "pretrained.act_postprocess2.3.weight": (512, 1024, 1, 1), "pretrained.act_postprocess2.4.weight": (512, 512, 2, 2),
    "pretrained.act_postprocess3.3.weight": (1024, 1024, 1, 1), "pretrained.act_postprocess4.3.weight": (1024, 1024, 1, 1),
    "pretrained.act_postprocess4.4.weight": (1024, 1024, 3, 3), "pretrained.act_postprocess4.4.bias": (1024,),
    "scratch.layer1_rn.weight": (256, 256, 3, 3), "scratch.layer2_rn.weight": (256, 512, 3, 3),
    "scratch.layer3_rn.weight": (256, 1024, 3, 3), "scratch.layer4_rn.weight": (256, 1024, 3, 3),
    **{f"scratch.refinenet{k}.out_conv.weight": (256, 256, 1, 1) for k in range(1, 5)},
    **{f"scratch.refinenet{k}.out_conv.bias": (256,) for k in range(1, 5)},
    "scratch.refinenet4.resConfUnit1.conv1.weight": (256, 256, 3, 3),
    "scratch.refinenet2.resConfUnit2.bn1.running_mean": (256,), "scratch.refinenet2.resConfUnit2.bn1.num_batches_tracked": (),
    "scratch.head1.weight": (512, 256, 1, 1), "scratch.head1.bias": (512,),
    "clip_pretrained.visual.conv1.weight": (768, 3, 32, 32), "clip_pretrained.visual.class_embedding": (768,),
    "clip_pretrained.visual.positional_embedding": (50, 768), "clip_pretrained.visual.proj": (768, 512),
    "clip_pretrained.visual.transformer.resblocks.11.attn.in_proj_weight": (2304, 768),
    "clip_pretrained.visual.transformer.resblocks.11.mlp.c_fc.weight": (3072, 768),
    "clip_pretrained.transformer.resblocks.11.attn.in_proj_weight": (1536, 512),
    "clip_pretrained.transformer.resblocks.0.mlp.c_fc.weight": (2048, 512),
    "clip_pretrained.token_embedding.weight": (49408, 512), "clip_pretrained.positional_embedding": (77, 512),
    "clip_pretrained.ln_final.weight": (512,), "clip_pretrained.text_projection": (512, 512),
    "clip_pretrained.logit_scale": (),
}  # fmt: skip


def test_reference_configuration_matches_the_facts_table(reference_keys):
    for key, shape in FACTS.items():
        assert reference_keys.get(key) == shape, key
    prefixes = {k.split(".")[0] + "." + k.split(".")[1] for k in reference_keys}
    assert prefixes == {"pretrained.model", "scratch.layer1_rn", "scratch.layer2_rn", "scratch.layer3_rn",
                        "scratch.layer4_rn", "scratch.refinenet1", "scratch.refinenet2", "scratch.refinenet3",
                        "scratch.refinenet4", "scratch.head1", "clip_pretrained.visual", "clip_pretrained.transformer",
                        "clip_pretrained.token_embedding", "clip_pretrained.positional_embedding",
                        "clip_pretrained.ln_final", "clip_pretrained.text_projection", "clip_pretrained.logit_scale",
                        *(f"pretrained.act_postprocess{k}" for k in range(1, 5))}  # fmt: skip
    blocks = {int(k.split(".")[3]) for k in reference_keys if k.startswith("pretrained.model.blocks.")}
    assert blocks == set(range(24))
    # conv biases: every reassemble conv has one, the scratch 3x3 convs none
    assert all(k.replace(".weight", ".bias") in reference_keys for k in reference_keys
               if k.startswith("pretrained.act_postprocess") and k.endswith((".3.weight", ".4.weight")))  # fmt: skip
    assert not any(k.startswith("scratch.layer") and k.endswith(".bias") for k in reference_keys)
    assert not any(".conv1.bias" in k or ".conv2.bias" in k for k in reference_keys)
    assert LSEG_CONFIGS.get("lseg-vitl16-384").hooks == (5, 11, 17, 23)


# ---------------------------------------------------------------- safe loading


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _lightning_bytes(state_dict: dict, extra: dict | None = None) -> bytes:
    """A PL<1.5-style checkpoint: Namespace hyper-parameters and a callback *class* as a dict key.

    The callback class lives in a fake ``pytorch_lightning.callbacks.model_checkpoint`` module
    registered only while saving (pickle stores classes by reference)."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", CALLBACK_MODULE]
    callback = type("ModelCheckpoint", (), {"__module__": CALLBACK_MODULE})
    saved = {n: sys.modules.get(n) for n in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[CALLBACK_MODULE].ModelCheckpoint = callback
    checkpoint = {
        "epoch": 199, "global_step": 1000, "pytorch-lightning_version": "1.3.5",
        "state_dict": collections.OrderedDict((f"net.{k}", v) for k, v in state_dict.items()),
        "callbacks": {callback: {"best_model_score": torch.tensor(0.32), "best_model_path": "demo_e200.ckpt"}},
        "optimizer_states": [{"state": {0: {"momentum_buffer": torch.ones(4)}}, "param_groups": [{"lr": 0.004}]}],
        "lr_schedulers": [{"base_lrs": [0.004, 0.04], "last_epoch": 200, "lr_lambdas": [None, None]}],
        "hparams_name": "kwargs", "hyper_parameters": argparse.Namespace(backbone="clip_vitl16_384", base_lr=0.004),
        **(extra or {}),
    }  # fmt: skip
    buffer = io.BytesIO()
    try:
        torch.save(checkpoint, buffer)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return buffer.getvalue()


def test_lightning_container_admits_namespace_and_callback_keys_without_lightning(tiny_net):
    data = _lightning_bytes(tiny_net.state_dict())
    assert b"pytorch_lightning.callbacks.model_checkpoint" in data and b"argparse" in data
    assert "pytorch_lightning" not in sys.modules
    whole = load_torch_checkpoint(data)
    assert "pytorch_lightning" not in sys.modules  # stand-ins, nothing imported
    assert whole["hyper_parameters"] == argparse.Namespace(backbone="clip_vitl16_384", base_lr=0.004)
    (key, value), = whole["callbacks"].items()
    assert key == CallbackKey(CALLBACK_MODULE, "ModelCheckpoint") and float(value["best_model_score"]) == pytest.approx(0.32)
    with pytest.raises(UnsafePickleError):
        key()  # the stand-in is inert
    state = load_torch_checkpoint(data, key="state_dict")
    assert isinstance(state, collections.OrderedDict) and len(state) == len(tiny_net.state_dict())
    for name, tensor in tiny_net.state_dict().items():
        assert torch.equal(state[f"net.{name}"], tensor)


def test_payload_is_refused_and_nothing_runs(tmp_path, tiny_net):
    marker = tmp_path / "pwned"
    payload = type("Payload", (_Payload,), {"marker": str(marker)})()
    data = _lightning_bytes({"scratch.head1.bias": torch.zeros(3)}, extra={"hyper_parameters": payload})
    with pytest.raises(UnsafePickleError, match=r"refused to load (posix|nt|os)\.system"):
        load_torch_checkpoint(data, key="state_dict")
    assert not marker.exists()
    path = tmp_path / "evil.ckpt"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError):
        load_lseg(str(path))  # refused while unpickling, before any network is built
    assert not marker.exists()


def test_unknown_globals_are_named():
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "counts": collections.Counter(a=1)}, buffer)
    with pytest.raises(UnsafePickleError, match=r"refused to load collections\.Counter"):
        load_torch_checkpoint(buffer.getvalue())
    with pytest.raises(UnsafePickleError, match="not a torch zip checkpoint"):
        load_torch_checkpoint(b"\x80\x02}q\x00.")


def test_a_checkpoint_missing_a_tensor_storage_is_an_error_naming_it():
    import pickle
    import zipfile

    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(3)}}, buffer)
    trimmed = io.BytesIO()
    with zipfile.ZipFile(buffer) as full, zipfile.ZipFile(trimmed, "w") as out:
        for item in full.infolist():
            if "/data/" not in item.filename:  # drop the tensor's storage
                out.writestr(item, full.read(item))
    with pytest.raises(pickle.UnpicklingError, match=r"model.ckpt: a tensor's data is not in the archive"):
        load_torch_checkpoint(trimmed.getvalue(), source="model.ckpt")


def test_lightning_checkpoint_loads_strictly_into_its_configuration(tmp_path, monkeypatch):
    """A tiny configuration with a (small) CLIP tower stands in for lseg-vitl16-384 + ViT-B/32."""
    config = LSegConfig.model_validate(TINY.model_dump() | {"name": "test-lseg-tiny-clip", "clip_arch": "ViT-S-32",
                                                            "out_dim": 384})  # fmt: skip
    monkeypatch.setitem(LSEG_CONFIGS._entries, config.name, config)
    torch.manual_seed(1)
    net = build_lseg(config).eval()
    path = tmp_path / "demo.ckpt"
    path.write_bytes(_lightning_bytes(net.state_dict()))
    loaded, info = load_lseg(str(path), config=config.name)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    assert info.text_model == "open_clip:ViT-S-32" and info.text_options == {"arch": "ViT-S-32"}
    text = loaded.encode_text(["a chair in a scene", "a wall in a scene"])
    assert text.shape == (2, 384) and torch.allclose(text.norm(dim=1), torch.ones(2))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-6)
    bad = dict(net.state_dict())
    bad["scratch.extra.weight"] = torch.zeros(1)
    path.write_bytes(_lightning_bytes(bad))
    with pytest.raises(LSegCheckpointError, match="scratch.extra.weight"):
        load_lseg(str(path), config=config.name)


def test_safetensors_export_round_trip(tmp_path, tiny_net):
    info = LSegInfo(text_encoder="synthetic", text_options={"dim": 16, "seed": 0}, label_set="scannet20",
                    extra={"epoch": 3})  # fmt: skip
    uri = save_lseg_export(str(tmp_path / "model"), tiny_net, info)
    assert sorted(os.listdir(uri)) == ["checkpoint.json", "model.safetensors"]
    config, read_info, _ = read_lseg_export(uri)
    assert config == TINY and read_info == info and read_info.text_model == "synthetic:dim=16,seed=0"
    loaded, loaded_info = load_lseg(uri)
    assert loaded_info == info and not loaded.training
    for (name, a), b in zip(tiny_net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(LSegCheckpointError, match="an export of 'lseg-tiny', not of 'lseg-small'"):
        load_lseg(uri, config="lseg-small")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(LSegCheckpointError, match="do not match the digest"):
        load_lseg(uri)


def test_a_tampered_export_document_is_an_error_naming_the_file(tmp_path, tiny_net):
    import json

    uri = save_lseg_export(str(tmp_path / "model"), tiny_net, LSegInfo(text_encoder="synthetic"))
    document_path = tmp_path / "model" / "checkpoint.json"
    document = json.loads(document_path.read_text())
    document["weights"]["name"] = "../evil.safetensors"  # never read outside the folder
    document_path.write_text(json.dumps(document))
    with pytest.raises(LSegCheckpointError, match=r"checkpoint.json: names weights '../evil.safetensors'"):
        load_lseg(uri)
    document["weights"]["name"] = "model.safetensors"
    del document["info"]
    document_path.write_text(json.dumps(document))
    with pytest.raises(LSegCheckpointError, match=r"checkpoint.json: malformed .*info"):
        read_lseg_export(uri)
    document_path.write_text("[]")
    with pytest.raises(LSegCheckpointError, match="checkpoint.json: expected a JSON object, got list"):
        read_lseg_export(uri)
