"""Hostile inputs through every entry point that takes a user file, property-based fuzzing of
the preprocessing and face paths, and concurrent users against the real app."""
import io
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from ferlab.checkpoints import base_card, save_checkpoint
from ferlab.faces import to_rgb_frame
from ferlab.pipeline import find_faces
from ferlab.models import create_model
from ferlab.preprocess import MAX_PIXELS, InputError, to_gray_uint8
from ferlab.ui import ModelRegistry
from ferlab.ui import classify as classify_mod
from ferlab.ui.classify import classify_image, classify_video
from ferlab.ui.explain_tab import explain_image
from ferlab.ui.memory import _glibc
from tests.synthetic import write_tiny_checkpoints
from tests.test_ui import drawn_face

NO_PROGRESS = staticmethod(lambda *a, **k: None)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    m = create_model("cnn", widths=[8, 16, 16, 16], hidden=16).eval()
    save_checkpoint(m, base_card(m, [0.5], [0.5]), folder / "tiny")
    return ModelRegistry(folder)


def png_header_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def _save(tmp: Path, name: str, image: Image.Image, **kwargs) -> str:
    path = tmp / name
    image.save(path, **kwargs)
    return str(path)


def good_files(tmp: Path) -> dict[str, str]:
    face = drawn_face()
    rgb = Image.fromarray(face)
    gray16 = (cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "rgba_png": _save(tmp, "a.png", rgb.convert("RGBA")),
        "cmyk_jpeg": _save(tmp, "c.jpg", rgb.convert("CMYK")),
        "palette_gif": _save(tmp, "p.gif", rgb.convert("P")),
        "gray_png": _save(tmp, "g.png", rgb.convert("L")),
        "16bit_png": _save(tmp, "s.png", Image.fromarray(gray16)),
        "float_tiff": _save(tmp, "f.tif", Image.fromarray(gray16.astype(np.float32) / 65535)),
        "exif_jpeg": _save(tmp, "e.jpg", rgb.rotate(90, expand=True), exif=exif),
        "one_pixel": _save(tmp, "one.png", Image.new("RGB", (1, 1), (120, 30, 200))),
    }


def bad_files(tmp: Path) -> dict[str, tuple[str, str]]:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buf, "JPEG")
    files = {"text": (b"hello, this is not an image", "not a readable image"),
             "zero_bytes": (b"", "not a readable image"),
             "truncated_jpeg": (buf.getvalue()[:2000], "not a readable image"),
             "20000x20000": (png_header_bomb(20000, 20000), "limit"),
             "bomb_100000x100000": (png_header_bomb(100_000, 100_000), "limit")}
    out = {}
    for name, (data, match) in files.items():
        path = tmp / f"{name}.png"
        path.write_bytes(data)
        out[name] = (str(path), match)
    return out


HOSTILE = ["text", "zero_bytes", "truncated_jpeg", "20000x20000", "bomb_100000x100000"]
ODD = ["rgba_png", "cmyk_jpeg", "palette_gif", "gray_png", "16bit_png", "float_tiff", "exif_jpeg", "one_pixel"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_files_get_clear_messages_quickly(registry, tmp_path, name):
    path, match = bad_files(tmp_path)[name]
    t = time.perf_counter()
    for handler in (lambda p: classify_image(registry, p, "tiny"),
                    lambda p: explain_image(registry, p, "tiny", "gradcam", None, "predicted class")):
        with pytest.raises(gr.Error, match=match):
            handler(path)
    assert time.perf_counter() - t < 5, "refused before decoding the pixels"


@pytest.mark.parametrize("name", ODD)
def test_odd_but_valid_images_work(registry, tmp_path, name):
    path = good_files(tmp_path)[name]
    annotated, probs, sentence, *_ = classify_image(registry, path, "tiny", fallback=True)
    assert annotated.ndim == 3 and annotated.shape[-1] == 3 and "model reads **" in sentence
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)


def test_exif_rotation_is_applied_before_detection(tmp_path):
    path = good_files(tmp_path)["exif_jpeg"]
    assert to_rgb_frame(Image.open(path)).shape[:2] == drawn_face().shape[:2]


def test_gradio_upload_path_refuses_bombs_and_junk(tmp_path):
    from gradio.data_classes import ImageData
    from ferlab.ui.common import SafeImage
    with gr.Blocks():
        component = SafeImage(label="x")
    for name in HOSTILE[:1] + HOSTILE[-1:]:
        path, _ = bad_files(tmp_path)[name]
        with pytest.raises(gr.Error, match="not a readable image|limit"):
            component.preprocess(ImageData(path=path, orig_name=Path(path).name))
    good = good_files(tmp_path)["gray_png"]
    assert component.preprocess(ImageData(path=good, orig_name="g.png")) == good


