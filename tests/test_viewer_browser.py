"""The viewer in a real browser: headless Debian Chromium driven by Selenium through Debian's
chromedriver (nothing is downloaded). WebGL runs on SwiftShader.

How a test waits: after every change the server publishes the page state (JSON in
``document.documentElement.dataset.openscene``, with a sequence number, the status and message)
two animation frames after it sent the new colours; the tests wait for that state, never for a
fixed time. Pixel checks project the drawn points with the camera the page reports, splat them
far to near into an expected class image, and compare the screenshot away from region borders
and from the overlays (the control panel, the "Software WebGL rendering detected" notice in the
top-left corner and the axes in the bottom-left corner).

Set ``OPENSCENE_UPDATE_DOCS=1`` to also write the query screenshot to ``docs/viewer.png``.
"""

import io
import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion, distance_transform_edt
from test_viewer import fuse_in_process, hot, present_classes, viewer_config

from openscene_ray.kernel.labels import get_label_set

pytestmark = pytest.mark.slow

NAMES = get_label_set("scannet20").class_names
WIDTH, HEIGHT = 1000, 625  # the page; docs/viewer.png is this at 800 x 500
MARGIN = 4  # pixels trimmed off every expected region (splat edges, anti-aliasing)
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic", "--disable-dev-shm-usage",
)  # fmt: skip
DOCS_PNG = Path(__file__).resolve().parents[1] / "docs" / "viewer.png"


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        reason = "Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run the browser tests")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})  # fmt: skip
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    browser.downloads = downloads
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def viewer(synthetic_world, tmp_path_factory):
    """A viewer on the synthetic world; the last scene has no shard (the missing-shard case)."""
    from openscene_ray.viewer.server import ViewerServer

    missing = synthetic_world.records[-1].scene_id
    fused = fuse_in_process(synthetic_world, str(tmp_path_factory.mktemp("browser-fused")), skip=(missing,))
    server = ViewerServer(viewer_config(synthetic_world, fused))
    server.start()
    server.missing = missing
    yield server
    server.stop()


class Page:
    """One browser tab on the viewer, and the page state the server publishes."""

    def __init__(self, driver, server):
        self.driver, self.server = driver, server
        self.base = f"http://127.0.0.1:{server.port}/"

    def state(self) -> dict | None:
        text = self.driver.execute_script("return document.documentElement.dataset.openscene || null")
        return json.loads(text) if text else None

    def wait(self, condition, timeout: float = 60, after: int = 0) -> dict:
        """The first published state (with ``seq > after``) that meets ``condition``."""
        from selenium.webdriver.support.wait import WebDriverWait

        def ready(_):
            state = self.state()
            return state if state and state["seq"] > after and condition(state) else False

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(ready)
        except Exception:
            pytest.fail(f"the page never reached the state; last: {self.state()}")

    def open(self, until=lambda s: True, **params) -> dict:
        """Load the page with ``params`` in its URL; its first settled state that meets ``until``."""
        self.driver.get(self.base + ("?" + urlencode(params) if params else ""))
        return self.wait(lambda s: s["status"] != "busy" and until(s))

    def field(self, label: str):
        from selenium.webdriver.common.by import By

        xpath = f"//label[normalize-space()='{label}']/ancestor::div[contains(@class,'mantine-Flex-root')][1]//input"
        return self.driver.find_element(By.XPATH, xpath)

    def button(self, label: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']")

    def type(self, label: str, text: str) -> None:
        """Type into a text box, then wait until the server holds the text: viser's client sends
        input changes through a 50 ms throttle that keeps only the latest message, so a click
        right after typing could overtake (and drop) the last change."""
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.wait import WebDriverWait

        box = self.field(label)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.BACKSPACE)
        if len(text) > 200:  # as a paste: one input event
            self.driver.execute_script(
                "const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;"
                "set.call(arguments[0], arguments[1]);"
                "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", box, text)
        elif text:
            box.send_keys(text)
        handle = {"Query": "query", "Search": "search", "Classes": "classes"}[label]
        WebDriverWait(self.driver, 30, poll_frequency=0.02).until(
            lambda _: getattr(self.session().panel, handle).value == text)

    def session(self):
        """The server's session of this page (the newest connection)."""
        return self.server.sessions[max(self.server.sessions)]

    def act(self, action, condition, timeout: float = 60) -> dict:
        """Run ``action`` (clicks, typing) and wait for the state it leads to."""
        before = self.state()["seq"]
        action()
        return self.wait(condition, timeout, after=before)

    def text(self) -> str:
        return self.driver.execute_script("return document.body.innerText")

    def screenshot(self) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.driver.get_screenshot_as_png())).convert("RGB"))

    def overlays(self) -> np.ndarray:
        """bool [H, W]: pixels under the control panel, notices and the axes."""
        rects = self.driver.execute_script(
            "return [...document.querySelectorAll('.mantine-Paper-root, .mantine-Notification-root')]"
            ".map(e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })")
        mask = np.zeros((HEIGHT, WIDTH), bool)
        for left, top, right, bottom in rects:
            top, left = max(int(top) - 2, 0), max(int(left) - 2, 0)
            mask[top : int(np.ceil(bottom)) + 2, left : int(np.ceil(right)) + 2] = True
        mask[HEIGHT - 90 :, :90] = True  # the axes in the bottom-left corner
        return mask


