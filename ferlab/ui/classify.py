"""Classify tab: photos, webcam snapshots, a live webcam stream and video files."""
from __future__ import annotations

import functools

import cv2
import gradio as gr
import numpy as np
from matplotlib.figure import Figure

from ..explain import explain, region_words
from ..explain.core import overlay_heatmap
from ..faces import crop, draw_box, find_faces, to_rgb_frame
from ..labels import EMOTIONS
from .common import ModelRegistry, OutputImage, SafeImage, gpu, probs_dict, require_image, scratch_dir, user_errors

MAX_VIDEO_FRAMES = 300   # frames analysed per video; longer videos are sampled evenly
MAX_VIDEO_SECONDS = 600


def _analyse(model, frame: np.ndarray, show_cam: bool, alpha: float):
    """Detect, classify and (optionally) explain every face; returns the annotated frame and results."""
    boxes, found = find_faces(frame)
    faces = [crop(frame, b) for b in boxes]
    if show_cam:
        explanations = explain(model, faces, "gradcam")
        probs = np.stack([e.probabilities for e in explanations])
    else:
        explanations, probs = None, model.predict(faces)
    annotated = frame.copy()
    for i, box in enumerate(boxes):
        if explanations is not None:
            region = annotated[box.y:box.y + box.h, box.x:box.x + box.w]
            region[:] = overlay_heatmap(region, explanations[i].heatmap, alpha)
        k = int(probs[i].argmax())
        draw_box(annotated, box, f"{EMOTIONS[k]} {probs[i][k]:.0%}" if found else f"(no face) {EMOTIONS[k]}")
    return annotated, probs, explanations, found, len(boxes)


def describe(probs: np.ndarray, explanation, found: bool, n_faces: int) -> str:
    """One plain sentence for a non-technical audience."""
    k = int(np.argmax(probs))
    text = f"Looks **{EMOTIONS[k]}** ({probs[k]:.0%})."
    if explanation is not None and explanation.heatmap.max() > 0:
        text += f" The model looked mostly at {region_words(explanation.heatmap)}."
    elif explanation is not None:
        text += " Grad-CAM found no positive evidence for it at the model's last feature layer."
    if not found:
        text += " No face was found, so the centre of the picture was classified."
    elif n_faces > 1:
        text += f" {n_faces} faces found; the bars show the largest."
    return text


@user_errors
def classify_image(registry: ModelRegistry, image, model_name: str, show_cam: bool = True, alpha: float = 0.45):
    """Upload or snapshot -> (annotated image, probabilities, sentence)."""
    frame = require_image(image)
    model = registry.get(model_name)
    annotated, probs, explanations, found, n = _analyse(model, frame, show_cam, alpha)
    return annotated, probs_dict(probs[0]), describe(probs[0], explanations[0] if explanations else None, found, n)


def classify_stream(registry: ModelRegistry, frame, model_name: str, show_cam: bool = True, alpha: float = 0.45):
    """One live webcam frame -> annotated frame.  Never raises: a bad frame is passed through."""
    if frame is None:
        return None
    try:
        annotated, *_ = _analyse(registry.get(model_name), to_rgb_frame(frame), show_cam, alpha)
        return annotated
    except Exception:
        return frame


