"""Shared pieces of the Gradio lab: the model registry, error handling, faces, small renderers.

Handlers in the tab modules are plain functions (tests call them directly); a handler that
fails because of its input raises ``gr.Error`` with a readable message, never a traceback.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import cv2
import gradio as gr
import numpy as np

from ..checkpoints import (CheckpointError, FERClassifier, checkpoints_dir, list_models, load_model, metrics_key,
                           read_card, trained_labels)
from ..data import DataSourceError
from ..explain import ExplainError
from ..explain.core import COLORMAPS, color_heatmap
from ..faces import to_rgb_frame
from ..labels import EMOTIONS
from ..pipeline import Faces, find_faces
from ..preprocess import InputError
from ..zoo import default_model

log = logging.getLogger("ferlab.ui")
DISPLAY = 240  # side of heatmap / face images in the UI
COLORMAP_NAMES = list(COLORMAPS)


class ModelRegistry:
    """Checkpoints from ``checkpoints/`` (or ``FERLAB_CHECKPOINTS``), each loaded once, lazily."""

    def __init__(self, folder: str | Path | None = None, device=None):
        self.folder = Path(folder) if folder else checkpoints_dir()
        self.device = device
        self._models: dict[str, FERClassifier] = {}
        self._lock = threading.Lock()

    def _scan(self) -> tuple[dict[str, dict], dict[str, str]]:
        """Each checkpoint's card, read once: (readable cards by name, unreadable ones: name -> why)."""
        cards, broken = {}, {}
        for name in list_models(self.folder):
            try:
                cards[name] = read_card(self.folder / name)
            except CheckpointError as exc:
                broken[name] = str(exc)
        return cards, broken

    def cards(self, labels: str | None = None) -> dict[str, dict]:
        """The readable cards by checkpoint name (see ``broken``); with ``labels`` only those trained on
        that label set (``fer2013`` or ``ferplus``)."""
        return {name: card for name, card in self._scan()[0].items()
                if labels is None or trained_labels(card) == labels}

    def names(self, labels: str | None = None) -> list[str]:
        return list(self.cards(labels))

    def broken(self) -> dict[str, str]:
        """Checkpoints left out because their card cannot be read: name -> why (shown at start-up)."""
        return self._scan()[1]

    def default(self) -> str | None:
        return default_model(self.names())

    def get(self, name: str | None) -> FERClassifier:
        if not name:
            raise gr.Error(self.missing_message())
        with self._lock:
            if name not in self._models:
                if name not in self.names():  # only checkpoints in our folder, never a path from a request
                    raise gr.Error(f"no checkpoint {name!r}; available: {', '.join(self.names()) or 'none'}")
                try:
                    self._models[name] = load_model(self.folder / name, device=self.device)
                except CheckpointError as exc:
                    raise gr.Error(str(exc)) from exc
            return self._models[name]

    def card(self, name: str) -> dict:
        """A checkpoint's card without loading its weights (for start-up, the layer dropdowns and the
        Models tab): only that card is read; the folder is scanned for the message when it is missing."""
        if name in list_models(self.folder):
            try:
                return read_card(self.folder / name)
            except CheckpointError:
                pass  # left out, as in names(); broken() says why
        raise gr.Error(f"no checkpoint {name!r}; available: {', '.join(self.names()) or 'none'}")

    def missing_message(self) -> str:
        return (f"No trained checkpoints found in {self.folder}. Train one with "
                "`ferlab-train --config train/configs/resnet_se.yaml` and copy the output folder there, "
                "or set FERLAB_CHECKPOINTS to a folder of checkpoints.")


class _PathImage(gr.Image):
    is_template = True  # Gradio renders it with the front end's own image component

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except Exception as exc:
            from PIL import Image
            if isinstance(exc, Image.DecompressionBombError):
                raise gr.Error(f"image refused: larger than the {Image.MAX_IMAGE_PIXELS:,}-pixel limit") from exc
            raise gr.Error(f"not a readable image ({type(exc).__name__}: {exc})") from exc


def SafeImage(label: str, elem_id: str | None = None) -> gr.Image:  # noqa: N802 (used like a component)
    """An image input that hands handlers a file path (ferlab checks the size and decodes it
    itself, refusing decompression bombs before decoding) and turns unreadable uploads into a
    readable message."""
    return _PathImage(sources=["upload", "webcam", "clipboard"], type="filepath", image_mode=None, label=label,
                      elem_id=elem_id)