def expected_classes(scene, camera: dict, point_size: float) -> np.ndarray:
    """int [H, W] class drawn at each pixel (-1 background, -2 no feature): every point a square
    of its projected size (perspective, vertical fov), painted far to near."""
    position, target, up = (np.asarray(camera[k], np.float64) for k in ("position", "look_at", "up"))
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, up) / np.linalg.norm(np.cross(forward, up))
    true_up = np.cross(right, forward)
    v = scene.xyz.astype(np.float64) - position
    depth, tan_half = v @ forward, np.tan(camera["fov"] / 2)
    col = ((v @ right) / (depth * tan_half * WIDTH / HEIGHT) + 1) / 2 * WIDTH
    row = (1 - (v @ true_up) / (depth * tan_half)) / 2 * HEIGHT
    half = point_size * HEIGHT / (4 * depth * tan_half)
    labels = np.where(scene.features.mask, scene.features.labels.astype(int), -2)
    image = np.full((HEIGHT, WIDTH), -1, int)
    for i in np.argsort(-depth):
        r0, r1 = int(max(row[i] - half[i], 0)), int(min(row[i] + half[i] + 1, HEIGHT))
        c0, c1 = int(max(col[i] - half[i], 0)), int(min(col[i] + half[i] + 1, WIDTH))
        image[r0:r1, c0:c1] = labels[i]
    return image