@user_errors
def classify_video(registry: ModelRegistry, video_path, model_name: str, show_cam: bool = True, alpha: float = 0.45,
                   max_frames: int = MAX_VIDEO_FRAMES, progress=gr.Progress()):
    """Video file -> (annotated WebM, emotion-over-time plot, note)."""
    if not video_path:
        raise gr.Error("Upload a video first.")
    model = registry.get(model_name)
    cap = cv2.VideoCapture(str(video_path))
    try:
        if not cap.isOpened():
            raise gr.Error("This file could not be opened as a video.")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        fps = fps if 1 <= fps <= 240 else 25.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        limit = int(min(total if total > 0 else fps * MAX_VIDEO_SECONDS, fps * MAX_VIDEO_SECONDS))
        step = max(1, int(np.ceil(limit / max_frames))) if limit > 0 else 1
        out_path = scratch_dir("video") / "annotated.webm"
        writer, times, series, index, found_any = None, [], [], 0, False
        while index < limit or limit <= 0:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % step == 0:
                frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                annotated, probs, _, found, _ = _analyse(model, frame, show_cam, alpha)
                found_any |= found
                if writer is None:
                    h, w = annotated.shape[:2]
                    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"VP80"), fps / step, (w, h))
                writer.write(cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
                times.append(index / fps)
                series.append(probs[0])
                progress(min(1.0, index / max(limit, 1)), desc="analysing frames")
            index += 1
    finally:
        cap.release()
    if writer is None:
        raise gr.Error("The video has no decodable frames.")
    writer.release()
    note = f"Analysed {len(times)} frames" + (f" (one frame in {step})" if step > 1 else "")
    if total > limit > 0:
        note += f"; only the first {limit / fps:.0f} s of {total / fps:.0f} s were read (limit {MAX_VIDEO_SECONDS} s)"
    if not found_any:
        note += "; no face was found, the centre of each frame was classified"
    return str(out_path), emotion_plot(np.array(times), np.stack(series)), note + "."


def emotion_plot(times: np.ndarray, probs: np.ndarray):
    fig = Figure(figsize=(8, 3.2))  # not pyplot: nothing keeps the figure alive after use
    ax = fig.subplots()
    for k, name in enumerate(EMOTIONS):
        ax.plot(times, probs[:, k], label=name, lw=1.5)
    ax.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1), title="emotion over time (largest face)")
    ax.legend(ncol=7, fontsize=7, loc="upper center")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def example_images(count_per_class: int = 1) -> list[str]:
    """A few PrivateTest images per emotion when the dataset is reachable (written to a temp folder)."""
    try:
        from ..data import load_fer2013, to_arrays
        images, labels = to_arrays(load_fer2013("test"))
    except Exception:
        return []
    folder = scratch_dir("examples", max_age_s=7 * 24 * 3600)
    paths = []
    for k, name in enumerate(EMOTIONS):
        for j, i in enumerate(np.flatnonzero(labels == k)[:count_per_class]):
            path = folder / f"{name}_{j}.png"
            cv2.imwrite(str(path), cv2.resize(images[i], (144, 144), interpolation=cv2.INTER_CUBIC))
            paths.append(str(path))
    return paths


def build(registry: ModelRegistry, models: list[str]):
    default = registry.default()
    with gr.Tab("Classify"):
        gr.Markdown("Find faces, classify each one, and see where the model looked (Grad-CAM).")
        with gr.Row():
            model = gr.Dropdown(models, value=default, label="model")
            show_cam = gr.Checkbox(value=True, label="Grad-CAM overlay")
            alpha = gr.Slider(0, 1, value=0.45, step=0.05, label="overlay opacity")
        with gr.Tab("Photo / snapshot"):
            with gr.Row():
                image = SafeImage(label="photo", elem_id="classify-input")
                annotated = OutputImage(label="faces", elem_id="classify-output")
            with gr.Row():
                bars = gr.Label(num_top_classes=7, label="probabilities", elem_id="classify-label")
                sentence = gr.Markdown(elem_id="classify-sentence")
            button = gr.Button("Classify", variant="primary", elem_id="classify-button")
            handler = gpu(functools.partial(classify_image, registry))
            button.click(handler, [image, model, show_cam, alpha], [annotated, bars, sentence], api_name="classify")
            image.upload(handler, [image, model, show_cam, alpha], [annotated, bars, sentence])
            examples = example_images()
            if examples:
                gr.Examples(examples, inputs=image, label="PrivateTest examples, one per emotion")
        with gr.Tab("Live webcam"):
            gr.Markdown("Streams webcam frames through detection, classification and Grad-CAM on this machine.")
            with gr.Row():
                cam_in = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="webcam")
                cam_out = OutputImage(label="live")
            cam_in.stream(functools.partial(classify_stream, registry), [cam_in, model, show_cam, alpha], cam_out,
                          stream_every=0.05, concurrency_limit=4, time_limit=600, api_visibility="private")
        with gr.Tab("Video"):
            with gr.Row():
                video = gr.Video(label="video file", sources=["upload"])
                video_out = gr.Video(label="annotated")
            plot = gr.Plot(label="emotion over time")
            note = gr.Markdown()
            gr.Button("Analyse video", variant="primary").click(
                gpu(functools.partial(classify_video, registry)), [video, model, show_cam, alpha],
                [video_out, plot, note], api_name="classify_video", concurrency_limit=1)
