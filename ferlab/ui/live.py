"""The Classify tab's Live webcam: a loop in the page (``live.js``) posts camera frames to the server
function ``live_frame``, several in flight, and shows the annotated frames that come back.

Gradio's webcam streaming event waits for each frame's round trip on a 50 ms tick, which held the
rate near 13 FPS on 2 cores; this loop keeps the server busy instead (docs/experiments/live_stream.md).
Frames are analysed one at a time, in order, through ``classify_stream``; each stream keeps its own
face tracker, so labels are smoothed per face.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import torch

from ..annotate import annotate_faces
from ..faces import FaceDetector, to_rgb_frame
from ..pipeline import Faces, find_faces, relocate
from ..tracking import FaceTracker
from .common import ModelRegistry, log

LIVE_MIN_FACE = 48       # live frames: faces under this many pixels are not searched for (keeps 640x480 fast)
LIVE_ANGLES = (0.0,)     # live frames are searched upright only: the turned passes would triple the search
LIVE_SEARCH_EVERY = 3    # live frames: faces are searched in every 3rd frame, kept in place in between
LIVE_JPEG_QUALITY = 80    # annotated live frames go back as JPEG: a fraction of PNG's or WebP's encoding time
LIVE_MAX_FRAME_CHARS = 4_000_000   # a base64 JPEG frame larger than this is refused (640x480 sends ~60 kB)
LIVE_STREAMS = 32         # live streams whose tracker is kept; the least recently used is dropped
# Torch threads per live frame: half the cores, the other half left to the browser that captures,
# encodes and shows the frames (on a laptop, the same machine).  On 2 cores one thread does a frame
# in 1.3x the time of two but with 0.7x their CPU, which the browser needs (docs/experiments/live_stream.md).
LIVE_THREADS = max(1, (os.cpu_count() or 2) // 2)

LIVE_JS = Path(__file__).with_name("live.js").read_text(encoding="utf-8")
LIVE_HTML = """<div class="ferlab-live">
  <div style="display: flex; gap: 0.6em; align-items: center; margin-bottom: 0.5em">
    <button class="live-start" style="padding: 0.4em 1.2em; border-radius: 6px; font-weight: 600;
      background: var(--button-primary-background-fill); color: var(--button-primary-text-color)">Start webcam</button>
    <button class="live-stop" style="padding: 0.4em 1.2em; border-radius: 6px" disabled>Stop</button>
    <span class="live-status" role="status">Press Start webcam: frames go to this app only, nothing is stored.</span>
  </div>
  <div id="live-output"><img alt="the webcam, with each face found, its emotion and Grad-CAM" style="max-width: 100%"></div>
  <video class="live-camera" muted playsinline
         style="position: absolute; width: 1px; height: 1px; opacity: 0; pointer-events: none"></video>
