"""Classify tab: photos, webcam snapshots, a live webcam stream and video files."""
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
from matplotlib.figure import Figure

from ..annotate import draw_faces
from ..explain import region_words
from ..faces import to_rgb_frame
from ..labels import EMOTIONS
from ..pipeline import Faces, classify_faces, find_faces, relocate
from ..tracking import SMOOTHING_SECONDS, FaceTracker, label_flips
from .common import (ModelRegistry, OutputImage, SafeImage, gpu, log, probs_dict, require_image, scratch_dir,
                     user_errors)

MAX_VIDEO_FRAMES = 300   # frames analysed per video; longer videos are sampled evenly
MAX_VIDEO_SECONDS = 600


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


def live_faces(frame: np.ndarray, tracker: FaceTracker) -> Faces:
    """A live frame's faces: searched every ``LIVE_SEARCH_EVERY`` frames, the last search's
    locations reused in between (the search is most of a frame's cost; faces move little in 50 ms)."""
    if (tracker.locations is not None and tracker.frame_shape == frame.shape
            and tracker.frames_since_search < LIVE_SEARCH_EVERY - 1):
        tracker.frames_since_search += 1
        return relocate(frame, tracker.locations)
    faces = find_faces(frame, min_face=LIVE_MIN_FACE, angles=LIVE_ANGLES)
    tracker.locations, tracker.frames_since_search, tracker.frame_shape = faces.locations, 0, frame.shape
    return faces


def _analyse(model, frame: np.ndarray, show_cam: bool, alpha: float, fallback: bool = False,
             tracker: FaceTracker | None = None, t: float = 0.0, min_face: int | None = None, live: bool = False):
    """Every face through ``ferlab.pipeline`` -> (annotated frame, face results)."""
    located = live_faces(frame, tracker) if live else find_faces(frame, fallback=fallback, min_face=min_face)
    faces = classify_faces(model, located, "gradcam" if show_cam else None)
    if tracker is not None:
        tracker.update(faces, t)
    labels = [face_label(f, i, len(faces)) for i, f in enumerate(faces)]
    return draw_faces(frame, faces, labels, alpha, show_evidence=show_cam), faces


def face_label(face, index: int, count: int) -> str:
    text = f"{face.emotion} {face.confidence:.0%}" if face.detected else f"no face found: centre {face.emotion}"
    return f"{index + 1}: {text}" if count > 1 else text


NO_FACE = ("**No face was found.** The detector looks for frontal faces at least 24 pixels wide: try a closer, "
           "well-lit, front-on photo, or tick *classify the centre when no face is found*.")


def describe(faces: list, show_cam: bool) -> str:
    """Plain sentences for a non-technical audience: one per face, largest first."""
    if not faces:
        return NO_FACE
    lines = []
    for i, face in enumerate(faces):
        who = (f"Face {i + 1}" + (" (largest)" if i == 0 else "") + ": the") if len(faces) > 1 else "The"
        text = f"{who} model reads **{face.emotion}** ({face.confidence:.0%})."
        if not face.detected:
            text = ("No face was found, so the centre of the picture was classified: the model reads "
                    f"**{face.emotion}** ({face.confidence:.0%}). Treat this with care: it may not be a face at all.")
        if show_cam and face.explanation is not None:
            if face.heatmap.max() > 0:
                text += f" It looked mostly at {region_words(face.heatmap)}"
                text += f" (Grad-CAM at `{face.explanation.layer}`)." if face.note else "."
            if face.note:
                text += " " + face.note
        lines.append(text)
    return "\n\n".join(lines)


@user_errors
def classify_image(registry: ModelRegistry, image, model_name: str, show_cam: bool = True, alpha: float = 0.45,
                   fallback: bool = False):
    """Upload or snapshot -> (annotated image, probabilities of the largest face, sentences,
    face picker update, every face's probabilities): the bars show one face at a time, face 1 first."""
    frame = require_image(image)
    model = registry.get(model_name)
    annotated, faces = _analyse(model, frame, show_cam, alpha, fallback)
    per_face = [probs_dict(f.shown_probabilities) for f in faces]
    picker = gr.update(choices=[str(i + 1) for i in range(len(faces))], value="1" if faces else None,
                       visible=len(faces) > 1)
    return annotated, per_face[0] if per_face else None, describe(faces, show_cam), picker, per_face


