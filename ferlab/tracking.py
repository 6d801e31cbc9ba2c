"""Faces followed across video frames, with each face's probabilities smoothed over a short window.

A frame-by-frame classifier flickers: the same smiling face reads happy, neutral, happy from one
frame to the next as the crop shifts by a pixel.  ``FaceTracker`` matches each frame's faces to
the previous ones by box overlap and gives every face the mean of its track's probabilities over
the last ``SMOOTHING_SECONDS`` (``FaceResult.smoothed``); screens show that, the raw value stays.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

SMOOTHING_SECONDS = 0.5   # window of the moving mean: long enough to hide crop jitter, short enough for a smile
MAX_GAP_SECONDS = 1.0     # a face unseen for longer starts a new track
MIN_IOU = 0.3             # box overlap that continues a track (or centres closer than half a box)


@dataclass
class _Track:
    id: int
    box: object
    seen: float
    history: deque = field(default_factory=deque)   # (time, probabilities)


class FaceTracker:
    """``update(faces, t)`` once per frame (``t`` in seconds, increasing); sets ``track_id`` and
    ``smoothed`` on each ``FaceResult`` and returns them."""

    def __init__(self, window_s: float = SMOOTHING_SECONDS, max_gap_s: float = MAX_GAP_SECONDS):
        self.window_s, self.max_gap_s = float(window_s), float(max_gap_s)
        self.tracks: dict[int, _Track] = {}
        self._next = 0
        # a live stream's last face search, reused for the frames in between (ferlab.ui.live)
        self.locations: list | None = None
        self.frames_since_search = 0
        self.frame_shape: tuple | None = None

    def update(self, faces: list, t: float) -> list:
        self.tracks = {k: tr for k, tr in self.tracks.items() if t - tr.seen <= self.max_gap_s}
        pairs = sorted(((self._affinity(tr.box, f.box), k, i) for k, tr in self.tracks.items()
                        for i, f in enumerate(faces)), reverse=True)
        taken_tracks, assigned = set(), {}
        for score, k, i in pairs:
            if score <= 0 or k in taken_tracks or i in assigned:
                continue
            taken_tracks.add(k)
            assigned[i] = k
        for i, face in enumerate(faces):
            if not face.detected:
                continue  # the centre-square stand-in is no face to follow
            k = assigned.get(i)
            if k is None:
                k, self._next = self._next, self._next + 1
                self.tracks[k] = _Track(k, face.box, t)
            track = self.tracks[k]
            track.box, track.seen = face.box, t
            track.history.append((t, np.asarray(face.probabilities, np.float64)))
            while track.history and track.history[0][0] < t - self.window_s:
                track.history.popleft()
            face.track_id = k
            face.smoothed = np.mean([p for _, p in track.history], axis=0).astype(np.float32)
        return faces

    @staticmethod
    def _affinity(a, b) -> float:
        iou = a.iou(b)
        if iou >= MIN_IOU:
            return 1.0 + iou
        (ax, ay), (bx, by) = a.center, b.center
        near = np.hypot(ax - bx, ay - by) < 0.5 * max(a.w, b.w)
        return 0.5 + iou if near and 0.5 < a.w / max(b.w, 1) < 2 else 0.0


def label_flips(probabilities: np.ndarray) -> int:
    """How often the top class changes along a ``(T, 7)`` sequence."""
    top = np.argmax(np.asarray(probabilities), axis=1)
    return int((top[1:] != top[:-1]).sum())