</div>"""


@functools.cache
def live_detector() -> FaceDetector:
    """The live stream's search: upright only, faces of ``LIVE_MIN_FACE`` px and more, MTCNN without
    BlazeFace's second opinion: BlazeFace takes about 45 ms on a 640x480 frame on one thread here
    (MTCNN 15 ms; docs/experiments/face_recall.md), nearly all of a frame's 50 ms at 20 FPS, and a
    person facing a webcam is the face MTCNN finds best."""
    return FaceDetector(min_face=LIVE_MIN_FACE, angles=LIVE_ANGLES, blazeface_min_score=None)


def live_faces(frame: np.ndarray, tracker: FaceTracker) -> Faces:
    """A live frame's faces: searched every ``LIVE_SEARCH_EVERY`` frames, the last search's
    locations reused in between (the search is most of a frame's cost; faces move little in 0.1 s)."""
    if (tracker.locations is not None and tracker.frame_shape == frame.shape
            and tracker.frames_since_search < LIVE_SEARCH_EVERY - 1):
        tracker.frames_since_search += 1
        return relocate(frame, tracker.locations)
    faces = find_faces(frame, detector=live_detector())
    tracker.locations, tracker.frames_since_search, tracker.frame_shape = faces.locations, 0, frame.shape
    return faces


def classify_stream(registry: ModelRegistry, frame, model_name: str, show_cam: bool = True, alpha: float = 0.45,
                    tracker: FaceTracker | None = None):
    """One live webcam frame -> (annotated frame, tracker).  Faces are followed across frames and their
    probabilities smoothed (``ferlab.tracking``).  Never raises: a bad frame is passed through."""
    tracker = tracker if isinstance(tracker, FaceTracker) else FaceTracker()
    if frame is None:
        return None, tracker
    try:
        frame = to_rgb_frame(frame)
        annotated, _ = annotate_faces(registry.get(model_name), frame, live_faces(frame, tracker), show_cam, alpha,
                                      tracker, time.monotonic())
        return annotated, tracker
    except Exception:
        log.exception("live frame failed")
        return frame, tracker


@dataclass
class LiveStream:
    """One live stream (a Start in one browser tab): its face tracker and the newest frame analysed
    (an older frame overtaken in flight is skipped)."""
    tracker: FaceTracker = field(default_factory=FaceTracker)
    newest: int = 0


class LiveStreams:
    """The ``size`` most recently used live streams, by the id the browser gave each.  Frames are
    analysed one at a time, whichever stream they belong to: on a few cores, frames analysed side by
    side only compete for them."""

    def __init__(self, size: int = LIVE_STREAMS):
        self.size = size
        self.analysis = threading.Lock()
        self._streams: OrderedDict[str, LiveStream] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> LiveStream:
        with self._lock:
            stream = self._streams.pop(key, None) or LiveStream()
            self._streams[key] = stream
            while len(self._streams) > self.size:
                self._streams.popitem(last=False)
            return stream


@contextlib.contextmanager
def torch_threads(count: int):
    """Torch's intra-op threads for the calling thread (OpenMP keeps the count per thread), restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def live_settings(model_name: str, show_cam: bool, alpha: float) -> str:
    """The controls' values as the Live webcam component carries them to the browser (JSON)."""
    return json.dumps({"model": model_name, "grad_cam": bool(show_cam), "alpha": float(alpha)})


def live_frame(registry: ModelRegistry, streams: LiveStreams, payload) -> dict:
    """One frame of the browser's live loop (``live.js``), ``{"stream", "seq", "image": JPEG data URL,
    "model", "grad_cam", "alpha"}`` -> ``{"stream", "seq", "image"}`` with the annotated frame; no
    ``image`` for a frame overtaken by a newer one; ``{"error"}`` for anything that is not a frame.
    Analysis goes through ``classify_stream``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        return {"error": "expected a frame: {stream, seq, image, model, grad_cam, alpha}"}
    header, _, data = payload["image"].partition(",")
    if header not in ("data:image/jpeg;base64", "data:image/png;base64") or len(data) > LIVE_MAX_FRAME_CHARS:
        return {"error": f"a frame is a JPEG or PNG data URL of at most {LIVE_MAX_FRAME_CHARS:,} characters"}
    model_name = payload.get("model")
    if model_name not in registry.names():
        return {"error": f"unknown model {model_name!r}"}
    try:
        alpha = min(max(float(payload.get("alpha", 0.45)), 0.0), 1.0)
        frame = to_rgb_frame(base64.b64decode(data, validate=True))
    except Exception as exc:  # binascii.Error, InputError, a non-number
        return {"error": f"the frame could not be read ({exc})"}
    key, seq = str(payload.get("stream", "")), payload.get("seq")
    seq = seq if isinstance(seq, int) else 0
    stream = streams.get(key)
    with streams.analysis, torch_threads(LIVE_THREADS):
        if seq and seq <= stream.newest:
            return {"stream": key, "seq": seq}
        stream.newest = seq
        annotated, stream.tracker = classify_stream(registry, frame, model_name, bool(payload.get("grad_cam")),
                                                    alpha, stream.tracker)
    bgr = cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR)
    jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, LIVE_JPEG_QUALITY])[1]
    return {"stream": key, "seq": seq, "image": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")}


def build(registry: ModelRegistry, model, show_cam, alpha) -> None:
    """The Live webcam sub-tab's contents; ``model``, ``show_cam`` and ``alpha`` are the Classify tab's controls."""
    gr.Markdown("Streams webcam frames through detection, classification and Grad-CAM on this machine. "
                "The controls above apply while it runs.")
    streams = LiveStreams()

    def frame_handler(payload):
        return live_frame(registry, streams, payload)
    frame_handler.__name__ = "live_frame"  # what live.js calls: server.live_frame(...)
    # the component's value carries the controls' values to the browser; its page does not show it
    live_view = gr.HTML(live_settings(model.value, show_cam.value, alpha.value), html_template=LIVE_HTML,
                        js_on_load=LIVE_JS, server_functions=[frame_handler], elem_id="live-view")
    gr.on([model.change, show_cam.change, alpha.change], live_settings, [model, show_cam, alpha], live_view,
          queue=False, show_progress="hidden", api_visibility="private")
