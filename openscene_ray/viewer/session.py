"""One page (one browser tab): its controls, its scene and query, and what it shows.

Every page has its own scene, query and colours (client-scoped viser elements), so several users
can look at different scenes of one viewer. A page's actions run one at a time (a lock); each
ends by publishing the page state (URL + ``dataset.openscene``, see
:mod:`~openscene_ray.viewer.urlstate`) after the new colours, so a test, or a user sharing the
URL, sees the state that is on screen. A failure is a message in the page; the server goes on.
"""

from __future__ import annotations

import html
import logging
import secrets
import threading

import numpy as np

from openscene_ray.kernel.errors import OpenSceneError, describe_error
from openscene_ray.viewer.actions import wire_panel
from openscene_ray.viewer.backend import ViewerBackend
from openscene_ray.viewer.cache import DisplayScene
from openscene_ray.viewer.classes import parse_class_set
from openscene_ray.viewer.display import CameraPose, initial_camera, point_size
from openscene_ray.viewer.panel import CUSTOM_LABELS, build_panel
from openscene_ray.viewer.scoring import (
    box,
    class_scores,
    heat_legend,
    heat_view,
    label_legend,
    label_view,
)
from openscene_ray.viewer.urlstate import (
    ViewState,
    hello_js,
    parse_view_state,
    state_js,
    url_params,
)

__all__ = ["PageSession", "run_js"]

log = logging.getLogger(__name__)


def run_js(client, source: str) -> None:
    """Run a script in one page. viser 1.1 has no public call for this; its own Plotly loader sends
    the same message, on the client's connection, so it arrives after that client's earlier updates."""
    from viser import _messages

    client._websock_connection.queue_message(_messages.RunJavascriptMessage(source=source))