def publish_image(image, cache_dir: str, fmt: str = "webp") -> str:
    """Write an output image into Gradio's cache and return its path, never rewriting a file a
    browser may be downloading.  Gradio's own saver (``save_pil_to_cache``) names files by content
    and rewrites them in place, so two users who get the same picture at the same moment can
    truncate each other's download ("peer closed connection", seen in benchmarks/load.py).  Here
    an existing file is left alone and a new one appears by atomic rename."""
    from gradio.processing_utils import _convert, encode_pil_to_bytes, hash_bytes
    from PIL import Image

    pil = image if isinstance(image, Image.Image) else Image.fromarray(_convert(image, np.uint8, force_copy=False))
    data = encode_pil_to_bytes(pil, fmt)
    folder = Path(cache_dir) / hash_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"image.{fmt}"
    if path.exists():
        try:
            os.utime(path)  # Gradio's delete_cache ages files by time; this copy was just handed out again
        except OSError:
            pass
        return str(path.resolve())
    fd, staging = tempfile.mkstemp(dir=folder, prefix=".image.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path.resolve())


def _is_picture(value) -> bool:
    from PIL import Image
    return isinstance(value, (np.ndarray, Image.Image))


class OutputImage(gr.Image):
    """``gr.Image`` for outputs, saved through :func:`publish_image`."""
    is_template = True

    def postprocess(self, value):
        if _is_picture(value):
            value = publish_image(value, self.GRADIO_CACHE, self.format)
        return super().postprocess(value)


class OutputGallery(gr.Gallery):
    """``gr.Gallery`` whose images are saved through :func:`publish_image`.  Pass
    ``object_fit="contain"`` for overlays (the default cover crop cuts mouths and chins off);
    Gradio reads a component's options from its constructor, so this class adds none."""
    is_template = True

    def postprocess(self, value):
        if value:
            fmt = self.format or "webp"
            items = []
            for item in value:
                if isinstance(item, (tuple, list)) and item and _is_picture(item[0]):
                    item = (publish_image(item[0], self.GRADIO_CACHE, fmt), *item[1:])
                elif _is_picture(item):
                    item = publish_image(item, self.GRADIO_CACHE, fmt)
                items.append(item)
            value = items
        return super().postprocess(value)


def user_errors(fn):
    """Turn every failure into a readable ``gr.Error``; the app keeps running."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (InputError, ExplainError, CheckpointError, DataSourceError) as exc:
            raise gr.Error(str(exc)) from exc
        except MemoryError as exc:
            raise gr.Error("out of memory on this input; try a smaller image or video") from exc
        except Exception as exc:  # unexpected: log the traceback, show one line
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). The app is still running.") from exc
    return wrapper


def gpu(fn):
    """``spaces.GPU`` on Hugging Face ZeroGPU Spaces; a no-op elsewhere."""
    try:
        import spaces  # type: ignore
    except ImportError:
        return fn
    return spaces.GPU(fn)


def require_image(image):
    if image is None:
        raise gr.Error("Upload an image first (or take a webcam snapshot).")
    return to_rgb_frame(image)


def largest_face_location(image) -> Faces:
    """The picture with its largest face located (the centre square when none is found)."""
    return find_faces(require_image(image), max_faces=1, fallback=True)


def largest_face(image, size: int = 48, display: int = DISPLAY) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(crop, view, found)``: the largest face as the model sees it (grayscale ``size`` x ``size``,
    through ``ferlab.pipeline``), the same frame in colour at ``display`` pixels for the screen, and
    whether a face was found (else the centre square stands in)."""
    faces = largest_face_location(image)
    location = faces.locations[0]
    return faces.crop(location, size)[0], faces.view(location, display), faces.found


def probs_dict(probs) -> dict[str, float]:
    return {name: float(p) for name, p in zip(EMOTIONS, probs)}


def colorize(heatmap: np.ndarray, colormap: str = "jet", size: int = DISPLAY) -> np.ndarray:
    return color_heatmap(heatmap, size, size, colormap)


def scratch_dir(kind: str, max_age_s: float = 3600) -> Path:
    """A fresh folder under the system temp dir for one output; folders of the same kind older
    than ``max_age_s`` are removed, so a long-running app does not fill the disk."""
    root = Path(tempfile.gettempdir()) / f"ferlab-{kind}"
    root.mkdir(exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if now - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(dir=root))


def enlarge(rgb: np.ndarray, size: int = DISPLAY) -> np.ndarray:
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)


def card_metric(card: dict, split: str = "test", key: str = "accuracy", labels: str = "fer2013",
                tta: bool = False) -> float | None:
    """A score from the card against ``labels`` (FER2013 by default, so models trained on either
    label set compare), or None when the card does not have it."""
    value = card.get("metrics", {}).get(metrics_key(card, split, labels, tta), {}).get(key)
    return float(value) if value is not None else None


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