def regions(expected: np.ndarray, k: int, overlays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels well inside class k's region, pixels well inside everything else drawn)."""
    inside = ~overlays
    own = binary_erosion(expected == k, iterations=MARGIN) & inside
    other = binary_erosion((expected != k) & (expected != -1), iterations=MARGIN) & inside
    return own, other


def test_a_typed_query_lights_up_its_class(driver, viewer, synthetic_world, tmp_path):
    page = Page(driver, viewer)
    scene_id = synthetic_world.records[0].scene_id
    first = page.open(scene=scene_id, view="top")
    assert first["status"] == "ok" and first["scene"] == scene_id and first["query"] == ""
    scene = viewer.backend.scene(scene_id, "fusion")
    overlays = page.overlays()
    expected = expected_classes(scene, first["camera"], first["point_size"])
    # the object class with the largest visible region in this camera
    candidates = [n for n in present_classes(scene) if n not in ("wall", "floor")]
    name = max(candidates, key=lambda n: regions(expected, NAMES.index(n), overlays)[0].sum())
    k = NAMES.index(name)

    state = page.act(lambda: (page.type("Query", name), page.button("Show query").click()),
                     lambda s: s["query"] == name)  # fmt: skip
    assert state["status"] == "ok" and state["camera"] == first["camera"], state
    assert f"q={name}" in driver.current_url and f"scene={scene_id}" in driver.current_url
    shot = page.screenshot()
    own, other = regions(expected, k, overlays)
    lit = hot(shot)
    assert own.sum() > 400, f"{name}: too little of the class in view to check"
    assert lit[own].mean() > 0.9, f"{name}: only {lit[own].mean():.2f} of its pixels are in the hot end"
    assert lit[other].mean() < 0.02, f"{lit[other].mean():.3f} of the other pixels are hot"
    Image.fromarray(shot).save(tmp_path / "query.png")
    if os.environ.get("OPENSCENE_UPDATE_DOCS"):
        save_docs_screenshot(page)

    # label mode: argmax classes with a legend; a click shows the point's top-5 classes
    labels = page.act(lambda: page.button("Segment").click(), lambda s: s["mode"] == "labels")
    assert labels["status"] == "ok" and "mode=labels" in driver.current_url and name in page.text()
    distance = distance_transform_edt(own)
    row, col = np.unravel_index(np.argmax(distance), distance.shape)
    click_canvas(driver, int(col), int(row))
    wait_for_text(driver, f"1. {name} ")
    # a label set typed by the user
    typed = f"wall, floor, {name}"
    custom = page.act(lambda: (page.type("Classes", typed), page.button("Segment").click()),
                      lambda s: s["mode"] == "labels" and s["seq"] > labels["seq"])  # fmt: skip
    assert custom["status"] == "ok" and "your classes" in page.text(), custom
    assert "labels=wall%2C+floor" in driver.current_url


def save_docs_screenshot(page) -> None:
    """docs/viewer.png: the page at 800 x 500 without the software-rendering notice."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    for close in page.driver.find_elements(By.CSS_SELECTOR, ".mantine-Notification-closeButton"):
        close.click()
    WebDriverWait(page.driver, 10, poll_frequency=0.05).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, ".mantine-Notification-root"))
    DOCS_PNG.parent.mkdir(exist_ok=True)
    Image.fromarray(page.screenshot()).resize((800, 500), Image.LANCZOS).save(DOCS_PNG, optimize=True)


def click_canvas(driver, x: int, y: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = max(driver.find_elements(By.TAG_NAME, "canvas"), key=lambda c: c.size["width"] * c.size["height"])
    assert canvas.location == {"x": 0, "y": 0} and canvas.size == {"width": WIDTH, "height": HEIGHT}
    ActionChains(driver).move_to_element_with_offset(canvas, x - WIDTH // 2, y - HEIGHT // 2).click().perform()


def wait_for_text(driver, text: str, timeout: float = 30) -> None:
    from selenium.webdriver.support.wait import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.05).until(
            lambda d: text in d.execute_script("return document.body.innerText"))
    except Exception:
        page = driver.execute_script("return document.body.innerText")
        pytest.fail(f"{text!r} never appeared in the page: {page[-1500:]}")


def test_database_search_opens_the_scene_and_a_screenshot_downloads(driver, viewer, synthetic_world):
    page = Page(driver, viewer)
    page.open(scene=synthetic_world.records[0].scene_id)
    where: dict[str, list[str]] = {}
    for record in synthetic_world.records[:-1]:
        for name in present_classes(viewer.backend.scene(record.scene_id, "fusion")):
            where.setdefault(name, []).append(record.scene_id)
    first = synthetic_world.records[0].scene_id
    name, scene_id = min((n, s[0]) for n, s in where.items() if len(s) == 1 and s[0] != first)
    page.type("Search", name)
    page.button("Rank scenes").click()
    wait_for_text(driver, f"1. {scene_id}")
    state = page.act(lambda: page.button(next(b.text for b in buttons(driver) if b.text.startswith("1. "))).click(),
                     lambda s: s["scene"] == scene_id)  # fmt: skip
    assert state["status"] == "ok" and state["query"] == name and f"scene={scene_id}" in driver.current_url

    for old in driver.downloads.iterdir():
        old.unlink()
    page.button("Screenshot (PNG)").click()
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 60, poll_frequency=0.1).until(
        lambda _: [p for p in driver.downloads.iterdir() if p.suffix == ".png"])
    png = next(p for p in driver.downloads.iterdir() if p.suffix == ".png")
    assert png.name == f"openscene_{scene_id}_{name.replace(' ', '_')}.png"
    assert Image.open(png).size == (WIDTH, HEIGHT)


def buttons(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.TAG_NAME, "button")


def test_bad_input_is_a_message_and_the_server_goes_on(driver, viewer, synthetic_world):
    page = Page(driver, viewer)
    scene_id = synthetic_world.records[0].scene_id
    page.open(scene=scene_id)
    empty = page.act(lambda: (page.type("Query", ""), page.button("Show query").click()),
                     lambda s: s["status"] == "error")  # fmt: skip
    assert "the query is empty" in empty["message"] and "the query is empty" in page.text()
    long = page.act(lambda: (page.type("Query", "x" * 10_000), page.button("Show query").click()),
                    lambda s: s["status"] == "error")  # fmt: skip
    message = "the query has 10000 characters; the limit is 1000"
    assert message in long["message"] and message in page.text()
    # a link that cannot be shown as it is: the message, and the default scene (or the scene asked for)
    for params, message, status in (
        ({"scene": "nope"}, "unknown scene 'nope'", "ok"),
        ({"scene": viewer.missing}, f"scene {viewer.missing} has no fused features", "ok"),
        ({"scene": scene_id, "q": "x" * 2000}, "the query has 2000 characters; the limit is 1000", "error"),
        ({"scene": scene_id, "view": "side"}, "unknown view 'side'", "ok"),
    ):
        state = page.open(**params, until=lambda s: s["scene"] is not None)
        assert message in state["message"] and message in page.text(), state
        assert state["status"] == status and state["scene"] == scene_id, state
    again = page.open(scene=scene_id, q="bed")
    assert again["status"] == "ok" and again["query"] == "bed" and again["scene"] == scene_id
