"""The one photo-to-verdict pipeline: explicit batches, detection, framing, eye leveling, honest
evidence, tracking, and every door (app, predict, CLI) giving the same answer."""
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from ferlab import analyze
from ferlab.annotate import draw_faces
from ferlab.explain import explain
from ferlab.explain.core import overlay_heatmap
from ferlab.faces import (FER_LANDMARKS, FRAMINGS, Box, FaceDetector, detection_scale, eye_angle, frame_transform,
                          warp_crop)
from ferlab.models import FERNet
from ferlab.pipeline import FaceResult, find_faces
from ferlab.preprocess import InputError, to_gray_batch
from ferlab.tracking import FaceTracker, label_flips
from tests.explain_models import wrap
from tests.synthetic import make_arrays

ASSETS = Path(__file__).resolve().parent.parent / "ferlab" / "assets"
ASTRONAUT = cv2.cvtColor(cv2.imread(str(ASSETS / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
CAT = cv2.cvtColor(cv2.imread(str(ASSETS / "chelsea.jpg")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def model():
    from ferlab.models import create_model
    torch.manual_seed(0)
    return wrap(create_model("cnn", widths=[8, 16, 16, 16], hidden=16), "tiny")


def astronaut_face() -> np.ndarray:
    """The astronaut's face with room around it (from the public-domain NASA portrait)."""
    return ASTRONAUT[20:260, 110:340]


def scene(faces_at, size=(700, 1100)) -> np.ndarray:
    """A textured background with the astronaut's face pasted at ``(x, y, side)`` places."""
    rng = np.random.default_rng(1)
    back = cv2.GaussianBlur(rng.integers(60, 200, (*size, 3), dtype=np.uint8), (0, 0), 6)
    src = astronaut_face()
    for x, y, side in faces_at:
        back[y:y + side, x:x + side] = cv2.resize(src, (side, side), interpolation=cv2.INTER_AREA)
    return back


@pytest.mark.parametrize("n", range(1, 9))
def test_every_batch_size_through_explain_predict_and_analyze(model, n):
    crops, _ = make_arrays(2)
    stack = crops[:n]
    assert to_gray_batch(stack).shape == (n, 48, 48)
    assert model.predict(stack, detect=False).shape == (n, 7)
    assert model.predict(list(stack), detect=False).shape == (n, 7)
    out = explain(model, list(stack), "gradcam")
    assert len(out) == n and all(e.heatmap.shape == (48, 48) for e in out)
    photo = np.concatenate([astronaut_face()] * n, axis=1)
    faces = analyze(photo, model, explain="gradcam")
    assert len(faces) == n, "every copy of the face is found"
    assert model.predict([astronaut_face()] * n).shape == (n, 7), "a batch of n photos, one row each"


def test_a_group_of_more_than_eight_is_read_whole_and_a_cap_is_counted():
    row = np.concatenate([astronaut_face()] * 5, axis=1)
    group = np.concatenate([row, row], axis=0)  # ten faces, as in a class photo
    faces = find_faces(group)
    assert len(faces.locations) == 10 and faces.skipped == 0
    capped = find_faces(group, max_faces=4)
    assert len(capped.locations) == 4 and capped.skipped == 6, "faces beyond the cap are counted, not lost silently"
    assert [loc.box for loc in capped.locations] == [loc.box for loc in faces.locations[:4]], "the largest kept"


def test_batches_are_never_guessed_from_a_shape(model):
    crops, _ = make_arrays(1)
    three = crops[:3]  # (3, 48, 48) once looked like one channels-first image
    assert model.predict(three, detect=False).shape == (3, 7)
    with pytest.raises(InputError, match="pass \\[image\\]"):
        model.predict(crops[0])
    with pytest.raises(InputError, match="pass \\[image\\]"):
        to_gray_batch(ASTRONAUT[None][0][..., 0])


def test_one_pass_probabilities_equal_predict(model):
    crops, _ = make_arrays(1)
    e = explain(model, list(crops[:4]), "gradcam")
    assert np.allclose(np.stack([x.probabilities for x in e]), model.predict(crops[:4], detect=False), atol=1e-5)


def test_scene_with_known_face_boxes(model):
    placed = [(80, 120, 300), (560, 60, 130), (820, 420, 64), (420, 500, 40)]
    faces = find_faces(scene(placed))
    assert len(faces.locations) == len(placed)
    sides = [loc.box.w for loc in faces.locations]
    assert sides == sorted(sides, reverse=True), "largest first"
    # where the detector puts the face inside the pasted square, measured on the square alone
    ref = FaceDetector().detect(astronaut_face())[0]
    k = 1 / astronaut_face().shape[0]
    for (x, y, side), loc in zip(sorted(placed, key=lambda p: -p[2]), faces.locations):
        expected = Box(round(x + ref.x * k * side), round(y + ref.y * k * side), round(ref.w * k * side),
                       round(ref.h * k * side))
        assert loc.box.iou(expected) > 0.6, (loc.box, expected)


def test_small_faces_in_a_large_photo_are_searched_for():
    assert detection_scale(640, 480) == 1.0
    assert detection_scale(48, 48) == 5.0  # a FER-sized crop is upscaled (and padded)
    big = detection_scale(4000, 3000)
    assert 0.25 < big < 0.35 and 4000 * 3000 * big ** 2 <= 1_000_001
    # the pasted squares hold faces of about 37, 29 and 26 px
    faces = find_faces(scene([(100, 100, 80), (400, 300, 64), (700, 200, 56)], size=(600, 1000)))
    assert len(faces.locations) == 3


def test_no_face_is_an_empty_list_unless_the_fallback_is_asked_for(model):
    assert analyze(CAT, model) == []
    [stand_in] = analyze(CAT, model, fallback=True)
    assert not stand_in.detected and stand_in.box == Box(75, 0, 300, 300, 0.0)


def test_eyes_are_levelled_on_a_rotated_face(model):
    upright = find_faces(ASTRONAUT).locations[0]
    assert upright.eyes is not None and abs(upright.angle) < 8
    for turn in (-12, 12):
        m = cv2.getRotationMatrix2D((256, 256), turn, 1.0)  # positive: counter-clockwise on screen
        rotated = cv2.warpAffine(ASTRONAUT, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
        loc = find_faces(rotated).locations[0]
        assert loc.eyes is not None
        assert abs((loc.angle - upright.angle) + turn) < 5, (turn, loc.angle, upright.angle)
        straight = analyze(rotated, model)[0].crop.astype(float)
        unaligned = analyze(rotated, model, align=False)[0].crop.astype(float)
        reference = analyze(ASTRONAUT, model)[0].crop.astype(float)
        corr = np.corrcoef(straight.ravel(), reference.ravel())[0, 1]
        assert corr > np.corrcoef(unaligned.ravel(), reference.ravel())[0, 1] and corr > 0.85


def test_turned_passes_map_their_faces_back_to_the_picture():
    det = FaceDetector()
    [up] = det.detect(ASTRONAUT, angles=(0.0,))
    assert len(det.detect(ASTRONAUT)) == 1, "the upright and turned passes find one face, not three"
    m = cv2.getRotationMatrix2D((256, 256), 25, 1.0)  # the head tilted 25 degrees counter-clockwise
    tilted = cv2.warpAffine(ASTRONAUT, m, (512, 512), borderValue=(128, 128, 128))
    [face] = det.detect(tilted, angles=(-25.0,))  # only the pass that turns the head upright again
    expected = m @ np.array([*up.center, 1.0])
    assert math.dist(face.center, expected) < 0.08 * up.w, (face.center, expected)
    assert abs(face.w - up.w) < 0.1 * up.w
    assert abs(eye_angle(face.landmarks[:2]) - (eye_angle(up.landmarks[:2]) - 25)) < 4
    assert det.detect(tilted, angles=(-25.0,))[0].score > 0.9


def test_crop_is_framed_as_measured_and_maps_back_to_the_photo():
    box, framing = Box(100, 50, 97, 97), FRAMINGS["mtcnn"]
    m = frame_transform(box, 48, 0.0, framing)
    side = 97 / framing.box_side
    assert math.isclose(m[0, 0] * 48, side, rel_tol=1e-9)
    centre = m @ np.array([23.5, 23.5, 1.0])
    assert np.allclose(centre + 0.5, [148.5 - framing.center_dx * side, 98.5 - framing.center_dy * side])
    gradient = np.tile(np.linspace(0, 255, 400).astype(np.uint8), (300, 1))
    crop = warp_crop(gradient, m, 48)
    assert crop[:, 0].mean() < crop[:, -1].mean()


def test_framing_constants_are_the_measured_ones():
    record = json.loads((Path(__file__).resolve().parent.parent / "results" / "face_framing.json").read_text())
    for kind in ("mtcnn", "haar"):
        f = FRAMINGS[kind]
        assert (record[kind]["box_side"], record[kind]["center_dx"], record[kind]["center_dy"]) == \
            (f.box_side, f.center_dx, f.center_dy), kind
    assert np.allclose(record["mtcnn"]["landmarks"], FER_LANDMARKS)


class NoEvidenceAtTheEnd(FERNet):
    """Its last layer's features only argue against every class (Grad-CAM there is empty); the layer
    before speaks for them."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                                      nn.ReLU())
        self.fc = nn.Linear(4, 7)
        with torch.no_grad():
            self.features[0].weight.fill_(0.1)
            self.features[0].bias.fill_(0.5)
            self.features[2].weight.fill_(-0.05)
            self.features[2].bias.fill_(2.0)
            self.fc.weight.copy_(-torch.rand(7, 4) - 0.1)
        self.explainable_layers = ("features.1", "features.3")
        self.default_layer = "features.3"

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_empty_evidence_is_said_and_an_earlier_layer_offered():
    model = wrap(NoEvidenceAtTheEnd(), "noev")
    face = analyze(ASTRONAUT, model, explain="gradcam")[0]
    assert explain(model, face.crop, "gradcam").heatmap.max() == 0, "the default layer really is empty"
    assert face.explanation.layer == "features.1" and face.heatmap.max() > 0
    assert "no positive evidence" in face.note and "`features.1`, 1 layer earlier" in face.note
    # asked for a layer: that layer, empty, and no substitute
    asked = analyze(ASTRONAUT, model, explain="gradcam", layer="features.3")[0]
    assert asked.heatmap.max() == 0 and asked.note == ""


def test_no_evidence_looks_like_the_plain_face(model):
    face = ASTRONAUT[:96, :96].copy()
    assert np.array_equal(overlay_heatmap(face, np.zeros((48, 48), np.float32), 0.6), face)
    hot = overlay_heatmap(face, np.ones((48, 48), np.float32), 0.6)
    assert np.abs(hot.astype(int) - face).mean() > 10
    [result] = analyze(ASTRONAUT, model, explain="gradcam")
    result.explanation.heatmap = np.zeros_like(result.heatmap)
    drawn = draw_faces(ASTRONAUT, [result], ["x"], alpha=0.8)
    inside = drawn[result.box.y + 20:result.box.y + result.box.h - 20, result.box.x + 20:result.box.x + result.box.w - 20]
    orig = ASTRONAUT[result.box.y + 20:result.box.y + result.box.h - 20, result.box.x + 20:result.box.x + result.box.w - 20]
    assert np.array_equal(inside, orig)


def test_labels_stay_on_the_picture_and_apart(model):
    photo = np.concatenate([astronaut_face()] * 4, axis=1)
    faces = analyze(photo, model)
    drawn = draw_faces(photo, faces, [f"{i}: surprise 100%" for i in range(len(faces))])
    assert drawn.shape == photo.shape and not np.array_equal(drawn, photo)


def _result(box, probs, t_detected=True):
    return FaceResult(box=box, crop=np.zeros((48, 48), np.uint8), probabilities=np.asarray(probs, np.float32),
                      to_image=np.eye(2, 3), detected=t_detected)


def test_tracker_follows_faces_and_smooths_over_the_window():
    tracker = FaceTracker(window_s=0.5)
    rng = np.random.default_rng(0)
    raw = []
    for frame in range(60):
        t = frame / 20
        p = np.full(7, 0.02)
        p[3 if rng.random() < 0.7 else 6] = 0.88  # a smiling face read neutral 30% of the time
        left = _result(Box(100 + frame, 100, 80, 80), p)
        right = _result(Box(400 - frame, 120, 60, 60), np.eye(7)[0])
        tracker.update([left, right], t)
        assert left.track_id == 0 and right.track_id == 1
        raw.append((left.probabilities, left.smoothed))
        assert np.allclose(left.smoothed.sum(), 1, atol=1e-5)
    flips_raw = label_flips(np.stack([r for r, _ in raw]))
    flips_smooth = label_flips(np.stack([s for _, s in raw]))
    assert flips_smooth < flips_raw / 4
    gone = _result(Box(100, 100, 80, 80), np.eye(7)[2])
    tracker.update([gone], 10.0)  # long after: a new track, nothing averaged with the old one
    assert gone.track_id == 2 and np.allclose(gone.smoothed, np.eye(7)[2])