def face_bars(choice: str | None, per_face: list):
    """The picked face's probabilities (the bars follow the face picker)."""
    if not per_face:
        return None
    index = int(choice) - 1 if choice and str(choice).isdigit() else 0
    return per_face[min(max(index, 0), len(per_face) - 1)]


def classify_stream(registry: ModelRegistry, frame, model_name: str, show_cam: bool = True, alpha: float = 0.45,
                    tracker: FaceTracker | None = None):
    """One live webcam frame -> (annotated frame, tracker).  Faces are followed across frames and their
    probabilities smoothed (``ferlab.tracking``).  Never raises: a bad frame is passed through."""
    tracker = tracker if isinstance(tracker, FaceTracker) else FaceTracker()
    if frame is None:
        return None, tracker
    try:
        annotated, _ = _analyse(registry.get(model_name), to_rgb_frame(frame), show_cam, alpha, tracker=tracker,
                                t=time.monotonic(), live=True)
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


@user_errors
def classify_video(registry: ModelRegistry, video_path, model_name: str, show_cam: bool = True, alpha: float = 0.45,
                   max_frames: int = MAX_VIDEO_FRAMES, progress=gr.Progress()):
    """Video file -> (annotated WebM, emotion-over-time plot, note).  Faces are tracked and each
    face's label is smoothed over ``SMOOTHING_SECONDS``."""
    if not video_path:
        raise gr.Error("Upload a video first.")
    model = registry.get(model_name)
    cap = cv2.VideoCapture(str(video_path))
    tracker = FaceTracker()
    try:
        if not cap.isOpened():
            raise gr.Error("This file could not be opened as a video.")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        fps = fps if 1 <= fps <= 240 else 25.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        limit = int(min(total if total > 0 else fps * MAX_VIDEO_SECONDS, fps * MAX_VIDEO_SECONDS))
        step = max(1, int(np.ceil(limit / max_frames))) if limit > 0 else 1
        out_path = scratch_dir("video") / "annotated.webm"
        writer, analysed, index, tracks = None, 0, 0, {}
        while index < limit or limit <= 0:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % step == 0:
                frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                t = index / fps
                annotated, faces = _analyse(model, frame, show_cam, alpha, tracker=tracker, t=t)
                for face in faces:
                    tracks.setdefault(face.track_id, []).append((t, face.probabilities, face.smoothed))
                if writer is None:
                    h, w = annotated.shape[:2]
                    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"VP80"), fps / step, (w, h))
                writer.write(cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
                analysed += 1
                progress(min(1.0, index / max(limit, 1)), desc="analysing frames")
            index += 1
    finally:
        cap.release()
    if writer is None:
        raise gr.Error("The video has no decodable frames.")
    writer.release()
    note = f"Analysed {analysed} frames" + (f" (one frame in {step})" if step > 1 else "")
    if total > limit > 0:
        note += f"; only the first {limit / fps:.0f} s of {total / fps:.0f} s were read (limit {MAX_VIDEO_SECONDS} s)"
    if not tracks:
        note += "; no face was found in any frame"
        return str(out_path), None, note + "."
    main = max(tracks, key=lambda k: len(tracks[k]))  # the face seen in most frames
    series = tracks[main]
    times = np.array([s[0] for s in series])
    raw, smooth = np.stack([s[1] for s in series]), np.stack([s[2] for s in series])
    note += (f"; {len(tracks)} face track{'s' * (len(tracks) > 1)}, the plot follows the one seen in {len(series)} "
             f"frames. Labels are the mean of each face's last {SMOOTHING_SECONDS:g} s: the top class changes "
             f"{label_flips(smooth)} times smoothed, {label_flips(raw)} times frame by frame")
    return str(out_path), emotion_plot(times, smooth, raw), note + "."


def emotion_plot(times: np.ndarray, smoothed: np.ndarray, raw: np.ndarray | None = None):
    """Each emotion's smoothed probability over time, the frame-by-frame value faint behind it."""
    fig = Figure(figsize=(8, 3.2))  # not pyplot: nothing keeps the figure alive after use
    ax = fig.subplots()
    colors = [f"C{k}" for k in range(len(EMOTIONS))]
    for k, name in enumerate(EMOTIONS):
        if raw is not None:
            ax.plot(times, raw[:, k], color=colors[k], lw=0.8, alpha=0.25)
        ax.plot(times, smoothed[:, k], color=colors[k], label=name, lw=1.8)
    ax.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1),
           title=f"emotion over time (mean of the last {SMOOTHING_SECONDS:g} s; faint: frame by frame)")
    ax.legend(ncol=7, fontsize=7, loc="upper center")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# The Live webcam tab is a small page of its own: the browser keeps two frames in flight to the
