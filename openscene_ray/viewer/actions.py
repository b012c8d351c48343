"""What a page's controls do: callbacks from the page, each a change of the session's view (or a
click, a search, a screenshot). Updates made by the server itself (``event.client is None``) are
ignored, so showing a state never triggers another change."""

from __future__ import annotations

import html
import io
import logging
import re

import numpy as np

from openscene_ray.viewer.display import pick_point
from openscene_ray.viewer.panel import CUSTOM_LABELS
from openscene_ray.viewer.scoring import box, top_classes, validate_query

__all__ = ["click_point", "run_search", "screenshot", "wire_panel"]

log = logging.getLogger(__name__)


def _from_page(action):
    def handler(event) -> None:
        if event.client is not None:
            action()

    return handler


def wire_panel(session) -> None:
    """Connect the controls of ``session.panel`` to the session."""
    p = session.panel

    def run_query() -> None:
        try:
            text = validate_query(p.query.value)
        except ValueError as exc:
            session.report(exc)
            return
        session.apply(session.state.with_(query=text, template=p.template.value.strip() or None, mode="query"))

    def segment() -> None:  # typed class names win over the dropdown
        chosen = p.classes.value.strip() or p.label_set.value
        if chosen == CUSTOM_LABELS:
            session.report(ValueError("type two or more class names separated by commas under Classes"))
            return
        session.apply(session.state.with_(mode="labels", labels=chosen))

    def pick_label_set() -> None:
        if p.label_set.value != CUSTOM_LABELS:
            p.classes.value = ""
            session.apply(session.state.with_(mode="labels", labels=p.label_set.value))

    p.scene.on_update(_from_page(lambda: session.apply(session.state.with_(scene=p.scene.value))))
    p.source.on_update(_from_page(lambda: session.apply(session.state.with_(source=p.source.value))))
    p.view.on_update(_from_page(lambda: session.apply(session.state.with_(view=p.view.value), reset_camera=True)))
    p.mode.on_update(_from_page(lambda: session.apply(session.state.with_(mode=p.mode.value))))
    p.query_form.on_submit(_from_page(run_query))
    p.query_button.on_click(_from_page(run_query))
    p.threshold.on_update(_from_page(lambda: set_threshold(session, float(p.threshold.value))))
    p.label_set.on_update(_from_page(pick_label_set))
    p.labels_button.on_click(_from_page(segment))
    p.image.on_upload(_from_page(lambda: image_query(session)))
    p.search_form.on_submit(_from_page(lambda: run_search(session)))
    p.search_button.on_click(_from_page(lambda: run_search(session)))
    p.screenshot.on_click(_from_page(lambda: screenshot(session)))
    session.client.scene.on_click()(lambda event: click_point(session, event.ray_origin, event.ray_direction))


def set_threshold(session, value: float) -> None:
    """Recolour with the query's cached scores (colours only)."""
    with session.lock:
        if session.scene is None or session.state.mode != "query" or session.scores is None:
            session.state = session.state.with_(threshold=value)
            return
    session.apply(session.state.with_(threshold=value))


def image_query(session) -> None:
    upload = session.panel.image.value
    name = f"image:{upload.name or 'upload'}"
    try:
        embedding = session.backend.image_embedding(upload.content, upload.name or "the image")
    except Exception as exc:  # noqa: BLE001 - shown in the page
        session.report(exc)
        return
    session.apply(session.state.with_(query="", mode="query"), image=(name, embedding))


def click_point(session, origin, direction) -> None:
    """The top-5 classes (page's label set) and the query score of the point under the click."""
    with session.lock:
        if session.scene is None:
            return
        hit = pick_point(session.scene.xyz, origin, direction, session.size)
        if hit is None:
            session.panel.point.content = box("no point under the cursor")
            return
        rows = [f"<b>point {int(session.scene.index[hit])}</b> of {html.escape(session.scene.scene_id)}"]
        try:
            class_set, scores = session.class_scores()
            best = top_classes(scores[hit], class_set.class_names, 5)
            rows += [f"{i + 1}. {html.escape(name)} {score:.3f}" for i, (name, score) in enumerate(best)]
            rows += [] if best else ["no feature at this point"]
        except Exception as exc:  # noqa: BLE001 - e.g. a custom label set that does not parse
            rows.append(html.escape(str(exc)))
        if session.scores is not None and np.isfinite(session.scores[hit]):
            rows.append(f"query {html.escape(session.query_name()[:60])!s}: {session.scores[hit]:.3f}")
        session.panel.point.content = box("<br>".join(rows))
        xyz = tuple(float(v) for v in session.scene.xyz[hit])
        session.marker = session.client.scene.add_icosphere("/picked", radius=session.size * 1.5, color=(230, 30, 30),
                                                            position=xyz)  # fmt: skip


def run_search(session) -> None:
    """Rank every scene of the fused output for the search text; one button per top scene."""
    p = session.panel
    text = p.search.value
    p.results.content = box("searching…")
    for button in p.result_buttons:
        button.remove()
    p.result_buttons.clear()
    try:
        found = session.backend.search(text, session.state.template)
    except Exception as exc:  # noqa: BLE001 - shown in the page
        p.results.content = box(html.escape(str(exc)[:600]), "color:#c92a2a")
        session.report(exc)
        return
    notes = [f"{found['scanned']} scenes scanned"]
    notes += [f"failed: {html.escape(', '.join(found['failed']))}"] if found["failed"] else []
    notes += [html.escape(w) for w in found["warnings"]]
    p.results.content = box("<br>".join(notes))
    query = text.strip()
    with p.search_folder:
        for rank, hit in enumerate(found["scenes"], 1):
            button = session.client.gui.add_button(f"{rank}. {hit['scene_id']}  {hit['score']:.3f}")
            button.on_click(_from_page(lambda scene=hit["scene_id"]: open_result(session, scene, query)))
            p.result_buttons.append(button)


def open_result(session, scene_id: str, query: str) -> None:
    """A search result: its scene with the search's query applied."""
    session.panel.query.value = query
    session.apply(session.state.with_(scene=scene_id, query=query, mode="query"), reset_camera=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "view"


def screenshot(session) -> None:
    """The page's current render as a PNG download (``openscene_<scene>_<query>.png``)."""
    from PIL import Image

    camera = session.client.camera
    width, height = min(int(camera.image_width or 1280), 2560), min(int(camera.image_height or 800), 1600)
    try:
        pixels = session.client.get_render(height=height, width=width, transport_format="png", timeout=30)
    except Exception as exc:  # noqa: BLE001 - the page went away or did not answer
        log.warning("screenshot failed: %s", exc)
        return
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    scene = session.scene.scene_id if session.scene else "scene"
    session.client.send_file_download(f"openscene_{_slug(scene)}_{_slug(session.query_name())}.png",
                                      buffer.getvalue(), save_immediately=True)  # fmt: skip