class PageSession:
    """The state and actions of one connected page."""

    def __init__(self, client, backend: ViewerBackend, start: ViewState, point_size: float | None = None):
        self.client, self.backend = client, backend
        self.lock = threading.RLock()
        self.nonce = secrets.token_hex(12)
        self.hello = threading.Event()
        self.search_string = ""
        self.state = self.default = start
        self.last_error = ""
        self.fixed_point_size = point_size
        self.scene: DisplayScene | None = None
        self.cloud = self.marker = None
        self.size = 0.05
        self.camera: CameraPose | None = None
        self.image: tuple[str, np.ndarray] | None = None  # (name, embedding) of an image query
        self.scores: np.ndarray | None = None  # the query's cosines of the drawn points
        self.classes = None  # (scene key, ClassSet, [M, K] class scores)
        self.seq = 0
        self.closed = False
        self.panel = build_panel(client.gui, backend.scene_ids, backend.sources, start.template,
                                 backend.config.text.encoder == "open_clip")  # fmt: skip
        wire_panel(self)

    # start ------------------------------------------------------------------------------------
    def receive_hello(self, nonce: str, search: str) -> bool:
        if self.hello.is_set() or not secrets.compare_digest(nonce, self.nonce):
            return False
        self.search_string = search
        self.hello.set()
        return True

    def start(self, hello_timeout: float = 5.0) -> None:
        """Ask the page for its URL, then show the view it names (or the default one)."""
        run_js(self.client, hello_js(self.client.client_id, self.nonce))
        if not self.hello.wait(hello_timeout):
            log.info("page %s did not report its URL; showing the default view", self.client.client_id)
        url = parse_view_state(self.search_string)
        state = url.with_(scene=url.scene or self.state.scene, source=url.source or self.state.source,
                          template=url.template or self.state.template)
        if not self.apply(state, reset_camera=True, notes=list(url.problems)) and self.scene is None:
            # a link to a scene that cannot be shown: say so, and show the default scene
            fallback = self.default.with_(view=state.view)
            shown = fallback.scene or self.backend.scene_ids[0]
            self.apply(fallback, reset_camera=True, notes=[f"{self.last_error} (showing {shown} instead)"])

    # the one way the view changes ----------------------------------------------------------------
    def apply(self, state: ViewState, *, reset_camera: bool = False, notes: list[str] | None = None,
              image: tuple[str, np.ndarray] | None = None) -> bool:  # fmt: skip
        """Show ``state`` (scene, source, colours); on failure keep what is shown and say why."""
        with self.lock:
            if self.closed:
                return False
            before = (self.state, self.image, self.scores)
            try:
                self._show_scene(state, reset_camera)
                if image is not None or state.query != self.state.query or state.template != self.state.template:
                    self.image, self.scores = image, None
                self.state = state
                self._colour()
                warning = self.backend.text_model_warning(self.scene)
                self._publish("ok", "; ".join([*(notes or []), *([warning] if warning else [])]))
                return True
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message in the page
                self._restore(*before)
                self._fail(exc)
                return False

    def _restore(self, state: ViewState, image, scores) -> None:
        """After a failed change: the query and colours of before, on the scene now shown."""
        if self.scene is None:
            self.state = state
            return
        same_scene = (state.scene, state.source) == (self.scene.scene_id, self.scene.features.source)
        self.state = state.with_(scene=self.scene.scene_id, source=self.scene.features.source)
        self.image, self.scores = image, scores if same_scene else None
        try:
            self._colour()
        except Exception:  # noqa: BLE001 - the old view cannot be drawn on this scene: its own colours
            self.cloud.colors = self.scene.rgb

    def report(self, exc: BaseException) -> None:
        """Show a failure that happened outside :meth:`apply` (the view stays as it is)."""
        with self.lock:
            if not self.closed:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, (OpenSceneError, ValueError)):
            message = str(exc)
        else:
            log.error("viewer page %s: %s", self.client.client_id, describe_error(exc), exc_info=exc)
            message = describe_error(exc)
        self.last_error = message[:600]
        self._publish("error", self.last_error)

    def _show_scene(self, state: ViewState, reset_camera: bool) -> None:
        scene_id = self.backend.check_scene(state.scene or self.backend.scene_ids[0])
        source = self.backend.check_source(state.source or self.backend.sources[0])
        current = self.scene is not None and (self.scene.scene_id, self.scene.features.source) == (scene_id, source)
        if not current:
            if not self.backend.is_cached(scene_id, source):
                self._status("busy", f"loading {scene_id} ({source})…")
            scene = self.backend.scene(scene_id, source)
            self._draw(scene)
            reset_camera = reset_camera or self.scene is None or self.scene.scene_id != scene_id
            self.scene, self.scores, self.classes = scene, None, None
        if reset_camera or state.view != self.state.view:
            self._set_camera(state.view)
        self.panel.scene.value, self.panel.source.value, self.panel.view.value = scene_id, source, state.view

    def _draw(self, scene: DisplayScene) -> None:
        """Send the geometry (once per scene): points relative to their centre, the node placed at
        the centre; float16 (half the bytes, <= 4 mm steps) while the scene fits in ±8 m."""
        center = (scene.xyz.min(axis=0) + scene.xyz.max(axis=0)) / 2
        offsets = (scene.xyz - center).astype(np.float32)
        precision = "float16" if len(offsets) == 0 or np.abs(offsets).max() < 8.0 else "float32"
        self.size = self.fixed_point_size or point_size(scene.xyz)
        if self.marker is not None:
            self.marker.remove()
            self.marker = None
        self.cloud = self.client.scene.add_point_cloud(
            "/scene", points=offsets, colors=scene.rgb, point_size=self.size, point_shape="square",
            point_shading="flat", precision=precision, position=tuple(float(c) for c in center),
        )  # fmt: skip

    def _set_camera(self, view: str) -> None:
        camera = self.client.camera
        aspect = camera.image_width / max(camera.image_height, 1) if camera.image_height else 1.6
        pose = initial_camera(self.scene.xyz, view, aspect)
        with self.client.atomic():
            camera.fov = pose.fov
            camera.up_direction = pose.up
            camera.position = pose.position
            camera.look_at = pose.look_at
        self.camera = pose

    # colours ----------------------------------------------------------------------------------
    def _colour(self) -> None:
        state = self.state
        self.panel.mode.value = state.mode
        self.panel.threshold.value = state.threshold
        if state.mode == "labels":
            self._colour_labels()
        elif self.image is not None or state.query:
            self._colour_query()
        else:
            self.cloud.colors = self.scene.rgb
            self.panel.legend.content = box("scene colours: type a query")

    def query_name(self) -> str:
        return self.image[0] if self.image is not None else self.state.query

    def _colour_query(self) -> None:
        if self.scores is None:
            embedding = self.image[1] if self.image is not None else self.backend.text_embedding(
                self.state.query, self.state.template)  # fmt: skip
            self.scores = self.backend.scores(self.scene, embedding)[0]
        self.recolour_heat()

    def recolour_heat(self) -> None:
        """Colours only (the geometry stays): the query's scores at the current threshold."""
        view = heat_view(self.scores, self.scene.rgb, self.state.threshold)
        self.cloud.colors = view.colors
        self.panel.legend.content = heat_legend(view, self.query_name(), self.state.threshold)

    def class_scores(self):
        """(ClassSet, float32 [M, K]) of the page's label set on the drawn points (cached)."""
        chosen = self.state.labels
        class_set = parse_class_set(chosen)
        key = (self.scene.scene_id, self.scene.features.source)
        if self.classes is None or self.classes[0] != key or self.classes[1].prompts != class_set.prompts:
            prompts = self.backend.scores(self.scene, self.backend.class_embeddings(class_set))
            self.classes = (key, class_set, class_scores(prompts, class_set.prompt_to_class, class_set.num_classes))
        return self.classes[1], self.classes[2]

    def _colour_labels(self) -> None:
        class_set, scores = self.class_scores()
        view = label_view(scores)
        self.cloud.colors = view.colors
        title = class_set.name if class_set.name != "custom" else "your classes"
        self.panel.legend.content = label_legend(view, class_set.class_names, title)
        if class_set.name != "custom":
            self.panel.label_set.value = class_set.name
        else:
            self.panel.label_set.value = CUSTOM_LABELS
            self.panel.classes.value = ", ".join(class_set.class_names)

    # page state -------------------------------------------------------------------------------
    def _status(self, status: str, message: str) -> None:
        color = {"ok": "#2b8a3e", "busy": "#1864ab", "error": "#c92a2a"}[status]
        shown = self._describe() if status == "ok" else ""
        note = f"<div style='color:{color}'>{html.escape(message)}</div>" if message else ""
        self.panel.status.content = box(f"<b style='color:{color}'>{status}</b> {html.escape(shown)}{note}")

    def _describe(self) -> str:
        if self.scene is None:
            return "no scene"
        what = {"labels": f"labels {self.state.labels}"}.get(self.state.mode, f"query {self.query_name()!r}")
        if self.state.mode == "query" and not self.query_name():
            what = "scene colours"
        drawn = len(self.scene.xyz)
        source = self.scene.features.source
        return f"{self.scene.scene_id} ({source}, {drawn:,} of {self.scene.n_points:,} points): {what}"

    def _publish(self, status: str, message: str) -> None:
        """Status text, URL and ``dataset.openscene`` (after the colours are drawn)."""
        self._status(status, message)
        self.seq += 1
        page = {"seq": self.seq, "status": status, "message": message, "query": self.query_name(),
                "scene": self.scene.scene_id if self.scene else None, "mode": self.state.mode,
                "source": self.scene.features.source if self.scene else None, "threshold": self.state.threshold,
                "drawn": len(self.scene.xyz) if self.scene else 0, "point_size": self.size,
                "camera": vars(self.camera) if self.camera else None}  # fmt: skip
        params = url_params(self.state.with_(scene=page["scene"], source=page["source"]))
        if self.image is not None:
            params.pop("q", None)  # an uploaded image cannot travel in a URL
        run_js(self.client, state_js(params, page))
