"""How fast the viewer answers: a synthetic scene of ``--points`` points with ``--dim``-d fp16
features (each point its class's text embedding plus noise, like fused features) is written as a
manifest, a points file and a feature shard, then loaded and queried through the viewer's own
backend and colouring. Prints one line per step (median of ``--repeats``)::

    uv run python -m openscene_ray.viewer.latency --points 300000 --dim 768

``--clip`` also times the open_clip text tower of OpenScene's text space (ViT-L-14-336, random
weights: the time does not depend on them) on one prompt, which a new query costs once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from openscene_ray.kernel import storage
from openscene_ray.kernel.features import shard_uri, write_features
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.manifest import SceneRecord, points_table, write_manifest
from openscene_ray.kernel.text import build_text_encoder

__all__ = ["main", "write_scene"]


def write_scene(root: str, points: int, dim: int, seed: int = 0) -> tuple[str, str]:
    """A one-scene manifest and fused output under ``root``: ``(manifest, fused)``."""
    rng = np.random.default_rng(seed)
    classes = get_label_set("scannet20")
    prompts = classes.prompts()
    embeddings = build_text_encoder("synthetic", dim=dim, seed=0).encode(prompts)
    xyz = (rng.random((points, 3)) * [8.0, 6.0, 3.0]).astype(np.float32)
    labels = rng.integers(0, classes.num_classes, points).astype(np.int16)
    rgb = rng.integers(0, 256, (points, 3)).astype(np.uint8)
    features = (embeddings[labels] + 0.3 * rng.standard_normal((points, dim)) / np.sqrt(dim)).astype(np.float16)
    scene_id = "latency0000_00"
    points_uri = storage.join(root, "points", f"{scene_id}.parquet")
    storage.write_parquet(points_uri, points_table(xyz, rgb, labels))
    manifest = storage.join(root, "manifest.parquet")
    write_manifest(manifest, [SceneRecord(scene_id, "val", "synthetic", points_uri, points, 640, 480, 0, ())])
    fused = storage.join(root, "fused")
    metadata = {"text_model": f"synthetic:dim={dim},seed=0", "n_points": points, "feature_dim": dim}
    write_features(shard_uri(fused, scene_id), scene_id, np.arange(points), features,
                   np.ones(points, np.uint16), metadata)  # fmt: skip
    return manifest, fused


def _median_ms(step, repeats: int) -> tuple[float, float]:
    """(wall, CPU) milliseconds, medians over ``repeats`` runs of ``step(i)``."""
    wall, cpu = [], []
    for i in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(i)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def measure(manifest: str, fused: str, dim: int, display_points: int, repeats: int) -> list[tuple[str, float, float]]:
    from openscene_ray.kernel.config import load_config
    from openscene_ray.viewer.backend import ViewerBackend
    from openscene_ray.viewer.classes import parse_class_set
    from openscene_ray.viewer.config import ViewerConfig
    from openscene_ray.viewer.scoring import class_scores, heat_view, label_view

    config = load_config(ViewerConfig, base={
        "manifest": manifest, "fused": fused, "display_points": display_points, "template": "a {} in a scene",
        "text": {"encoder": "synthetic", "options": {"dim": dim, "seed": 0}},
    })  # fmt: skip
    backend = ViewerBackend(config)
    scene = None

    def load(_: int) -> None:
        nonlocal scene
        scene = backend._load(backend.scene_ids[0], "fusion")

    took = _median_ms(load, 1)
    rows = [(f"load the scene from its files ({scene.n_points:,} points, {len(scene.xyz):,} drawn), once", *took)]

    def query(i: int) -> None:  # a new text each time: embed, score the drawn points, colour them
        scores = backend.scores(scene, backend.text_embedding(f"query number {i}"))[0]
        heat_view(scores, scene.rgb)

    scores = backend.scores(scene, backend.text_embedding("chair"))[0]
    rows.append(("text query: embed + cosine of every drawn point + colours", *_median_ms(query, repeats)))
    rows.append(("threshold change: colours only", *_median_ms(lambda i: heat_view(scores, scene.rgb, 0.5), repeats)))
    classes = parse_class_set("scannet20")
    backend.class_embeddings(classes)

    def labels(_: int) -> None:
        prompts = backend.scores(scene, backend.class_embeddings(classes))
        label_view(class_scores(prompts, classes.prompt_to_class, classes.num_classes))

    rows.append(("label mode, ScanNet-20: 20 cosines a point + argmax + colours", *_median_ms(labels, repeats)))
    return rows


def clip_prompt_ms(repeats: int) -> tuple[float, float]:
    from openscene_ray.kernel.model_specs import DEFAULT_CLIP_ARCH

    encoder = build_text_encoder("open_clip", arch=DEFAULT_CLIP_ARCH, random_init=True)
    encoder.encode(["warm up"])
    return _median_ms(lambda i: encoder.encode([f"a prompt number {i}"]), repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=300_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--display-points", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--clip", action="store_true", help="also time the CLIP text tower on one prompt")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the CPU time is the wall time of an idle core)")  # fmt: skip
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as root:
        manifest, fused = write_scene(root, args.points, args.dim)
        rows = measure(manifest, fused, args.dim, args.display_points, args.repeats)
    if args.clip:
        rows.append(("open_clip ViT-L-14-336 text tower, one new prompt", *clip_prompt_ms(args.repeats)))
    print(f"{'wall ms':>9} {'CPU ms':>9}  ({args.threads} torch thread(s); load average {os.getloadavg()[0]:.1f})")
    for what, wall, cpu in rows:
        print(f"{wall:9.1f} {cpu:9.1f}  {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
