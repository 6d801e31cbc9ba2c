"""The lab's handlers, called directly (no browser), and the Blocks build."""
import base64
import functools
import json
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pytest

from ferlab.labels import EMOTIONS
from ferlab.pipeline import analyze as ferlab_analyze

from ferlab.explain import applicable_methods
from ferlab.ui import ModelRegistry, build_app
from ferlab.ui.classify import classify_image, classify_video
from ferlab.ui.live import LIVE_JS, LiveStreams, classify_stream, live_frame, live_settings
from ferlab.ui.compare_tab import compare_models, most_different
from ferlab.ui.explain_tab import explain_image, layer_choices, method_choices, run_sanity_check
from ferlab.ui.layers_tab import layer_grid
from ferlab.ui.models_tab import model_details, overview
from tests.synthetic import write_tiny_checkpoints


ASSETS = Path(__file__).resolve().parent.parent / "ferlab" / "assets"
ASTRONAUT = cv2.cvtColor(cv2.imread(str(ASSETS / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
CAT = cv2.cvtColor(cv2.imread(str(ASSETS / "chelsea.jpg")), cv2.COLOR_BGR2RGB)


def drawn_face(size=160):
    img = np.full((size, size, 3), 200, np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c), (size // 3, int(size / 2.4)), 0, 0, 360, (150, 120, 100), -1)
    for dx in (-size // 7, size // 7):
        cv2.circle(img, (c + dx, int(c * 0.8)), size // 20, (30, 30, 30), -1)
    cv2.ellipse(img, (c, int(c * 1.35)), (size // 6, size // 14), 0, 0, 180, (40, 20, 20), 3)
    return img


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    folder = write_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"),
                                    metrics={"test": {"accuracy": 0.5, "macro_f1": 0.4}})
    return ModelRegistry(folder)


def test_blocks_build_without_a_browser(registry):
    fresh = ModelRegistry(registry.folder)
    demo = build_app(fresh)
    assert fresh._models == {}, "building the UI must not load any weights (lazy loading)"
    assert isinstance(demo, gr.Blocks)
    config = demo.get_config_file()
    labels = {c.get("props", {}).get("label") for c in config["components"]}
    assert {"Classify", "Explain", "Layers", "Compare", "Models"} <= labels


def test_app_without_checkpoints_still_builds(tmp_path):
    empty = ModelRegistry(tmp_path / "none")
    assert isinstance(build_app(empty), gr.Blocks)
    assert "No trained checkpoints" in overview(empty)
    with pytest.raises(gr.Error, match="No trained checkpoints"):
        classify_image(empty, drawn_face(), None)


def test_registry_loads_each_model_once(registry):
    assert registry.names() == ["tiny_cnn", "tiny_mobilenet"]
    assert registry.get("tiny_cnn") is registry.get("tiny_cnn")
    with pytest.raises(gr.Error, match="no checkpoint"):
        registry.get("nope")
    for sneaky in ("../elsewhere", "/etc", str(registry.folder / "tiny_cnn"), "tiny_cnn/../tiny_cnn"):
        with pytest.raises(gr.Error, match="no checkpoint"):
            registry.get(sneaky)


def test_classify_image_outputs(registry):
    img = ASTRONAUT
    annotated, probs, sentence, *_ = classify_image(registry, img, "tiny_cnn", True, 0.5)
    assert annotated.shape == img.shape and annotated.dtype == np.uint8
    assert not np.array_equal(annotated, img)  # frame, label and heatmap were drawn
    assert set(probs) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert sentence.startswith("The model reads **")
    assert "It looked mostly at" in sentence or "no positive evidence" in sentence
    blank = np.zeros((120, 200, 3), np.uint8)
    annotated, probs, sentence, *_ = classify_image(registry, blank, "tiny_cnn", False, 0.5)
    assert "No face was found" in sentence and "reads" not in sentence and probs is None
    assert np.array_equal(annotated, blank), "nothing is drawn where no face was found"
    _, probs, sentence, *_ = classify_image(registry, blank, "tiny_cnn", False, 0.5, True)
    assert "No face was found, so the centre of the picture was classified" in sentence and len(probs) == 7


def test_group_photo_every_face_and_the_app_agrees_with_predict(registry, monkeypatch):
    group = np.concatenate([ASTRONAUT[20:260, 110:340]] * 3 + [CAT[:240, :230]], axis=1)
    for show_cam in (True, False):
        annotated, probs, sentence, picker, per_face = classify_image(registry, group, "tiny_cnn", show_cam, 0.5)
        assert sentence.count("Face ") == 3
    app = np.array([probs[e] for e in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")])
    model = registry.get("tiny_cnn")
    assert np.allclose(app, model.predict([group])[0], atol=1e-5), "one path: the app and predict agree"
    # each face's bars: the picker offers every face, and picking one shows that face's probabilities
    from ferlab.ui.classify import face_bars
    assert picker["choices"] == [("1", "1"), ("2", "2"), ("3", "3")] or picker["choices"] == ["1", "2", "3"]
    assert picker["visible"] and len(per_face) == 3 and face_bars("1", per_face) == probs
    faces = ferlab_analyze(group, model)
    for k in (1, 2):
        shown = face_bars(str(k + 1), per_face)
        assert np.allclose([shown[e] for e in EMOTIONS], faces[k].shown_probabilities, atol=1e-6)
    # faces found beyond the cap (here 2 of the 3) are said, not silently dropped
    import ferlab.ui.classify as classify_tab
    monkeypatch.setattr(classify_tab, "find_faces", functools.partial(classify_tab.find_faces, max_faces=2))
    _, _, sentence, picker, _ = classify_image(registry, group, "tiny_cnn", False, 0.5)
    assert sentence.count("Face ") == 2 and "1 smaller face was found but not read" in sentence
    assert len(picker["choices"]) == 2
    _, _, sentence, *_ = classify_image(registry, CAT, "tiny_cnn")
    assert sentence.startswith("**No face was found.**")


@pytest.mark.parametrize("bad,match", [(None, "Upload an image"), (np.zeros((0, 5, 3), np.uint8), "empty"),
                                       ("/definitely/not/here.png", "not a readable image")])
def test_classify_bad_inputs_are_readable_errors(registry, bad, match):
    with pytest.raises(gr.Error, match=match):
        classify_image(registry, bad, "tiny_cnn")


def test_stream_frames_pass_through_on_error(registry, monkeypatch):
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    out, tracker = classify_stream(registry, frame, "tiny_cnn")
    assert out.shape == frame.shape
    assert classify_stream(registry, None, "tiny_cnn", tracker=tracker) == (None, tracker)
    assert classify_stream(registry, frame, "missing_model", tracker=tracker)[0] is frame
    # a face followed over frames keeps its one track (a new session: a new tracker); frames 50 ms
    # apart on a fake clock, so a slow machine does not open a new track
    clock = iter(np.arange(100.0, 200.0, 0.05))
    monkeypatch.setattr("ferlab.ui.live.time.monotonic", lambda: next(clock))
    tracker = None
    for _ in range(3):
        out, tracker = classify_stream(registry, ASTRONAUT, "tiny_cnn", True, 0.4, tracker)
    assert list(tracker.tracks) == [0] and len(tracker.tracks[0].history) >= 1


def data_url(rgb: np.ndarray) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(cv2.imencode(".jpg", rgb[..., ::-1])[1]).decode()


def from_data_url(url: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(url.partition(",")[2]), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def test_live_frames_round_trip_in_order(registry):
    """The browser loop's frames: annotated and sent back; a frame overtaken by a newer one is skipped;
    a new stream id starts a new tracker; the settings travel with each frame."""
    streams = LiveStreams()
    frame = {"stream": "a", "seq": 1, "image": data_url(ASTRONAUT), **json.loads(live_settings("tiny_cnn", True, 0.4))}
    answer = live_frame(registry, streams, frame)
    assert (answer["stream"], answer["seq"]) == ("a", 1)
    shown = from_data_url(answer["image"])
    assert shown.shape == ASTRONAUT.shape
    assert np.abs(shown.astype(int) - ASTRONAUT).mean() > 1, "the frame comes back annotated"
    assert live_frame(registry, streams, {**frame, "seq": 2})["image"]
    assert "image" not in live_frame(registry, streams, frame), "seq 1 after seq 2: overtaken, skipped"
    tracker = streams.get("a").tracker
    assert len(tracker.tracks) == 1
    assert live_frame(registry, streams, {**frame, "stream": "b"})["image"], "another stream has its own order"
    assert streams.get("b").tracker is not tracker
    # without the overlay the face's pixels stay as they were, apart from JPEG's noise and the drawn box
    plain = from_data_url(live_frame(registry, streams, {**frame, "seq": 3, "grad_cam": False})["image"])
    assert np.abs(plain.astype(int) - ASTRONAUT).mean() < np.abs(shown.astype(int) - ASTRONAUT).mean()


@pytest.mark.parametrize("payload,match", [
    (None, "expected a frame"), ({"image": 3}, "expected a frame"),
    ({"image": "data:text/html;base64,PGI+", "model": "tiny_cnn"}, "JPEG or PNG data URL"),
    ({"image": "data:image/jpeg;base64," + "A" * 4_000_004, "model": "tiny_cnn"}, "at most"),
    ({"image": "data:image/jpeg;base64,not base64!", "model": "tiny_cnn"}, "could not be read"),
    ({"image": "data:image/jpeg;base64,aGVsbG8=", "model": "tiny_cnn"}, "not a readable image"),
    ({"image": "data:image/jpeg;base64,aGVsbG8=", "model": "missing"}, "unknown model 'missing'"),
    ({"image": "data:image/jpeg;base64,aGVsbG8=", "model": "tiny_cnn", "alpha": "x"}, "could not be read"),
])
def test_live_frames_refuse_what_is_not_a_frame(registry, payload, match):
    answer = live_frame(registry, LiveStreams(), payload)
    assert set(answer) == {"error"} and match in answer["error"]


def test_live_streams_keep_the_most_recent():
    streams = LiveStreams(size=2)
    first = streams.get("1")
    streams.get("2"), streams.get("1"), streams.get("3")   # "2" is now the least recently used
    assert streams.get("1") is first
    assert list(streams._streams) == ["3", "1"]


def test_live_view_calls_the_function_the_app_registers(registry):
    demo = build_app(ModelRegistry(registry.folder))
    view = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "live-view")
    assert [fn.__name__ for fn in view.server_fns] == ["live_frame"]
    assert "server.live_frame(" in LIVE_JS and "props.value" in LIVE_JS


def test_video_round_trip_and_errors(registry, tmp_path):
    path = tmp_path / "clip.webm"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), 10, (240, 240))
    for i in range(12):
        writer.write(cv2.cvtColor(np.roll(ASTRONAUT[20:260, 100:340], 2 * i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    out, fig, note = classify_video(registry, str(path), "tiny_cnn", True, 0.4, max_frames=6,
                                    progress=lambda *a, **k: None)
    cap = cv2.VideoCapture(out)
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert frames == 6 and "Analysed 6 frames (one frame in 2)" in note and fig is not None
    assert "1 face track, the plot follows the one seen in 6 frames" in note and "smoothed" in note
    assert len(fig.axes[0].lines) == 14, "each emotion smoothed, and faint frame by frame behind it"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(gr.Error, match="could not be opened|no decodable frames"):
        classify_video(registry, str(junk), "tiny_cnn", progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="Upload a video"):
        classify_video(registry, None, "tiny_cnn", progress=lambda *a, **k: None)


@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam", "activations", "saliency", "eigencam"])
def test_explain_tab(registry, method):
    face, heat, over, probs, notes, curves = explain_image(registry, drawn_face(), "tiny_cnn", method,
                                                           "features.conv6", "happy", 0.5, "inferno")
    assert curves is not None
    assert face.shape == heat.shape == over.shape == (240, 240, 3)
    assert f"**{method}** for **happy**" in notes and "Deletion AUC" in notes
    assert len(probs) == 7


def test_explain_tab_errors_and_layers(registry):
    with pytest.raises(gr.Error, match="CAM needs global average pooling"):
        explain_image(registry, drawn_face(), "tiny_cnn", "cam", None, "predicted class")
    update = layer_choices(registry, "tiny_mobilenet")
    assert update["value"] == "features.18" and "features.0" in update["choices"]
    # a layer left over from another model falls back to the default instead of failing
    *_, notes, _ = explain_image(registry, drawn_face(), "tiny_mobilenet", "cam", "features.conv3", "predicted class")
    assert "`features.18`" in notes
    fig, message = run_sanity_check(registry, drawn_face(), "tiny_cnn", "gradcam", None, "predicted class",
                                    progress=lambda *a, **k: None)
    assert fig is not None and "randomization check" in message


def test_layers_tab_grid(registry):
    grads, cams, acts, attention, caption = layer_grid(registry, drawn_face(), "tiny_mobilenet", "sad", "features.3",
                                                       0.5, 4)
    assert attention == [] and "Attention" not in caption
    assert len(grads) == 19 and grads[0][1].startswith("1. features.0")
    assert len(cams) == 1 and len(acts) == 4
    assert "for class **sad**" in caption and "`features.3`" in caption
    _, cams, _, _, caption = layer_grid(registry, drawn_face(), "tiny_cnn", "predicted class", None)
    assert cams == [] and "CAM needs global average pooling" in caption


def test_compare_tab(registry):
    items, text = compare_models(registry, drawn_face(), ["tiny_cnn", "tiny_mobilenet"])
    assert len(items) == 2 and "| tiny_cnn |" in text and "50.0%" in text
    assert "agree" in text or "models say" in text
    with pytest.raises(gr.Error, match="two to four"):
        compare_models(registry, drawn_face(), ["tiny_cnn"])


def test_models_tab(registry):
    assert "| tiny_cnn | cnn |" in overview(registry)
    card, curves, confusion, regions = model_details(registry, "tiny_mobilenet")
    assert "mobilenet_v2" in card and "CAM yes" in card and "| test | 50.00% |" in card


def test_scores_are_shown_against_one_label_set_whatever_a_model_was_trained_on(tmp_path):
    """A FER+-trained card keeps its FER+ score under ``test`` and its FER2013 one under
    ``test_fer2013``; the tables must put each under the right column."""
    from ferlab.checkpoints import read_card, update_card
    folder = write_tiny_checkpoints(tmp_path, metrics={"test": {"accuracy": 0.5, "macro_f1": 0.4},
                                                       "test_ferplus": {"accuracy": 0.55}})
    plus = folder / "tiny_mobilenet"
    update_card(plus, data={**read_card(plus).get("data", {}), "labels": "ferplus"},
                metrics={"test": {"accuracy": 0.8, "macro_f1": 0.7}, "test_fer2013": {"accuracy": 0.6}})
    registry = ModelRegistry(folder)
    table = overview(registry)
    cnn_row = next(r for r in table.splitlines() if r.startswith("| tiny_cnn |"))
    plus_row = next(r for r in table.splitlines() if r.startswith("| tiny_mobilenet |"))
    assert "| FER2013 |" in cnn_row and "| 50.0% |" in cnn_row and "| 55.0% |" in cnn_row
    assert "| FER+ majority |" in plus_row and "| 60.0% |" in plus_row and "| 80.0% |" in plus_row
    assert plus_row.index("60.0%") < plus_row.index("80.0%")  # FER2013 column first, FER+ column later
    _, text = compare_models(registry, drawn_face(), ["tiny_cnn", "tiny_mobilenet"])
    assert "| 60.0% | 80.0% |" in text and "| 50.0% | 55.0% |" in text


def test_a_corrupt_card_leaves_that_model_out_and_the_app_up(tmp_path):
    folder = write_tiny_checkpoints(tmp_path)
    (folder / "tiny_cnn" / "card.json").write_text("{not json")
    registry = ModelRegistry(folder)
    assert registry.names() == ["tiny_mobilenet"] and registry.names(labels="fer2013") == ["tiny_mobilenet"]
    assert "not valid JSON" in registry.broken()["tiny_cnn"]
    demo = build_app(registry)
    texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert any("`tiny_cnn` is left out" in t for t in texts)
    assert "| tiny_mobilenet |" in overview(registry)
    with pytest.raises(gr.Error, match="no checkpoint 'tiny_cnn'"):
        registry.get("tiny_cnn")
    with pytest.raises(gr.Error, match="no checkpoint 'tiny_cnn'; available: tiny_mobilenet"):
        registry.card("tiny_cnn")
    assert registry.card("tiny_mobilenet")["architecture"] == "mobilenet_v2"


def test_every_registered_method_is_offered(registry):
    # the Explain tab's dropdown offers every method that applies to the model: each must run on a GAP model
    for method in applicable_methods(registry.card("tiny_mobilenet"))[0]:
        if method in ("scorecam", "occlusion", "integrated_gradients"):
            continue  # slower; covered in test_explain
        face, heat, over, probs, notes, _ = explain_image(registry, drawn_face(), "tiny_mobilenet", method, None,
                                                          "predicted class")
        assert face.shape == heat.shape == over.shape == (240, 240, 3), method
        assert np.isfinite(heat).all() and heat.dtype == np.uint8, method
        assert f"**{method}** for" in notes and abs(sum(probs.values()) - 1) < 1e-3, method


def test_returned_figures_are_not_kept_alive(registry):
    """Figures handed to Gradio must not pile up in pyplot's registry (a leak under load)."""
    import gc
    import weakref

    import matplotlib.pyplot as plt
    before = len(plt.get_fignums())
    *_, curves = explain_image(registry, drawn_face(), "tiny_cnn", "gradcam", None, "predicted class")
    fig, _ = run_sanity_check(registry, drawn_face(), "tiny_cnn", "gradcam", None, "predicted class",
                              progress=lambda *a, **k: None)
    assert len(plt.get_fignums()) == before
    refs = [weakref.ref(curves), weakref.ref(fig)]
    del curves, fig
    gc.collect()
    assert all(r() is None for r in refs)


def test_only_methods_that_apply_are_offered(registry):
    update, note = method_choices(registry, "tiny_cnn", "cam")
    assert "cam" not in update["choices"] and update["value"] == "gradcam" and "`cam` is not offered" in note
    update, note = method_choices(registry, "tiny_mobilenet", "cam")
    assert "cam" in update["choices"] and update["value"] == "cam" and "`cam`" not in note
    assert "rollout" not in update["choices"]
    assert ("`rollout` and `attention_gradcam` are not offered for `mobilenet_v2`: attention rollouts read a "
            "transformer's") in note


def test_compare_opens_on_different_architectures(tmp_path):
    folder = write_tiny_checkpoints(tmp_path)
    import shutil
    shutil.copytree(folder / "tiny_cnn", folder / "tiny_cnn_copy")  # a second copy of one network
    registry = ModelRegistry(folder)
    chosen = most_different(registry, registry.names())
    assert len(chosen) == 2 and {registry.card(n)["architecture"] for n in chosen} == {"cnn", "mobilenet_v2"}


def test_live_frames_search_faces_every_nth_frame(registry, monkeypatch):
    """Live streams search for faces in every LIVE_SEARCH_EVERY-th frame and keep the last search's
    locations in between; a frame of another size searches again."""
    from ferlab.tracking import FaceTracker
    from ferlab.ui import live as live_mod
    searches = []
    real = live_mod.find_faces
    monkeypatch.setattr(live_mod, "find_faces", lambda *a, **k: searches.append(1) or real(*a, **k))
    tracker = FaceTracker()
    every = live_mod.LIVE_SEARCH_EVERY
    located = [live_mod.live_faces(ASTRONAUT, tracker) for _ in range(2 * every)]
    assert len(searches) == 2
    assert all(f.locations == located[0].locations for f in located[:every])
    assert len(located[1].locations) == 1 and located[1].frame.shape == ASTRONAUT.shape
    live_mod.live_faces(ASTRONAUT[:200, :200], tracker)
    assert len(searches) == 3
