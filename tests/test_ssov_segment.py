"""SSOV's segment stage without Ray: any extractor as an open-vocabulary segmenter, the segments
store (no pickles), and the importer of the original CAT-Seg / FC-CLIP / SAN outputs."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from openscene_ray.kernel.manifest import SceneRecord, ViewRecord
from openscene_ray.ssov.segment.config import ImportConfig, SegmentConfig
from openscene_ray.ssov.segment.core import superpixels_from_features
from openscene_ray.ssov.segment.importer import import_scene, load_text_embedding
from openscene_ray.ssov.store import (
    SegmentsError,
    Superpixels,
    read_frame,
    read_scene_marker,
    read_vocabulary,
    write_frame,
    write_vocabulary,
)


def _text(v: int = 5, d: int = 8) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(v, d, generator=torch.Generator().manual_seed(0)), dim=1)


def test_pixels_take_the_argmax_phrase_and_masks_are_numbered_in_vocabulary_order():
    text = _text()
    labels = np.array([[3, 3, 1, 1], [3, 4, 1, 1], [4, 4, -1, -1]])  # -1: a zero feature (void)
    features = torch.zeros(3, 4, 8)
    for (r, c), v in np.ndenumerate(labels):
        if v >= 0:
            features[r, c] = text[v] * (1.0 + 0.1 * c)  # the scale does not change the argmax
    sp = superpixels_from_features(features, text)
    assert sp.categories.tolist() == [1, 3, 4]  # ids 1..3 in ascending vocabulary index
    expected_ids = np.array([[2, 2, 1, 1], [2, 3, 1, 1], [3, 3, 0, 0]])
    assert np.array_equal(sp.ids, expected_ids) and sp.areas.tolist() == [4, 3, 3]
    assert np.allclose(sp.embeddings[0], 0) and np.allclose(np.linalg.norm(sp.embeddings[1:], axis=1), 1)
    assert np.allclose(sp.embeddings[1], text[1].numpy(), atol=1e-6)  # the normalised mean feature of the mask


def test_store_round_trip_without_pickles(tmp_path):
    sp = superpixels_from_features(_text()[[0, 2, 2, 0]].reshape(2, 2, 8), _text())
    store = str(tmp_path / "segments")
    write_frame(store, "scene0", "frame0", sp)
    back = read_frame(store, "scene0", "frame0", 5)
    assert np.array_equal(back.ids, sp.ids) and np.array_equal(back.categories, sp.categories)
    assert np.allclose(back.embeddings, sp.embeddings, atol=1e-3)  # stored as float16
    info = json.loads((tmp_path / "segments/scenes/scene0/frame0.json").read_text())
    assert info == [{"id": 1, "category_id": 0, "area": 2}, {"id": 2, "category_id": 2, "area": 2}]
    write_vocabulary(store, ["a", "b", "c", "d", "e"], _text().numpy(), {"text_model": "synthetic"})
    vocabulary = read_vocabulary(store)
    assert vocabulary.phrases == ("a", "b", "c", "d", "e") and vocabulary.metadata["dim"] == 8
    npy = tmp_path / "segments/scenes/scene0/frame0.npy"
    npy.write_bytes(pickle.dumps({"not": "an array"}))
    with pytest.raises(SegmentsError, match="frame0.npy"):
        read_frame(store, "scene0", "frame0", 5)
    with pytest.raises(SegmentsError, match="cannot name a file"):
        write_frame(store, "scene0", "../escape", sp)


def _record(frames: list[str]) -> SceneRecord:
    views = tuple(ViewRecord.create(f, f"/nowhere/{f}.jpg", np.eye(3), np.eye(4)) for f in frames)
    return SceneRecord("scene0", "val", "nuscenes-calib", "/nowhere/points.parquet", 10, 8, 6, 0, views)


def _png(ids: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(ids.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_original(root, stem: str, ids: np.ndarray, info: list[dict], embeddings, kind: str) -> None:
    (root / f"{stem}.png").write_bytes(_png(ids))
    (root / f"{stem}.json").write_text(json.dumps(info))
    torch.save([torch.zeros(1), embeddings] if kind == "fcclip" else embeddings, root / f"{stem}.pt")


@pytest.mark.parametrize("kind", ["san", "catseg", "fcclip"])
def test_import_the_original_scripts_outputs(tmp_path, kind):
    root = tmp_path / "sp_folder"
    root.mkdir()
    ids = np.zeros((6, 8), np.uint8)
    ids[:, :3], ids[:, 5:] = 1, 2
    embeddings = torch.cat([torch.zeros(1, 8), _text(2)])
    info = [{"id": 1, "category_id": 4}, {"category_id": 0, "area": 12}]  # "id"/"area" may be absent (FC-CLIP)
    _write_original(root, "tok-front", ids, info, embeddings, kind)
    _write_original(root, "tok-back", ids * 0, [], torch.zeros(1, 8), kind)
    torch.save(_text(6), root / "text_embedding.pt")  # V + 1 rows: the last is dropped
    (tmp_path / "tokens.yaml").write_text("scene0: {CAM_FRONT: tok-front, CAM_BACK: tok-back}\n")
    config = ImportConfig(root=str(root), kind=kind, token_map=str(tmp_path / "tokens.yaml"))
    store = str(tmp_path / "segments")
    from openscene_ray.ssov.segment.importer import read_token_map

    document = import_scene(_record(["CAM_FRONT", "CAM_BACK"]), config, 5, store, {"source": "import"},
                            read_token_map(config.token_map))  # fmt: skip
    assert [f["superpixels"] for f in document["frames"]] == [2, 0]
    sp = read_frame(store, "scene0", "CAM_FRONT", 5)
    assert sp.categories.tolist() == [4, 0] and sp.areas.tolist() == [18, 12]
    assert np.allclose(sp.embeddings, embeddings.numpy(), atol=1e-3)
    assert read_scene_marker(store, "scene0")["frames"][0]["width"] == 8
    assert load_text_embedding(config, 5).shape == (5, 8)


class _Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_bad_original_files_are_errors_naming_the_file(tmp_path):
    root = tmp_path / "sp"
    root.mkdir()
    ids = np.ones((4, 4), np.uint8)
    config = ImportConfig(root=str(root), kind="san", names="{frame_id}")
    cases = {
        "pickle": (lambda: torch.save({"x": _Payload()}, root / "f.pt"), "f.pt", "weights_only"),
        "rows": (lambda: torch.save(torch.zeros(5, 8), root / "f.pt"), "f.pt", r"expected \[2, D\]"),
        "id": (lambda: (root / "f.json").write_text('[{"id": 3, "category_id": 1}]'), "f.json", "must describe id"),
        "category": (lambda: (root / "f.json").write_text('[{"category_id": 99}]'), "f.json", "vocabulary index"),
        "fcclip": (lambda: torch.save(torch.zeros(2, 8), root / "f.pt"), "f.pt", "pair"),
    }  # fmt: skip
    for case, (spoil, name, message) in cases.items():
        _write_original(root, "f", ids, [{"id": 1, "category_id": 1}], torch.zeros(2, 8), "san")
        spoil()
        cfg = config.model_copy(update={"kind": "fcclip"}) if case == "fcclip" else config
        with pytest.raises(SegmentsError, match=message) as info:
            import_scene(_record(["f"]), cfg, 5, str(tmp_path / "out"), {}, {})
        assert name in str(info.value), case
    (root / "f.png").unlink()
    with pytest.raises(SegmentsError, match="f.png: missing"):
        import_scene(_record(["f"]), config, 5, str(tmp_path / "out"), {}, {})
    torch.save(torch.zeros(3, 8), root / "text_embedding.pt")
    with pytest.raises(SegmentsError, match="3 text embeddings for a 5-phrase"):
        load_text_embedding(config, 5)


def test_segment_config_fingerprints_and_import_needs_a_folder(tmp_path):
    base = {"manifest": "m.parquet", "segments": str(tmp_path)}
    with pytest.raises(Exception, match="needs imported.root"):
        SegmentConfig(**base, source="import")
    a = SegmentConfig(**base, extractor={"name": "label-oracle", "options": {"noise": 0.1}})
    b = SegmentConfig(**base, extractor={"name": "label-oracle", "options": {"noise": 0.2}})
    assert a.fingerprint() != b.fingerprint()
    assert SegmentConfig(**base, dictionary="configs/ssov/dictionaries/scannet20.yaml").dictionary.startswith("/")
    assert SegmentConfig(**base).dictionary == "nuscenes16"


def test_superpixels_store_ids_above_255_as_16_bit(tmp_path):
    ids = np.arange(300, dtype=np.int32).reshape(15, 20) + 1
    sp = Superpixels(ids, np.zeros(300, np.int32), np.ones(300, np.int64), np.zeros((301, 4), np.float32))
    write_frame(str(tmp_path), "s", "f", sp)
    assert np.array_equal(read_frame(str(tmp_path), "s", "f", 1).ids, ids)


def test_an_lseg_export_segments_views_through_the_stage_core(synthetic_world, tmp_path):
    """The segmenter the SSOV tables use: an LSeg export (``train-2d``'s format; random weights
    here) through the extraction recipe. Every pixel takes the vocabulary phrase of highest
    similarity with its recipe feature, computed independently here."""
    from openscene_ray.extractors import build_extractor
    from openscene_ray.kernel.manifest import load_view
    from openscene_ray.kernel.text import build_text_encoder
    from openscene_ray.models.lseg import build_lseg, lseg_config
    from openscene_ray.models.lseg_checkpoint import LSegInfo, save_lseg_export
    from openscene_ray.ssov.segment.core import segment_scene

    torch.manual_seed(0)
    net = build_lseg(lseg_config("lseg-tiny", out_dim=32)).eval()
    options = {"dim": 32, "seed": 0}
    export = save_lseg_export(str(tmp_path / "lseg"), net, LSegInfo(text_encoder="synthetic", text_options=options,
                                                                     label_set="scannet20"))  # fmt: skip
    extractor = build_extractor("lseg", checkpoint=export)
    record = synthetic_world.records[0]
    views = [load_view(record, v) for v in record.views[:2]]
    # a random network's features barely vary with the pixel, so the vocabulary holds its own
    # features at 20 pixels of the first view (plus 5 random phrases): every pixel has a clear winner
    features = extractor.extract(views, record.image_height, record.image_width)
    pixels = torch.randperm(record.image_height * record.image_width, generator=torch.Generator().manual_seed(0))[:20]
    random = torch.from_numpy(build_text_encoder("synthetic", **options).encode([f"p{i}" for i in range(5)]))
    text = torch.nn.functional.normalize(torch.cat([features[0].reshape(-1, 32)[pixels].float(), random.float()]), dim=1)
    store = str(tmp_path / "segments")
    document = segment_scene(record.scene_id, views, extractor, text, store, {"test": 1}, views_per_batch=2)
    assert [f["frame_id"] for f in document["frames"]] == [v.frame_id for v in views]
    for view, feature in zip(views, features):
        frame = read_frame(store, record.scene_id, view.frame_id, len(text))
        expected = (feature.reshape(-1, 32).float() @ text.T).argmax(dim=1).numpy()
        phrase = np.concatenate([[-1], frame.categories])[frame.ids.reshape(-1)]
        assert len(frame.categories) >= 10  # measured: 20 of the 25 phrases win pixels in each view
        assert (phrase == expected).mean() > 0.999  # ties between fp16-close scores aside
        assert frame.areas.sum() == record.image_height * record.image_width
        assert np.allclose(np.linalg.norm(frame.embeddings[1:], axis=1), 1, atol=1e-2)
