"""One real end-to-end run: the app on localhost, driven by Playwright in headless Chromium."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import pytest
import torch

from ferlab.checkpoints import base_card, save_checkpoint
from ferlab.models import create_model
from tests.test_ui import drawn_face

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    for name, arch, cfg in (("tiny_cnn", "cnn", {"widths": [8, 16, 16, 16], "hidden": 16}),
                            ("tiny_mobilenet", "mobilenet_v2", {"width_mult": 0.25})):
        m = create_model(arch, **cfg).eval()
        save_checkpoint(m, base_card(m, [0.5], [0.5]), folder / name)
    port = _free_port()
    env = dict(os.environ, FERLAB_CHECKPOINTS=str(folder), GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUNBUFFERED="1")
    log = open(tmp_path_factory.mktemp("log") / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=Path(__file__).parent.parent,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(180):
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except Exception:
                time.sleep(0.5)
        else:
            raise RuntimeError("app did not start in 90 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_upload_classify_and_every_tab(app_url, tmp_path):
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), cv2.cvtColor(drawn_face(), cv2.COLOR_RGB2BGR))
    shots = Path(os.environ.get("FERLAB_SCREENSHOTS", tmp_path))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url, wait_until="domcontentloaded")

        # Classify: upload, wait for the label, the sentence and the annotated heatmap image
        page.set_input_files("#classify-input input[type=file]", str(image))
        page.locator("#classify-button").click()
        page.wait_for_selector("#classify-sentence :text('Looks')", timeout=60_000)
        page.wait_for_selector("#classify-output img", timeout=30_000)
        assert page.locator("#classify-label").inner_text().strip()
        page.screenshot(path=str(shots / "classify.png"), full_page=True)

        # Explain
        page.get_by_role("tab", name="Explain").click()
        page.set_input_files("#explain-input input[type=file]", str(image))
        page.locator("#explain-button").click()
        page.wait_for_selector("#explain-notes :text('Deletion AUC')", timeout=60_000)
        page.wait_for_selector("#explain-overlay img", timeout=30_000)
        page.screenshot(path=str(shots / "explain.png"), full_page=True)

        # Layers
        page.get_by_role("tab", name="Layers").click()
        page.set_input_files("#layers-input input[type=file]", str(image))
        page.locator("#layers-button").click()
        page.wait_for_selector("#layers-caption :text('Grad-CAM rows')", timeout=60_000)
        page.wait_for_selector("#layers-gallery img", timeout=30_000)
        page.screenshot(path=str(shots / "layers.png"), full_page=True)

        # Compare
        page.get_by_role("tab", name="Compare").click()
        page.set_input_files("#compare-input input[type=file]", str(image))
        page.locator("#compare-button").click()
        page.wait_for_selector("#compare-table :text('looked mostly at')", timeout=60_000)
        page.screenshot(path=str(shots / "compare.png"), full_page=True)

        # Dataset browser (needs the data; the first scan scores PublicTest and PrivateTest)
        from ferlab.data import LOCAL_COPY
        if LOCAL_COPY.is_dir():
            page.get_by_role("tab", name="Dataset browser").click()
            page.locator("#browser-scan").click()
            page.wait_for_selector("#browser-status :text('images match')", timeout=240_000)
            page.wait_for_selector("#browser-gallery img", timeout=30_000)
            page.screenshot(path=str(shots / "browser.png"), full_page=True)

        # Models
        page.get_by_role("tab", name="Models").click()
        page.wait_for_selector("#models-overview :text('tiny_mobilenet')", timeout=30_000)
        page.screenshot(path=str(shots / "models.png"), full_page=True)
        browser.close()
