"""The controls of one page (viser GUI elements, local to that page's client)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openscene_ray.viewer.classes import label_set_choices
from openscene_ray.viewer.display import VIEWS
from openscene_ray.viewer.scoring import box

__all__ = ["CUSTOM_LABELS", "Panel", "build_panel"]

CUSTOM_LABELS = "custom (type below)"


@dataclass
class Panel:
    status: Any
    scene: Any
    source: Any
    view: Any
    mode: Any
    query_form: Any
    query: Any
    template: Any
    query_button: Any
    image: Any
    threshold: Any
    label_set: Any
    classes: Any
    labels_button: Any
    legend: Any
    point: Any
    search_folder: Any
    search_form: Any
    search: Any
    search_button: Any
    results: Any
    screenshot: Any
    result_buttons: list


def build_panel(gui, scene_ids: list[str], sources: list[str], template: str | None, image_queries: bool) -> Panel:
    """Add the page's controls to ``gui`` (a client's :class:`viser.GuiApi`)."""
    status = gui.add_html(box("connecting…"))
    scene = gui.add_dropdown("Scene", scene_ids, initial_value=scene_ids[0])
    source = gui.add_dropdown("Features", sources, initial_value=sources[0])
    view = gui.add_dropdown("Camera", list(VIEWS), initial_value=VIEWS[0], hint="reset the camera to this view")
    mode = gui.add_dropdown("Colour by", ["query", "labels"], initial_value="query")
    with gui.add_folder("Text / image query"):
        with gui.add_form(None) as query_form:
            query = gui.add_text("Query", "", hint="e.g. somewhere soft, made of metal, where can I cook?")
            query_button = gui.add_button("Show query", icon="search")
        template_field = gui.add_text("Template", template or "", hint="optional, e.g. 'a {} in a scene'")
        image = gui.add_upload_button("Image query", icon="photo", mime_type="image/*", disabled=not image_queries,
                                      hint="CLIP image embedding as the query (open_clip encoder)")  # fmt: skip
        threshold = gui.add_slider("Threshold", 0.0, 1.0, 0.01, 0.0, hint="below it: scene colours, greyed")
    with gui.add_folder("Segmentation"):
        label_set = gui.add_dropdown("Label set", [*label_set_choices(), CUSTOM_LABELS], initial_value="scannet20")
        classes = gui.add_text("Classes", "", hint="comma-separated class names (custom label set)")
        labels_button = gui.add_button("Segment", icon="palette")
    legend = gui.add_html("")
    point = gui.add_html(box("click a point: its top-5 classes", "opacity:0.7"))
    with gui.add_folder("Search all scenes") as search_folder:
        with gui.add_form(None) as search_form:
            search = gui.add_text("Search", "", hint="rank every scene of the fused output")
            search_button = gui.add_button("Rank scenes", icon="database-search")
        results = gui.add_html("")
    screenshot = gui.add_button("Screenshot (PNG)", icon="camera")
    return Panel(status, scene, source, view, mode, query_form, query, template_field, query_button, image,
                 threshold, label_set, classes, labels_button, legend, point, search_folder, search_form, search,
                 search_button, results, screenshot, [])  # fmt: skip
