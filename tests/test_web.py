"""The web page at ``/``, driven in a real browser against the real app.

Debian's chromium (``/usr/bin/chromium``) is driven by the Playwright Python package; no browser is
ever downloaded (``scripts/install_browser.sh`` installs both). The app runs under uvicorn in a
background thread on 127.0.0.1, on a real redis-server and the shipped model, and the browser is
kept to that address. Every test skips, with the reason, when chromium or Playwright is missing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.settings import Settings
from tests.support.conditional_model import ConditionalModel
from tests.support.live import in_api_decode_without_worker

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("SYNTHGEN_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT = REPO / "docs" / "web.png"
GRID = 24
STEPS = 9
KEY = "web-test-key-0001"  # API keys must be at least 8 characters

if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"no chromium at {CHROMIUM}: run 'sudo bash scripts/install_browser.sh'", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright Python package is missing: run 'bash scripts/install_browser.sh'"
)

pytestmark = pytest.mark.timeout(300)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    # nothing but the app: any other host name fails to resolve
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

# In the page: the bytes behind each matching <img> (blob URLs), base64-encoded.
IMAGE_BYTES_JS = """
async (selector) => Promise.all([...document.querySelectorAll(selector)].map(async (img) => {
  const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return btoa(text);
}))
"""

# The grid is settled: not busy, showing `seed` (or any seed but `not_seed`) at `truncation`, every image decoded.
GRID_READY_JS = """
([seed, notSeed, truncation, size]) => {
  const grid = document.getElementById("grid");
  if (grid.getAttribute("aria-busy") !== "false") return false;
  if (seed !== null && grid.dataset.seed !== seed) return false;
  if (notSeed !== null && grid.dataset.seed === notSeed) return false;
  if (truncation !== null && grid.dataset.truncation !== truncation) return false;
  const imgs = [...grid.querySelectorAll("img")];
  return imgs.length === size && imgs.every((img) => img.dataset.loaded === "true" && img.complete && img.naturalWidth > 0);
}
"""


# ---------------------------------------------------------------------------------------- the server


@dataclass
class LiveServer:
    url: str
    server: Any
    thread: threading.Thread
    sock: socket.socket

    def get(self, path: str, key: str | None = None) -> bytes:
        return self.request("GET", path, key=key)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, key: str | None = None) -> bytes:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy
        with opener.open(request, timeout=30) as response:
            body_bytes: bytes = response.read()
            return body_bytes


@pytest.fixture
def live_server(redis_url: str) -> Iterator[Callable[..., LiveServer]]:
    """Start the real app under uvicorn in a thread on 127.0.0.1 (a browser needs a real HTTP server)."""
    import uvicorn

    from service.api.app import create_app

    started: list[LiveServer] = []

    def start(with_worker: bool = True, **overrides: Any) -> LiveServer:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "models_dir": REPO / "models",
            "default_model": "avatars-64",
            **in_api_decode_without_worker(with_worker),
            **overrides,
        }
        app = create_app(Settings(**values), with_worker=with_worker)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", http="h11", access_log=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
        thread.start()
        live = LiveServer(f"http://127.0.0.1:{port}", server, thread, sock)
        started.append(live)
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return live

    yield start
    for live in started:
        live.server.should_exit = True
        live.thread.join(timeout=30)
        live.sock.close()
        assert not live.thread.is_alive(), "uvicorn did not stop"


# ---------------------------------------------------------------------------------------- the browser


@dataclass
class Browser:
    page: Any
    base: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def wait_grid(self, seed: str | None = None, not_seed: str | None = None, truncation: str | None = None) -> str:
        self.page.wait_for_function(GRID_READY_JS, arg=[seed, not_seed, truncation, GRID], timeout=60_000)
        grid_seed: str = self.page.get_attribute("#grid", "data-seed")
        return grid_seed

    def image_bytes(self, selector: str) -> list[bytes]:
        return [base64.b64decode(text) for text in self.page.evaluate(IMAGE_BYTES_JS, selector)]

    def assert_only_local_traffic(self) -> None:
        elsewhere = [u for u in self.requests if not (u.startswith(self.base + "/") or u.startswith(("blob:", "data:")))]
        assert not elsewhere, f"the page reached beyond the app: {elsewhere}"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[[str], Browser]]:
    """A fresh headless chromium per test (Playwright's launch gives it a new, empty user-data-dir)."""
    opened: list[Any] = []
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)

        def open_page(base: str) -> Browser:
            context = chromium.new_context(viewport={"width": 1240, "height": 900}, accept_downloads=True)
            opened.append(context)
            page = context.new_page()
            page.set_default_timeout(30_000)
            view = Browser(page, base)
            page.on("request", lambda r: view.requests.append(r.url))
            page.on("pageerror", lambda e: view.page_errors.append(str(e)))
            page.on("console", lambda m: view.console_errors.append(m.text) if m.type == "error" else None)
            return view

        try:
            yield open_page
        finally:
            for context in opened:
                context.close()
            chromium.close()


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def diversity(pngs: list[bytes]) -> float:
    """How much the faces differ: the spread across faces of each pixel, averaged (grey levels)."""
    return float(np.stack([decode(p) for p in pngs]).std(axis=0).mean())


