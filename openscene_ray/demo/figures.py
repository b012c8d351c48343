"""The demo report's pictures: one held-out room seen from one of its own cameras.

* ``room_segmentation.png``: ground truth, the 2D model's labels for that camera's view, fusion,
  distill and ensemble, each a z-buffered point-cloud render from the same camera, with a legend of
  the classes in the room (grey: no prediction);
* ``query_<name>.png``: one heatmap per query on the best-ranked room, from that room's camera, in
  the paper's blue-to-yellow palette with a colour bar.
"""

from __future__ import annotations

import numpy as np

from openscene_ray.kernel import storage
from openscene_ray.kernel.manifest import SceneRecord, load_scene
from openscene_ray.kernel.scene import IGNORE_LABEL, Scene, View
from openscene_ray.kernel.visual import UNKNOWN_COLOR, heatmap_colors, label_colors, label_palette, render_camera

__all__ = ["RENDER_SCALE", "best_view", "demo_figures", "query_heatmap_png", "room_segmentation_png"]

RENDER_SCALE = 2  # renders at twice the view's resolution
POINT_RADIUS = 3  # splat radius in rendered pixels: a few thousand points still read as surfaces


def best_view(scene: Scene) -> int:
    """The view whose image shows the most ground-truth classes (ties: the first)."""
    counts = [len(np.unique(v.label[v.label != IGNORE_LABEL])) if v.label is not None else 0 for v in scene.views]
    return int(np.argmax(counts))


def _render(xyz: np.ndarray, colors: np.ndarray, view: View) -> np.ndarray:
    intrinsics = np.asarray(view.intrinsics, np.float64).copy()
    intrinsics[:2] *= RENDER_SCALE
    return render_camera(xyz, colors, intrinsics, view.cam_to_world, view.width * RENDER_SCALE,
                         view.height * RENDER_SCALE, point_radius=POINT_RADIUS)  # fmt: skip


def _save(fig, uri: str) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    storage.write_bytes(uri, buffer.getvalue())


def room_segmentation_png(
    scene: Scene, panels: dict[str, np.ndarray], class_names: list[str], view_index: int, uri: str
) -> dict:
    """Render ``panels`` (title -> int class per point, -1 = no prediction) and the ground truth from
    view ``view_index``'s camera into one figure with a legend of every class shown; returns what
    it drew."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    view, k = scene.views[view_index], len(class_names)
    titles = {"ground truth": scene.labels.astype(np.int64), **panels}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    for ax, (title, labels) in zip(axes.flat, titles.items()):
        ax.imshow(_render(scene.xyz, label_colors(labels, k), view))
        ax.set_title(title, fontsize=12)
        ax.axis("off")
    for ax in list(axes.flat)[len(titles) :]:
        ax.axis("off")
    shown = np.unique(np.concatenate([np.unique(labels) for labels in titles.values()]))
    present = sorted(int(c) for c in shown if 0 <= c < k)  # every class any panel shows
    palette = label_palette(k) / 255.0
    handles = [Patch(color=palette[c], label=class_names[c]) for c in present]
    handles.append(Patch(color=np.asarray(UNKNOWN_COLOR) / 255.0, label="no prediction"))
    axes.flat[-1].legend(handles=handles, loc="center", fontsize=11, frameon=False, ncol=2)
    fig.suptitle(f"{scene.scene_id}, seen from camera {view.frame_id}", fontsize=13)
    _save(fig, uri)
    plt.close(fig)
    return {"png": uri, "panels": list(titles), "legend": [class_names[c] for c in present], "view": view.frame_id}


def query_heatmap_png(record: SceneRecord, scores: np.ndarray, query: str, uri: str) -> dict:
    """One query's per-point scores (NaN: no feature) from the room's best camera, blue (low) to
    yellow (high), with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scene = load_scene(record)
    view = scene.views[best_view(scene)]
    finite = np.isfinite(scores)
    low, high = (float(scores[finite].min()), float(scores[finite].max())) if finite.any() else (0.0, 1.0)
    fig, ax = plt.subplots(figsize=(8, 6.4))
    ax.imshow(_render(scene.xyz, heatmap_colors(scores, low, high), view))
    ax.set_title(f'"{query}" in {record.scene_id}', fontsize=12)
    ax.axis("off")
    fig.colorbar(ScalarMappable(Normalize(low, high), cmap="viridis"), ax=ax, fraction=0.035, label="cosine score")
    _save(fig, uri)
    plt.close(fig)
    return {"png": uri, "query": query, "view": view.frame_id}


def _view_panel(scene: Scene, fused: str, text, view_index: int) -> np.ndarray:
    """The 2D model's classes at the points one view sees (the fusion's extractor rerun), -1 elsewhere."""
    from openscene_ray.evaluation.views2d import shard_extractor, shard_fusion_params, view_predictions
    from openscene_ray.kernel.features import read_features, shard_uri

    metadata = read_features(shard_uri(fused, scene.scene_id)).metadata
    found = view_predictions(scene.xyz, scene.views[view_index], shard_extractor(metadata, "cpu"),
                             shard_fusion_params(metadata), text)  # fmt: skip
    labels = np.full(len(scene.xyz), -1, np.int64)
    labels[found.points] = found.classes
    return labels


def demo_figures(manifest: str, fused: str, evaluation: str, queries: list[dict], text_config: dict, out: str) -> list[dict]:
    """The room picture (the first held-out room) and one heatmap per answered query, under
    ``<out>/figures``; returns one entry per picture (paths relative to ``out``)."""
    import os

    from openscene_ray.kernel.manifest import read_manifest
    from openscene_ray.kernel.text import TextSpaceConfig, build_text_space
    from openscene_ray.query.embed import embed_texts
    from openscene_ray.query.scene import load_scene_features

    records = {r.scene_id: r for r in read_manifest(manifest)}
    room = next(r for r in records.values() if r.split == "val")
    text = build_text_space(TextSpaceConfig.model_validate(text_config))
    predictions = storage.read_parquet(storage.join(evaluation, "point_features", f"{room.scene_id}.parquet"))
    scene = load_scene(room)
    view_index = best_view(scene)
    panels = {f"2D per view (camera {scene.views[view_index].frame_id})": _view_panel(scene, fused, text, view_index)}
    panels |= {mode: predictions.column(f"pred_{mode}").to_numpy().astype(np.int64)
               for mode in ("fusion", "distill", "ensemble")}  # fmt: skip
    folder = storage.join(out, "figures")
    figures = [room_segmentation_png(scene, panels, list(text.class_names), view_index,
                                     storage.join(folder, "room_segmentation.png"))]  # fmt: skip
    for query in queries:
        if not query["top_scenes"]:
            continue
        record = records[query["top_scenes"][0]["scene_id"]]
        scene = load_scene_features(record, "fusion", fused=fused)
        embedding = embed_texts([query["query"]], text_config["encoder"], text_config.get("options"), "a {} in a scene")
        scores = np.full(record.num_points, np.nan)
        features = scene.features[scene.mask].astype(np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
        scores[scene.mask] = (features / norms) @ embedding[0]
        uri = storage.join(folder, f"query_{query['query'].replace(' ', '_')}.png")
        figures.append(query_heatmap_png(record, scores, f"a {query['query']} in a scene", uri))
    for figure in figures:
        figure["png"] = os.path.relpath(figure["png"], out)
    return figures