# server function ``live_frame`` instead of one per tick of Gradio's streaming events, which held
# the rate near 13-16 FPS on 2 cores (docs/experiments/live_stream.md).
LIVE_JS = (Path(__file__).with_name("live.js")).read_text(encoding="utf-8")
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

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EXAMPLES = ("astronaut.jpg", "chelsea.jpg")  # one face; no face (licences: assets/LICENSES.md)


def example_images() -> list[str]:
    """The licence-clear photos shipped in ``ferlab/assets``: nothing is read from FER2013 or the
    network while the UI is built."""
    return [str(ASSETS / name) for name in EXAMPLES if (ASSETS / name).is_file()]


def build(registry: ModelRegistry, models: list[str]):
    default = registry.default()
    with gr.Tab("Classify"):
        gr.Markdown("Find faces, classify each one, and see where the model looked (Grad-CAM).")
        with gr.Row():
            model = gr.Dropdown(models, value=default, label="model")
            show_cam = gr.Checkbox(value=True, label="Grad-CAM overlay")
            fallback = gr.Checkbox(value=False, label="classify the centre when no face is found")
            alpha = gr.Slider(0, 1, value=0.45, step=0.05, label="overlay opacity")
        with gr.Tab("Photo / snapshot"):
            with gr.Row():
                image = SafeImage(label="photo", elem_id="classify-input")
                annotated = OutputImage(label="faces", elem_id="classify-output")
            with gr.Row():
                with gr.Column():
                    picker = gr.Radio([], label="probabilities of face", visible=False, elem_id="classify-face")
                    bars = gr.Label(num_top_classes=7, label="probabilities", elem_id="classify-label")
                sentence = gr.Markdown(elem_id="classify-sentence")
            per_face = gr.State([])
            button = gr.Button("Classify", variant="primary", elem_id="classify-button")
            handler = gpu(functools.partial(classify_image, registry))
            inputs = [image, model, show_cam, alpha, fallback]
            outputs = [annotated, bars, sentence, picker, per_face]
            button.click(handler, inputs, outputs, api_name="classify")
            image.upload(handler, inputs, outputs)
            picker.change(face_bars, [picker, per_face], bars)
            examples = example_images()
            if examples:
                gr.Examples(examples, inputs=image, label="examples: NASA's public-domain astronaut portrait, "
                                                          "and a cat (no face: what does the lab say?)")
        with gr.Tab("Live webcam"):
            gr.Markdown("Streams webcam frames through detection, classification and Grad-CAM on this machine. "
                        "The controls above apply while it runs.")
            streams = LiveStreams()

            def frame_handler(payload):
                return live_frame(registry, streams, payload)
            frame_handler.__name__ = "live_frame"  # what live.js calls: server.live_frame(...)
            # the component's value carries the controls' values to the browser; its page does not show it
            live_view = gr.HTML(live_settings(default, True, 0.45), html_template=LIVE_HTML,
                                js_on_load=LIVE_JS, server_functions=[frame_handler], elem_id="live-view")
            gr.on([model.change, show_cam.change, alpha.change], live_settings, [model, show_cam, alpha], live_view,
                  queue=False, show_progress="hidden", api_visibility="private")
        with gr.Tab("Video"):
            with gr.Row():
                video = gr.Video(label="video file", sources=["upload"])
                video_out = gr.Video(label="annotated")
            plot = gr.Plot(label="emotion over time")
            note = gr.Markdown()
            gr.Button("Analyse video", variant="primary").click(
                gpu(functools.partial(classify_video, registry)), [video, model, show_cam, alpha],
                [video_out, plot, note], api_name="classify_video", concurrency_limit=1)