# ---------------------------------------------------------------------------------------- tests


def test_page_explores_the_model(
    live_server: Callable[..., LiveServer], browser: Callable[[str], Browser], tmp_path: Path
) -> None:
    server = live_server()
    view = browser(server.url)
    page = view.page
    page.goto(server.url + "/")

    # the model and a first crowd of distinct faces, fetched as blobs from the real API
    page.wait_for_function("document.getElementById('model-info').dataset.latentDim !== undefined")
    info = page.inner_text("#model-info")
    assert "avatars-64" in info and "latent_dim 32" in info, info
    first_seed = view.wait_grid(truncation="off")
    first = view.image_bytes("#grid img")
    assert len(first) == GRID and len({hashlib.sha256(b).digest() for b in first}) == GRID, "the faces are not distinct"
    assert all(src.startswith("blob:") for src in page.eval_on_selector_all("#grid img", "els => els.map(e => e.src)"))
    assert first[7] == server.get(f"/v1/images/{first_seed}.png?index=7"), "face 7 is not the API's image"
    assert page.is_hidden("#status")

    # a new crowd: a new seed, and new faces
    page.click("#new-crowd")
    new_seed = view.wait_grid(not_seed=first_seed, truncation="off")
    assert page.input_value("#seed") == new_seed
    renewed = view.image_bytes("#grid img")
    assert not {hashlib.sha256(b).digest() for b in renewed} & {hashlib.sha256(b).digest() for b in first}

    # a chosen seed (which keeps the screenshot the same from run to run)
    seed = "2024"
    page.fill("#seed", seed)
    page.press("#seed", "Enter")
    view.wait_grid(seed=seed, truncation="off")
    crowd = view.image_bytes("#grid img")

    # the truncation slider: within ±0.25σ the faces are much more alike than with the full prior
    assert page.inner_text("#truncation-value") == "off"
    page.focus("#truncation")
    page.keyboard.press("Home")
    view.wait_grid(seed=seed, truncation="0.25")
    assert "0.25" in page.inner_text("#truncation-value")
    typical = view.image_bytes("#grid img")
    [default] = [m for m in json.loads(server.get("/v1/models"))["models"] if m["default"]]
    if default["attributes"]:  # a conditional model truncates z only: the drawn attributes keep the crowd as varied
        assert typical != crowd, "the slider did not change the faces"
    else:
        assert diversity(typical) < 0.5 * diversity(crowd), (diversity(typical), diversity(crowd))
    for _ in range(7):  # 0.25 → 2.0
        page.keyboard.press("ArrowRight")
    view.wait_grid(seed=seed, truncation="2")
    assert "k = 2.00" in page.inner_text("#truncation-value")
    assert page.evaluate("location.hash") == "#seed=2024&t=2", "the crowd is not in the address"
    faces = view.image_bytes("#grid img")

    # pick two faces: the strip of 9 runs from one to the other
    page.click('#grid .face[data-index="3"]')
    page.click('#grid .face[data-index="17"]')
    assert page.get_attribute('#grid .face[data-index="3"]', "aria-pressed") == "true"
    assert page.get_attribute('#grid .face[data-index="17"]', "aria-pressed") == "true"
    page.wait_for_selector('#strip[data-loaded="true"][data-method="slerp"]', state="visible")
    width, height = page.eval_on_selector("#strip", "img => [img.naturalWidth, img.naturalHeight]")
    assert height > 0 and abs(width / height - STEPS) < 0.01, (width, height)
    (slerp_png,) = view.image_bytes("#strip")
    strip = decode(slerp_png)
    h = strip.shape[0]
    assert np.abs(strip[:, :h] - decode(faces[3])).max() <= 2, "the strip does not start at face A"
    assert np.abs(strip[:, -h:] - decode(faces[17])).max() <= 2, "the strip does not end at face B"
    page.check("#method-lerp")
    page.wait_for_selector('#strip[data-loaded="true"][data-method="lerp"]', state="visible")
    (lerp_png,) = view.image_bytes("#strip")
    assert lerp_png != slerp_png
    page.check("#method-slerp")
    page.wait_for_selector('#strip[data-loaded="true"][data-method="slerp"]', state="visible")

    # download 16 faces as a data set: progress, then a link to the tar
    page.fill("#download-count", "16")
    page.click("#download")
    link = page.wait_for_selector("#download-link", state="visible", timeout=60_000)
    job_id = page.get_attribute("#job", "data-job-id")
    assert job_id and link.get_attribute("download") == f"synthgen-{job_id}.tar"
    assert page.eval_on_selector("#progress", "p => [p.value, p.max]") == [16, 16]
    assert page.inner_text("#progress-text").startswith("succeeded")
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == f"synthgen-{job_id}.tar"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with tarfile.open(saved) as tar:
        names = tar.getnames()
        assert names[:2] == ["00000000.png", "00000000.json"] and len(names) == 32
        meta = json.loads(tar.extractfile("00000005.json").read())  # type: ignore[union-attr]
        tar_face = tar.extractfile("00000005.png").read()  # type: ignore[union-attr]
    assert str(meta["seed"]) == seed and meta["truncation"] == 2.0
    assert np.array_equal(decode(tar_face), decode(faces[5])), "the data set's face 5 is not the crowd's face 5"

    page.screenshot(path=str(tmp_path / "web.png"), full_page=True)
    if os.environ.get("SYNTHGEN_UPDATE_SCREENSHOT"):  # refresh the README's picture on purpose only
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "web.png", SCREENSHOT)

    assert page.is_hidden("#status"), page.inner_text("#status")
    assert not view.page_errors, view.page_errors
    assert not view.console_errors, view.console_errors
    view.assert_only_local_traffic()


