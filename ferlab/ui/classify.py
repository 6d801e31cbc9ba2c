"""Classify tab: photos, webcam snapshots, a live webcam stream and video files."""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
from matplotlib.figure import Figure

from ..annotate import annotate_faces
from ..explain import region_words
from ..labels import EMOTIONS
from ..pipeline import find_faces
from ..tracking import SMOOTHING_SECONDS, FaceTracker, label_flips
from . import live
from .common import (ModelRegistry, OutputImage, SafeImage, gpu, probs_dict, require_image, scratch_dir,
                     user_errors)

MAX_VIDEO_FRAMES = 300   # frames analysed per video; longer videos are sampled evenly
MAX_VIDEO_SECONDS = 600


NO_FACE = ("**No face was found.** The detector looks for frontal faces at least 24 pixels wide: try a closer, "
           "well-lit, front-on photo, or tick *classify the centre when no face is found*.")


def describe(faces: list, show_cam: bool, skipped: int = 0) -> str:
    """Plain sentences for a non-technical audience: one per face, largest first; ``skipped``: the
    smaller faces found beyond ``MAX_FACES``, said rather than silently dropped."""
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
    if skipped:
        lines.append(f"{skipped} smaller face{'s were' if skipped > 1 else ' was'} found but not read: the lab reads "
                     f"the {len(faces)} largest faces of a picture.")
    return "\n\n".join(lines)


@user_errors
def classify_image(registry: ModelRegistry, image, model_name: str, show_cam: bool = True, alpha: float = 0.45,
                   fallback: bool = False):
    """Upload or snapshot -> (annotated image, probabilities of the largest face, sentences,
    face picker update, every face's probabilities): the bars show one face at a time, face 1 first."""
    frame = require_image(image)
    model = registry.get(model_name)
    located = find_faces(frame, fallback=fallback)
    annotated, faces = annotate_faces(model, frame, located, show_cam, alpha)
    per_face = [probs_dict(f.shown_probabilities) for f in faces]
    picker = gr.update(choices=[str(i + 1) for i in range(len(faces))], value="1" if faces else None,
                       visible=len(faces) > 1)
    return annotated, per_face[0] if per_face else None, describe(faces, show_cam, located.skipped), picker, per_face


def face_bars(choice: str | None, per_face: list):
    """The picked face's probabilities (the bars follow the face picker)."""
    if not per_face:
        return None
    index = int(choice) - 1 if choice and str(choice).isdigit() else 0
    return per_face[min(max(index, 0), len(per_face) - 1)]


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
                annotated, faces = annotate_faces(model, frame, find_faces(frame), show_cam, alpha, tracker, t)
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
            live.build(registry, model, show_cam, alpha)
        with gr.Tab("Video"):
            with gr.Row():
                video = gr.Video(label="video file", sources=["upload"])
                video_out = gr.Video(label="annotated")
            plot = gr.Plot(label="emotion over time")
            note = gr.Markdown()
            gr.Button("Analyse video", variant="primary").click(
                gpu(functools.partial(classify_video, registry)), [video, model, show_cam, alpha],
                [video_out, plot, note], api_name="classify_video", concurrency_limit=1)
