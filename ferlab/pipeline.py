"""One path from a photo to a verdict: image -> faces -> aligned crops -> probabilities and evidence.

    from ferlab import analyze
    for face in analyze("group.jpg", explain="gradcam"):
        print(face.box, face.emotion, face.confidence)   # face.heatmap: where Grad-CAM found evidence

The app (photo, snapshot, live stream, video, Compare, Explain, Layers), ``FERClassifier.predict``
and the folder-scoring CLI all go through ``find_faces`` and ``classify_faces`` below, so one photo
gets one answer whichever door it comes in by.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from .explain.core import Explanation, explain_crops
from .evaluation import predict_arrays
from .faces import (Box, FaceDetector, Framing, center_box, default_detector, eye_angle, landmark_transform,
                    frame_transform, to_rgb_frame, warp_crop)
from .labels import EMOTIONS
from .preprocess import InputError, as_batch, to_gray_batch, to_gray_uint8
from .zoo import DEFAULT_MODEL

MAX_FACES = 32          # faces analysed per photo, largest first (a class photo; docs/experiments/face_recall.md)
FALLBACK_LAYERS = 2     # earlier layers tried when Grad-CAM finds no evidence at the default one


@dataclass(frozen=True)
class FaceLocation:
    """Where one face is: the detector's box (image pixels), the turn that levels its eyes."""

    box: Box
    angle: float = 0.0                      # degrees; the crop is turned by this to level the eyes
    eyes: tuple | None = None               # ((x, y) left, (x, y) right) in image pixels, when found
    detected: bool = True                   # False: the whole picture's centre square stands in
    framing: Framing | None = None          # where FER2013 puts this detector's box (None: the box is the frame)
    landmarks: tuple | None = None          # five (x, y) points when the detector gives them: the crop follows them