def test_page_asks_for_an_api_key(live_server: Callable[..., LiveServer], browser: Callable[[str], Browser]) -> None:
    if "api_keys" not in Settings.model_fields:
        pytest.skip("this build of the service has no API keys (Settings.api_keys)")
    server = live_server(api_keys=KEY)
    view = browser(server.url)
    page = view.page
    page.goto(server.url + "/")

    # no key: every /v1 request is refused, and the page says what to do
    page.wait_for_selector("#status", state="visible")
    page.wait_for_function("document.getElementById('grid').getAttribute('aria-busy') === 'false'")
    assert "API key" in page.inner_text("#status")
    assert page.eval_on_selector("#status", "s => s.dataset.kind") == "error"
    assert page.locator("#grid .face.failed").count() == GRID
    assert "locked" in page.inner_text("#model-info")
    refused = [u for u in view.requests if "/v1/images/" in u]
    assert len(refused) == 1, f"after a 401 the page should stop asking for faces, asked {len(refused)} times"

    # a wrong key is refused too
    page.fill("#api-key", "not-the-right-key")
    page.press("#api-key", "Enter")
    page.wait_for_function("document.getElementById('status').textContent.includes('refused')")
    assert page.get_attribute("#api-key", "aria-invalid") == "true"

    # the right key: faces, the model and interpolation all work, and the message is gone
    page.fill("#api-key", KEY)
    page.click("#save-key")
    view.wait_grid()
    assert page.is_hidden("#status")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('avatars-64')")
    page.click('#grid .face[data-index="0"]')
    page.click('#grid .face[data-index="1"]')
    page.wait_for_selector('#strip[data-loaded="true"]', state="visible")

    # the key is remembered by this browser
    assert page.evaluate("localStorage.getItem('synthgen.apiKey')") == KEY
    page.reload()
    view.wait_grid()
    assert page.is_hidden("#status")
    assert page.input_value("#api-key") == KEY

    assert not view.page_errors, view.page_errors
    # the only console errors are the browser's own notes of the refused requests
    assert all("401" in text for text in view.console_errors), view.console_errors
    view.assert_only_local_traffic()


def test_page_reports_a_full_queue(live_server: Callable[..., LiveServer], browser: Callable[[str], Browser]) -> None:
    # no worker, and room for 20 queued images: a job of 16 fills the queue
    server = live_server(with_worker=False, max_queued_images=20)
    json.loads(server.request("POST", "/v1/jobs", {"count": 16, "seed": 1}))
    view = browser(server.url)
    page = view.page
    page.goto(server.url + "/")
    view.wait_grid()

    # a job that fits waits in the queue (nothing works on it here), and can be cancelled
    page.fill("#download-count", "4")
    page.click("#download")
    page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('queued: 0 of 4')")
    assert page.is_disabled("#download")
    page.click("#cancel-job")
    page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('cancelled')")
    assert page.is_enabled("#download") and page.is_hidden("#cancel-job") and page.is_hidden("#download-link")

    # one that does not fit is refused with 429, and the page says when to retry
    page.fill("#download-count", "16")
    page.click("#download")
    page.wait_for_selector("#status", state="visible")
    status = page.inner_text("#status")
    assert "queue_full" in status and "Retry in" in status, status
    assert page.is_enabled("#download"), "the form stays usable after a refusal"

    page.fill("#download-count", "25")
    page.click("#download")
    page.wait_for_function("document.getElementById('status').textContent.includes('too_large')")

    page.fill("#download-count", "0")
    page.click("#download")
    page.wait_for_function("document.getElementById('status').textContent.includes('whole number from 1')")

    assert not view.page_errors, view.page_errors
    assert all("429" in text or "413" in text for text in view.console_errors), view.console_errors
    view.assert_only_local_traffic()


