"""Live webcam frames per second as a user sees them: headless Chromium with a fake camera, against
the app on 127.0.0.1, beside the server-side handler alone on the same frames.

    python -m benchmarks.browser_stream [--seconds 10] [--checkpoints DIR] [--out results/browser_stream.md]

The camera is a 640x480 clip of NASA's public-domain astronaut portrait drifting sideways
(``--use-file-for-fake-video-capture``, a Y4M written here).  Chromium opens the Classify tab's
Live webcam, presses Start webcam, and a MutationObserver counts the annotated frames that replace
each other in the output image; the first seconds are a warm-up.  Measured with the Grad-CAM
overlay on and off.  The server-side figure calls the stream handler directly on the same frames,
in this process, one after the other.  The last rows are the transports' own ceilings, each a
minimal app whose handler returns each frame unchanged: the lab's loop (``live.js`` posting to a
server function, two frames in flight) and Gradio's webcam streaming event (``stream_every``
50 ms), which the lab used before.  Each browser figure is the median of ``--repeats`` runs.
Needs Debian's chromium and playwright.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks import ROOT, device_label, report
from benchmarks.load import start_app

ASTRONAUT = ROOT / "ferlab" / "assets" / "astronaut.jpg"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream"]
COUNT_FRAMES = """() => {
  window.__frames = [];
  const root = document.querySelector('#live-output');
  new MutationObserver(() => {
    const img = root.querySelector('img');
    if (img && img.src !== window.__last) { window.__last = img.src; window.__frames.push(performance.now()); }
  }).observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


# Minimal apps whose handlers return each frame unchanged: the transports' own ceilings
ECHO_LOOP_APP = """import sys
import gradio as gr
from ferlab.ui.live import LIVE_HTML, LIVE_JS, live_settings
def live_frame(payload):
    return {"stream": payload["stream"], "seq": payload["seq"], "image": payload["image"]}
with gr.Blocks() as demo:
    with gr.Tab("Live webcam"):
        gr.Checkbox(label="Grad-CAM overlay")
        gr.HTML(live_settings("echo", False, 0.0), html_template=LIVE_HTML, js_on_load=LIVE_JS,
                server_functions=[live_frame], elem_id="live-view")
demo.queue().launch(server_name="127.0.0.1", server_port=int(sys.argv[sys.argv.index("--port") + 1]))
"""
ECHO_STREAM_APP = """import sys
import gradio as gr
with gr.Blocks() as demo:
    with gr.Tab("Live webcam"):
        gr.Checkbox(label="Grad-CAM overlay")
        cam_in = gr.Image(sources=["webcam"], streaming=True, type="numpy", elem_id="live-input")
        cam_out = gr.Image(elem_id="live-output", format="jpeg")
        cam_in.stream(lambda f: f, cam_in, cam_out, stream_every=0.05, concurrency_limit=1)
demo.queue().launch(server_name="127.0.0.1", server_port=int(sys.argv[sys.argv.index("--port") + 1]))
"""


def camera_frames(count: int = 90, width: int = 640, height: int = 480) -> list[np.ndarray]:
    """RGB frames: the astronaut portrait drifting left and right on a dark background."""
    face = cv2.resize(cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB), (height, height))
    frames = []
    for i in range(count):
        canvas = np.full((height, width, 3), 40, np.uint8)
        dx = int((width - height) / 2 + 60 * np.sin(2 * np.pi * i / count))
        canvas[:, dx:dx + height] = face
        frames.append(canvas)
    return frames


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def browser_fps(url: str, camera: Path, seconds: float, warmup: float, grad_cam: bool) -> tuple[float, float]:
    """(frames per second seen in the page, median ms between frames)."""
    from playwright.sync_api import sync_playwright
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={camera}"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Live webcam").click()
            box = page.get_by_label("Grad-CAM overlay")
            if box.is_checked() != grad_cam:
                box.click()
            page.evaluate(COUNT_FRAMES)
            if page.locator("#live-view").count():   # the lab's loop
                page.locator("#live-view .live-start").click()
            else:                                    # Gradio's webcam streaming event
                page.get_by_text("Click to Access Webcam").click()
                page.locator("#live-input button", has_text="Record").wait_for(timeout=30_000)
                page.locator("#live-input button", has_text="Record").click()
            time.sleep(warmup)
            start = page.evaluate("[window.__frames.length, performance.now()]")
            time.sleep(seconds)
            frames = page.evaluate("window.__frames")
            end = page.evaluate("performance.now()")
        finally:
            browser.close()
    shown = [t for t in frames[start[0]:] if t <= end]
    if len(shown) < 2:
        return 0.0, float("nan")
    return len(shown) / ((end - start[1]) / 1000), float(np.median(np.diff(shown)))