@dataclass
class Faces:
    """A decoded picture and the faces found in it (largest first)."""

    frame: np.ndarray                       # RGB uint8, full resolution
    gray: np.ndarray                        # the same picture in grayscale
    locations: list[FaceLocation]
    skipped: int = 0                        # faces found beyond ``max_faces`` (the smallest): not analysed

    @property
    def found(self) -> bool:
        return any(loc.detected for loc in self.locations)

    def transform(self, location: FaceLocation, size: int) -> np.ndarray:
        """The 2x3 map from the pixels of a ``size`` x ``size`` crop of ``location`` to the picture's.
        Detected faces are framed as FER2013 frames them; the centre-square stand-in is the square."""
        if location.landmarks is not None:
            return landmark_transform(location.landmarks, size)
        return frame_transform(location.box, size, location.angle, location.framing)

    def crop(self, location: FaceLocation, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(crop, to_image)``: the grayscale crop the model sees and its map to the picture.  The
        centre-square stand-in is decoded as training decodes images (``to_gray_uint8``)."""
        to_image = self.transform(location, size)
        if not location.detected:
            return to_gray_uint8(self.gray, size), to_image
        return warp_crop(self.gray, to_image, size), to_image

    def view(self, location: FaceLocation, size: int) -> np.ndarray:
        """The same frame as ``crop``, in colour at ``size`` pixels: for screens, not for the model."""
        return warp_crop(self.frame, self.transform(location, size), size)


@dataclass
class FaceResult:
    """One face's verdict.  ``crop`` is exactly what the model saw; ``heatmap`` is in its pixels."""

    box: Box                                # the face in the original picture's pixels (x, y, w, h)
    crop: np.ndarray                        # aligned grayscale crop, the model's input size
    probabilities: np.ndarray               # (7,), sums to 1
    to_image: np.ndarray                    # 2x3 affine map from crop pixels to picture pixels
    detected: bool = True
    angle: float = 0.0
    eyes: tuple | None = None
    explanation: Explanation | None = None
    note: str = ""                          # what the evidence shows when it is not the plain answer
    track_id: int | None = None             # set by ferlab.tracking.FaceTracker (video, live)
    smoothed: np.ndarray | None = field(default=None, repr=False)  # probabilities averaged over the track

    @property
    def shown_probabilities(self) -> np.ndarray:
        """What a screen should show: the track's smoothed probabilities when there are some."""
        return self.smoothed if self.smoothed is not None else self.probabilities

    @property
    def emotion(self) -> str:
        return EMOTIONS[int(np.argmax(self.shown_probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.shown_probabilities))

    @property
    def heatmap(self) -> np.ndarray | None:
        return None if self.explanation is None else self.explanation.heatmap


def find_faces(image, *, detector: FaceDetector | None = None, min_face: int | None = None,
               max_faces: int = MAX_FACES, align: bool = True, detect: bool = True,
               fallback: bool = False, angles: tuple[float, ...] | None = None) -> Faces:
    """Decode ``image`` (path, bytes, PIL, numpy) and locate its faces, largest first.

    ``detect=False``: the picture is already a face crop; its centre square is the face.
    ``fallback=True``: when no face is found, the centre square stands in (``detected`` False).
    ``align``: when both eyes are found (MTCNN's landmarks, or the eye cascade after Haar), turn
    the crop so they are level; with MTCNN the crop follows all five landmarks.  ``min_face``:
    smallest face side searched for, in the picture's pixels (default: the detector's, 24).
    ``angles``: the turns the picture is searched at, in degrees (default: the detector's,
    ``DETECT_ANGLES``, which finds tilted heads; ``(0,)`` searches once, three times faster).
    ``max_faces``: the largest faces kept; ``Faces.skipped`` counts the smaller ones found beyond it.
    """
    frame = to_rgb_frame(image)
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    if not detect:
        return Faces(frame, gray, [FaceLocation(center_box(w, h), detected=False)])
    det = detector or default_detector()
    boxes = det.detect(frame, min_face=min_face, angles=angles)
    locations = []
    for box in boxes[:max_faces]:
        eyes = det.eyes(gray, box) if align else None
        landmarks = box.landmarks if align and eyes is not None else None  # implausible eyes: the box alone
        locations.append(FaceLocation(box, eye_angle(eyes) if eyes else 0.0, eyes, framing=det.framing,
                                      landmarks=landmarks))
    if not locations and fallback:
        locations = [FaceLocation(center_box(w, h), detected=False)]
    return Faces(frame, gray, locations, skipped=max(0, len(boxes) - max_faces))


def relocate(image, locations: list[FaceLocation]) -> Faces:
    """``image`` with faces at the given locations, without searching: a live stream searches every
    other frame and keeps the previous frame's locations in between."""
    frame = to_rgb_frame(image)
    return Faces(frame, cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), list(locations))


def classify_faces(model, faces: Faces, explain: str | None = None, *, layer: str | None = None, target=None,
                   **options) -> list[FaceResult]:
    """Classify (and with ``explain``, explain) every located face in one batch.

    Grad-CAM gives the probabilities and the map from one forward and one backward pass.  When the
    default layer holds no positive evidence for a face's class, the nearest earlier layer that
    does is shown instead and ``note`` says so (``layer`` given: that layer, as asked)."""
    size = int(model.card.get("input_size", 48))
    cut = [faces.crop(loc, size) for loc in faces.locations]
    if not cut:
        return []
    crops = np.stack([c for c, _ in cut])
    explanations: list[Explanation | None] = [None] * len(cut)
    notes = [""] * len(cut)
    if explain:
        explanations = explain_crops(model, crops, explain, layer, target, **options)
        probs = np.stack([e.probabilities for e in explanations])
        if explain == "gradcam" and layer is None:
            notes = _fill_empty_gradcam(model, crops, explanations)
    else:
        probs = predict_arrays(model.module, crops, model.card, model.device)
    return [FaceResult(box=loc.box, crop=crop, probabilities=p, to_image=m, detected=loc.detected, angle=loc.angle,
                       eyes=loc.eyes, explanation=e, note=note)
            for loc, (crop, m), p, e, note in zip(faces.locations, cut, probs, explanations, notes)]


def _fill_empty_gradcam(model, crops: np.ndarray, explanations: list[Explanation]) -> list[str]:
    """Where the default layer's Grad-CAM is empty, the nearest earlier layer with evidence (in place)."""
    notes = [""] * len(explanations)
    layers = list(model.module.explainable_layers)
    empty = [i for i, e in enumerate(explanations) if e.heatmap.max() <= 0]
    if not empty or explanations[0].layer not in layers:
        return notes
    depth = layers.index(explanations[0].layer)
    default = explanations[0].layer
    for i in empty:
        cls = EMOTIONS[explanations[i].target]
        tried = []
        for earlier in reversed(layers[max(0, depth - FALLBACK_LAYERS):depth]):
            tried.append(earlier)
            e = explain_crops(model, crops[i:i + 1], "gradcam", earlier, explanations[i].target)[0]
            if e.heatmap.max() > 0:
                e.probabilities = explanations[i].probabilities  # the same forward pass, to the last bit
                explanations[i] = e
                steps = depth - layers.index(earlier)
                notes[i] = (f"Grad-CAM at `{default}` (the default layer) finds no positive evidence for {cls}: "
                            f"the features there only argue against the other classes. Shown instead: "
                            f"`{earlier}`, {steps} layer{'s' * (steps > 1)} earlier, which does.")
                break
        else:
            where = f"`{default}`" + (f" or the {len(tried)} layers before it" if tried else "")
            notes[i] = (f"Grad-CAM finds no positive evidence for {cls} at {where}, so the face is shown without "
                        "a heatmap. Try the Explain tab's integrated gradients or occlusion, which look at pixels.")
    return notes


_models: dict[str, object] = {}
_models_lock = threading.Lock()


def resolve_model(model):
    """A ``FERClassifier``; a name or path is loaded once and kept; None: ``DEFAULT_MODEL``."""
    if model is None or isinstance(model, str) or hasattr(model, "__fspath__"):
        from .checkpoints import load_model
        key = str(model or DEFAULT_MODEL)
        with _models_lock:
            if key not in _models:
                _models[key] = load_model(key)
            return _models[key]
    if not hasattr(model, "module") or not hasattr(model, "card"):
        raise InputError(f"expected a checkpoint name or a FERClassifier from load_model, got {type(model).__name__}")
    return model


def analyze(image, model=None, explain: str | None = None, *, layer: str | None = None, target=None,
            detector: FaceDetector | None = None, min_face: int | None = None, max_faces: int = MAX_FACES,
            align: bool = True, detect: bool = True, fallback: bool = False, angles: tuple[float, ...] | None = None,
            **options) -> list[FaceResult]:
    """Every face in ``image`` (path, bytes, PIL image, numpy array), largest first, classified.

    ``model``: a ``FERClassifier``, a checkpoint name, or None for ``DEFAULT_MODEL`` (``ferlab_photo``).  ``explain``: an
    explanation method (``"gradcam"``...) to attach a heatmap to each face.  No face found: an empty
    list, unless ``fallback=True`` (the centre square is classified, ``detected`` False).
    ``detect=False``: the image is a face crop already.  See ``find_faces`` for the rest.
    """
    model = resolve_model(model)
    faces = find_faces(image, detector=detector, min_face=min_face, max_faces=max_faces, align=align,
                       detect=detect, fallback=fallback, angles=angles)
    return classify_faces(model, faces, explain, layer=layer, target=target, **options)


def largest_face_probabilities(model, images, detect: bool = True) -> np.ndarray:
    """``(N, 7)``: for each image of the batch, its largest face's probabilities (the centre square
    when none is found).  ``detect=False``: every image is a face crop; one batched pass."""
    size = int(model.card.get("input_size", 48))
    if not detect:
        return predict_arrays(model.module, to_gray_batch(images, size), model.card, model.device)
    located = [find_faces(im, fallback=True, max_faces=1) for im in as_batch(images)]
    if not located:
        return np.empty((0, len(EMOTIONS)), np.float32)
    crops = np.stack([f.crop(f.locations[0], size)[0] for f in located])
    return predict_arrays(model.module, crops, model.card, model.device)


__all__ = ["DEFAULT_MODEL", "FaceLocation", "FaceResult", "Faces", "Framing", "analyze", "classify_faces",
           "find_faces", "largest_face_probabilities", "relocate", "resolve_model"]
