"""The view in the page's URL, so that a view can be shared: ``?scene=…&q=…&source=…&mode=…``.

Keys: ``scene``, ``q`` (text query), ``source`` (fusion / distill / ensemble), ``mode`` (``query``
or ``labels``), ``labels`` (a label set or comma-separated class names), ``t`` (threshold, 0..1),
``view`` (``oblique`` or ``top``), ``template``. Unknown keys are left alone (viser reads some of
its own). The server learns the URL of a new page from a small script it sends the page
(:func:`hello_js`) and rewrites the URL after each change (:func:`state_js`), which also
publishes the page's state as JSON in ``document.documentElement.dataset.openscene`` once the
new colours are on screen.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs

from openscene_ray.viewer.display import VIEWS

__all__ = ["HELLO_PATH", "URL_KEYS", "ViewState", "hello_js", "parse_view_state", "state_js", "url_params"]

HELLO_PATH = "/_openscene/hello"
URL_KEYS = ("scene", "q", "source", "mode", "labels", "t", "view", "template")
MODES = ("query", "labels")
MAX_URL_VALUE = 20_000  # characters kept of one URL value (longer queries are refused anyway)


@dataclass(frozen=True)
class ViewState:
    scene: str | None = None
    query: str = ""
    source: str | None = None
    mode: str = "query"
    labels: str = "scannet20"
    threshold: float = 0.0
    view: str = "oblique"
    template: str | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)  # bad URL values, for the page

    def with_(self, **changes) -> ViewState:
        return replace(self, **changes)


def parse_view_state(search: str) -> ViewState:
    """The view named by a URL query string (with or without ``?``); a bad value is dropped
    and named in ``problems``."""
    values = {k: v[-1][:MAX_URL_VALUE] for k, v in parse_qs(search.lstrip("?"), keep_blank_values=True).items()}
    problems = []
    state = ViewState(scene=values.get("scene") or None, query=values.get("q", ""),
                      source=values.get("source") or None, labels=values.get("labels") or "scannet20",
                      template=values.get("template") or None)  # fmt: skip
    if values.get("mode"):
        if values["mode"] in MODES:
            state = state.with_(mode=values["mode"])
        else:
            problems.append(f"unknown mode {values['mode'][:40]!r} in the URL (query or labels)")
    if values.get("view"):
        if values["view"] in VIEWS:
            state = state.with_(view=values["view"])
        else:
            problems.append(f"unknown view {values['view'][:40]!r} in the URL ({' or '.join(VIEWS)})")
    if values.get("t"):
        try:
            threshold = float(values["t"])
            if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
                raise ValueError
            state = state.with_(threshold=threshold)
        except ValueError:
            problems.append(f"threshold t={values['t'][:40]!r} in the URL is not a number in [0, 1]")
    return state.with_(problems=tuple(problems))


def url_params(state: ViewState) -> dict[str, str]:
    """The URL parameters of ``state`` (defaults left out)."""
    params = {"scene": state.scene or "", "q": state.query, "source": state.source or "",
              "mode": state.mode if state.mode != "query" else "",
              "labels": state.labels if state.mode == "labels" else "",
              "t": f"{state.threshold:g}" if state.threshold > 0 else "",
              "view": state.view if state.view != "oblique" else "", "template": state.template or ""}  # fmt: skip
    return {k: v for k, v in params.items() if v}


def hello_js(client_id: int, nonce: str) -> str:
    """Script for a new page: report its URL query string to the gate (who this page is)."""
    target = json.dumps(f"{HELLO_PATH}?client={int(client_id)}&nonce={nonce}&search=")
    return f"fetch({target} + encodeURIComponent(window.location.search), {{credentials: 'same-origin'}});"


def state_js(params: dict[str, str], page: dict) -> str:
    """Script that puts ``params`` in the URL (replacing this module's keys and a ``token``) and,
    two animation frames later (the new colours drawn), publishes ``page`` as the page state."""
    return (
        "(() => { const url = new URL(window.location.href);"
        f" for (const key of {json.dumps([*URL_KEYS, 'token'])}) url.searchParams.delete(key);"
        f" for (const [key, value] of Object.entries({json.dumps(params)})) url.searchParams.set(key, value);"
        " window.history.replaceState(null, '', url.toString());"
        f" const page = {json.dumps(page)};"
        " requestAnimationFrame(() => requestAnimationFrame(() => {"
        " document.documentElement.dataset.openscene = JSON.stringify(page); })); })();"
    )