def test_page_asks_for_who_is_in_the_crowd(
    live_server: Callable[..., LiveServer], browser: Callable[[str], Browser], tiny_conditional: ConditionalModel
) -> None:
    server = live_server(models_dir=tiny_conditional.models_dir, default_model=tiny_conditional.name)
    [model] = json.loads(server.get("/v1/models"))["models"]
    attributes: dict[str, list[str]] = model["attributes"]
    fixed = next(n for n in model["identity_attributes"] if len(attributes[n]) >= 2)
    shared = next(n for n, v in attributes.items() if n not in model["identity_attributes"] and len(v) >= 3)
    fixed_value, first = attributes[fixed][-1], attributes[shared][0]
    others = attributes[shared][1:]
    view = browser(server.url)
    page = view.page
    page.goto(server.url + "/")

    # one picker per attribute of the model, from GET /v1/models
    page.wait_for_function(f"document.querySelectorAll('#attributes .attribute').length === {len(attributes)}")
    assert page.get_attribute("#attributes", "data-model") == tiny_conditional.ref
    assert page.is_visible("#attributes-help") and page.is_hidden("#attributes-none")
    options = page.eval_on_selector(f'[data-testid="attr-{fixed}"]', "s => [...s.options].map(o => o.value)")
    assert options == ["", *attributes[fixed]]
    page.select_option(f'[data-testid="attr-{fixed}"]', fixed_value)
    assert page.is_disabled(f'[data-testid="shares-{fixed}"]'), "a fixed attribute cannot also have shares"

    # exact shares: the sliders start even, and moving one rescales the others, always 100% in all
    page.check(f'[data-testid="shares-{shared}"]')
    assert page.is_visible(f'[data-testid="dist-{shared}"]') and page.is_disabled(f'[data-testid="attr-{shared}"]')

    def percents() -> dict[str, float]:
        return {v: float(page.inner_text(f'[data-testid="share-{shared}-{v}-percent"]').rstrip("%")) for v in attributes[shared]}

    assert all(abs(p - 100 / len(attributes[shared])) < 0.06 for p in percents().values()), percents()
    page.focus(f'[data-testid="share-{shared}-{first}"]')
    page.keyboard.press("Home")
    for _ in range(60):
        page.keyboard.press("ArrowRight")
    shown = percents()
    assert shown[first] == 60 and all(abs(shown[v] - 40 / len(others)) < 0.06 for v in others), shown
    assert abs(sum(shown.values()) - 100) < 0.1 * len(shown), shown
    assert "total 100%" in page.inner_text(f'[data-testid="dist-{shared}"] .shares-total')

    # a small identity job: 3 identities x 4 faces, shown as a grid of 3 rows and 4 columns
    page.fill("#identities", "3")
    page.fill("#per-identity", "4")
    assert page.input_value("#download-count") == "12" and page.is_disabled("#download-count")
    page.click("#download")
    page.wait_for_selector("#download-link", state="visible", timeout=60_000)
    job_id = page.get_attribute("#job", "data-job-id")
    job = json.loads(server.get(f"/v1/jobs/{job_id}"))
    assert (job["count"], job["identities"], job["per_identity"], job["attributes"]) == (12, 3, 4, {fixed: fixed_value})
    assert set(job["distribution"]) == {shared} and abs(job["distribution"][shared][first] - 0.6) < 1e-9
    assert abs(sum(job["distribution"][shared].values()) - 1) < 1e-9

    page.wait_for_selector("#identity-grid", state="visible")
    rows = page.eval_on_selector_all(
        "#identity-grid .identity-row",
        "rows => rows.map(r => [r.dataset.identity, [...r.querySelectorAll('img')].map(i => [i.dataset.index, JSON.parse(i.dataset.attributes)])])",
    )
    assert [identity for identity, _ in rows] == ["0", "1", "2"], rows
    assert [[int(index) for index, _ in images] for _, images in rows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert all(labels[fixed] == fixed_value for _, images in rows for _, labels in images)
    grid = view.image_bytes("#identity-grid img")
    assert grid[5] == server.get(f"/v1/jobs/{job_id}/images/5"), "the grid's face 5 is not the job's image 5"
    assert page.is_visible("#card-link") and page.get_attribute("#card-link", "download") == f"synthgen-{job_id}.md"

    assert page.is_hidden("#status"), page.inner_text("#status")
    assert not view.page_errors, view.page_errors
    assert not view.console_errors, view.console_errors
    view.assert_only_local_traffic()