def server_fps(registry, model: str, frames: list[np.ndarray], grad_cam: bool, repeats: int = 60) -> float:
    """Frames per second of the stream handler alone, called in this process one frame after another."""
    from ferlab.tracking import FaceTracker
    from ferlab.ui.live import classify_stream
    tracker = FaceTracker()
    for frame in frames[:5]:
        _, tracker = classify_stream(registry, frame, model, grad_cam, 0.45, tracker)
    t = time.perf_counter()
    for i in range(repeats):
        _, tracker = classify_stream(registry, frames[i % len(frames)], model, grad_cam, 0.45, tracker)
    return repeats / (time.perf_counter() - t)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoints", help="default: checkpoints/ (or FERLAB_CHECKPOINTS)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    frames = camera_frames()
    rows = []

    def measured(url, camera, grad_cam):
        runs = sorted((browser_fps(url, camera, args.seconds, args.warmup, grad_cam) for _ in range(args.repeats)),
                      key=lambda r: r[0])
        return runs[len(runs) // 2]

    with tempfile.TemporaryDirectory() as tmp:
        camera = write_y4m(Path(tmp) / "camera.y4m", frames)
        proc, url = start_app(args.checkpoints, log_path=str(Path(tmp) / "app.log"))
        try:
            for grad_cam in (True, False):
                rows.append((grad_cam, *measured(url, camera, grad_cam)))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        echoes = []
        for name, app in (("loop", ECHO_LOOP_APP), ("stream", ECHO_STREAM_APP)):
            echo = Path(tmp) / name
            echo.mkdir()
            (echo / "app.py").write_text(app)
            proc, url = start_app(log_path=str(Path(tmp) / f"{name}.log"), cwd=echo, extra_env={"PYTHONPATH": str(ROOT)})
            try:
                echoes.append(measured(url, camera, False))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    from ferlab.ui.common import ModelRegistry
    registry = ModelRegistry(args.checkpoints)
    model = registry.default()
    lines = [f"Live webcam, 640x480 fake camera in headless Chromium against the app on 127.0.0.1, `{model}`, "
             f"{device_label()}; Chromium runs on the same cores; {args.seconds:g} s counted after {args.warmup:g} s of "
             f"warm-up, median of {args.repeats} runs", "",
             "| Grad-CAM overlay | frames per second in the browser | median ms between frames | server-side handler alone, FPS | browser / server |",
             "|---|---|---|---|---|"]
    for grad_cam, fps, gap in rows:
        server = server_fps(registry, model, frames, grad_cam)
        lines.append(f"| {'on' if grad_cam else 'off'} | {fps:.1f} | {gap:.0f} | {server:.1f} | {fps / server:.2f} |")
    (loop_fps, loop_gap), (stream_fps, stream_gap) = echoes
    lines.append(f"| transport alone, the lab's loop: a handler returning each frame unchanged | {loop_fps:.1f} | "
                 f"{loop_gap:.0f} | | |")
    lines.append(f"| transport alone, Gradio's webcam streaming event (`stream_every` 50 ms), as the lab used before | "
                 f"{stream_fps:.1f} | {stream_gap:.0f} | | |")
    report("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
