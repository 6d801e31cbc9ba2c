"""One real end-to-end run: the app on localhost, driven by Playwright in headless Chromium."""
import os
import shutil
from pathlib import Path

import pytest

from benchmarks.load import start_app
from tests.synthetic import write_tiny_checkpoints

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


# FERLAB_SCREENSHOTS=docs/screenshots FERLAB_BROWSER_CHECKPOINTS=checkpoints regenerates the
# README's screenshots with the shipped models; by default the test serves two tiny untrained ones.
SCREENSHOTS = os.environ.get("FERLAB_SCREENSHOTS")
CHECKPOINTS = os.environ.get("FERLAB_BROWSER_CHECKPOINTS")


def open_page(p, url: str):
    """Headless Debian Chromium (the flags keep it off the closed network) on ``url``."""
    from benchmarks.browser_stream import CHROMIUM_FLAGS
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="domcontentloaded")
    return browser, page


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    folder = CHECKPOINTS or write_tiny_checkpoints(tmp_path_factory.mktemp("ckpts"))
    proc, url = start_app(str(folder), log_path=str(tmp_path_factory.mktemp("log") / "app.log"), timeout=90)
    try:
        yield url, folder
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_upload_classify_and_every_tab(app_url, tmp_path):
    app_url, folder_of_models = app_url
    image = Path(__file__).resolve().parent.parent / "ferlab" / "assets" / "astronaut.jpg"  # public domain
    shots = Path(SCREENSHOTS or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser, page = open_page(p, app_url)

        def run_tab(tab, prefix, wait_text, button=None, shows_image=None):
            """Open a tab, upload the face, press its button, wait for its main outputs."""
            if tab:
                page.get_by_role("tab", name=tab).click()
            page.set_input_files(f"#{prefix}-input input[type=file]", str(image))
            page.locator(f"#{button or prefix + '-button'}").click()
            page.wait_for_selector(wait_text, timeout=60_000)
            if shows_image:
                page.wait_for_selector(f"#{shows_image} img", timeout=30_000)
            page.screenshot(path=str(shots / f"{prefix}.png"), full_page=True)

        run_tab(None, "classify", "#classify-sentence :text('model reads')", shows_image="classify-output")
        assert page.locator("#classify-label").inner_text().strip()
        run_tab("Explain", "explain", "#explain-notes :text('Deletion AUC')", shows_image="explain-overlay")
        run_tab("Layers", "layers", "#layers-caption :text('Grad-CAM rows')", shows_image="layers-gallery")
        run_tab("Compare", "compare", "#compare-table :text('looked mostly at')")

        # Dataset browser (needs the data; the first scan scores PublicTest and PrivateTest)
        from ferlab.data import LOCAL_COPY
        if LOCAL_COPY.is_dir():
            page.get_by_role("tab", name="Dataset browser").click()
            page.locator("#browser-scan").click()
            page.wait_for_selector("#browser-status :text('images match')", timeout=240_000)
            page.wait_for_selector("#browser-gallery img", timeout=30_000)
            page.screenshot(path=str(tmp_path / "browser.png"), full_page=True)  # FER2013 images: never published

        # Models
        page.get_by_role("tab", name="Models").click()
        from ferlab import list_models
        page.wait_for_selector(f"#models-overview :text('{list_models(folder_of_models)[-1]}')", timeout=30_000)
        page.screenshot(path=str(shots / "models.png"), full_page=True)
        browser.close()


def test_live_webcam_frames_arrive(app_url, tmp_path):
    """A fake camera streams through the Live webcam tab: annotated frames arrive in the page."""
    from benchmarks.browser_stream import browser_fps, camera_frames, write_y4m
    app_url, _ = app_url
    camera = write_y4m(tmp_path / "camera.y4m", camera_frames(30))
    fps, _ = browser_fps(app_url, camera, seconds=3, warmup=3, grad_cam=True)
    assert fps > 1, fps


def test_live_webcam_follows_the_controls(app_url, tmp_path):
    """The live loop sends the controls' values with each frame (untick Grad-CAM, and the frames say so),
    sends nothing while its tab is out of view, and Stop stops it."""
    import json
    from benchmarks.browser_stream import CHROMIUM_FLAGS, camera_frames, write_y4m
    app_url, _ = app_url
    camera = write_y4m(tmp_path / "camera.y4m", camera_frames(30))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={camera}"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        frames = []
        page.on("request", lambda r: frames.append(json.loads(r.post_data)["data"])
                if "component_server" in r.url and r.post_data else None)
        page.goto(app_url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Live webcam").click()
        page.get_by_label("Grad-CAM overlay").click()   # on by default
        page.locator("#live-view .live-start").click()
        page.wait_for_selector("#live-view .live-status:text('frames per second')", timeout=60_000)
        page.get_by_role("tab", name="Photo / snapshot").click()   # out of view: no frames are sent
        page.wait_for_timeout(1000)
        sent = len(frames)
        page.wait_for_timeout(1500)
        assert len(frames) == sent
        page.get_by_role("tab", name="Live webcam").click()
        page.wait_for_timeout(1000)
        assert len(frames) > sent, "back in view, frames flow again"
        page.locator("#live-view .live-stop").click()
        shown = page.locator("#live-output img").get_attribute("src")
        page.wait_for_timeout(1500)   # answers in flight at Stop arrive now and must be dropped
        assert page.locator("#live-view .live-status").inner_text() == "Stopped."
        assert page.locator("#live-output img").get_attribute("src") == shown
        browser.close()
    assert frames and frames[-1]["grad_cam"] is False and frames[-1]["image"].startswith("data:image/jpeg")


def test_dataset_browser_without_data_says_so_once_in_full(tmp_path):
    """No data: the whole message with the command to run, angle brackets shown, on every click."""
    folder = write_tiny_checkpoints(tmp_path / "ck")
    proc, url = start_app(str(folder), log_path=str(tmp_path / "app.log"), timeout=90,
                          extra_env={"FERLAB_DATA": str(tmp_path / "no-data-here")})
    try:
        with playwright.sync_playwright() as p:
            browser, page = open_page(p, url)
            page.get_by_role("tab", name="Dataset browser").click()
            for _ in range(2):
                page.locator("#browser-scan").click()
                page.wait_for_selector("#browser-status :text('FERLAB_DATA=/path/to/fer2013 make app')",
                                       timeout=60_000)
            assert "train/<emotion>/*.jpg" in page.locator("#browser-status").inner_text()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