def _video(path: Path, frames: int, fps: float, size=(160, 160)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), fps, size)
    for i in range(frames):
        writer.write(cv2.cvtColor(cv2.resize(np.roll(drawn_face(), i, 1), size), cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def test_video_without_frames_and_too_long(registry, tmp_path, monkeypatch):
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 100)  # an EBML header and nothing decodable
    with pytest.raises(gr.Error, match="could not be opened|no decodable frames"):
        classify_video(registry, str(empty), "tiny", progress=lambda *a, **k: None)
    long_video = _video(tmp_path / "long.webm", frames=40, fps=1.0)  # 40 s
    monkeypatch.setattr(classify_mod, "MAX_VIDEO_SECONDS", 10)
    out, _, note = classify_video(registry, long_video, "tiny", False, progress=lambda *a, **k: None)
    assert "only the first 10 s of 40 s" in note
    assert Path(out).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]),
              shape=array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=40)))
def test_fuzz_arrays_never_crash_preprocessing_or_faces(array):
    try:
        gray = to_gray_uint8(array)
    except InputError:
        return
    assert gray.shape == (48, 48) and gray.dtype == np.uint8
    frame = to_rgb_frame(array)
    faces = find_faces(frame, fallback=True)
    assert faces.locations and all(loc.box.w > 0 and loc.box.h > 0 for loc in faces.locations)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_bytes_never_crash(data):
    for prefix in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0"):
        try:
            gray = to_gray_uint8(prefix + data)
        except InputError:
            continue
        assert gray.shape == (48, 48)


def test_pixel_limit_is_documented_and_sane():
    assert 10_000_000 <= MAX_PIXELS <= 100_000_000


def test_concurrent_users_get_their_own_results(tmp_path):
    """Scaled-down benchmarks/load.py: 3 clients x 4 mixed requests, compared with serial results,
    output images downloaded as a browser would."""
    from benchmarks.load import make_images, run_load, start_app
    folder = write_tiny_checkpoints(tmp_path / "ck")
    images = make_images(tmp_path, 2)
    proc, url = start_app(str(folder), log_path=str(tmp_path / "app.log"))
    try:
        report = run_load(url, proc.pid, clients=3, per_client=4, images=images, models=["tiny_cnn", "tiny_mobilenet"],
                          with_browser=False)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert report["errors"] == 0, report["error_samples"]
    assert report["mismatches"] == 0
    assert report["requests"] == 12 and report["all_requests"] == 18


def _hammer_publish(save, path_of, rounds: int = 150) -> list[bytes]:
    """Writers re-save one picture while a reader downloads it; returns what the reader saw."""
    import threading
    picture = drawn_face()
    path = path_of(save(picture))
    seen, stop = [], threading.Event()

    def writer():
        while not stop.is_set():
            save(picture)

    writers = [threading.Thread(target=writer) for _ in range(3)]
    for t in writers:
        t.start()
    try:
        for _ in range(rounds):
            seen.append(Path(path).read_bytes())
    finally:
        stop.set()
        for t in writers:
            t.join()
    return seen


def test_published_outputs_are_never_rewritten_under_a_download(tmp_path):
    """Concurrent users who get the same output picture must not truncate each other's download
    (Gradio's own saver rewrites the content-addressed file in place)."""
    from ferlab.ui.common import publish_image
    seen = _hammer_publish(lambda img: publish_image(img, str(tmp_path)), lambda p: p)
    assert len(set(seen)) == 1 and len(seen[0]) > 100
    first = publish_image(drawn_face(), str(tmp_path))
    assert first == publish_image(drawn_face(), str(tmp_path))
    assert not list(Path(first).parent.glob(".image.*"))  # no staging files left behind


def test_output_components_serve_published_files(tmp_path):
    from ferlab.ui.common import OutputGallery, OutputImage
    with gr.Blocks():
        image, gallery = OutputImage(label="x"), OutputGallery(label="g")
    face = drawn_face()
    served = image.postprocess(face)
    assert Path(served.path).is_file()
    assert np.asarray(Image.open(served.path)).shape == face.shape
    data = gallery.postprocess([(face, "one"), (np.zeros((8, 8, 3), np.uint8), "two")])
    assert [item.caption for item in data.root] == ["one", "two"]
    assert all(Path(item.image.path).is_file() for item in data.root)
    assert image.postprocess(None) is None


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_malloc_trim_returns_fragmented_free_memory():
    """What keeps the app's RSS flat under load: free memory between live blocks goes back."""
    import gc
    from benchmarks.load import rss_mb
    from ferlab.ui.memory import limit_arenas, trim
    assert limit_arenas(2)
    blocks = [bytearray(4000) for _ in range(40_000)]  # ~160 MB from malloc, below the mmap threshold
    keep = blocks[::16]  # every 16th stays alive, so the heap cannot shrink from its top
    del blocks
    gc.collect()
    before = rss_mb(os.getpid())
    trim()
    after = rss_mb(os.getpid())
    assert before - after > 50, (before, after)
    del keep
