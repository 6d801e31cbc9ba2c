import io

import numpy as np
import pytest
import torch
from PIL import Image

from ferlab.preprocess import (AUGMENTATIONS, MAX_PIXELS, InputError, augmentation, normalize, open_image,
                               to_batch, to_gray_uint8, to_tensor)

GRAY_CARD = {"input_size": 48, "in_channels": 1, "mean": [0.5], "std": [0.5]}
RGB_CARD = {"input_size": 64, "in_channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _pattern(h=60, w=60):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx * 3 + yy) % 256).astype(np.uint8)


def pil_inputs():
    g = _pattern()
    rgb = np.stack([g, g, g], -1)
    yield "L", Image.fromarray(g)
    yield "RGB", Image.fromarray(rgb)
    yield "RGBA", Image.fromarray(np.dstack([rgb, np.full_like(g, 255)]))
    yield "CMYK", Image.fromarray(rgb).convert("CMYK")
    yield "P", Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    yield "1", Image.fromarray(g).convert("1")
    yield "LA", Image.fromarray(g).convert("LA")
    yield "I;16", Image.fromarray((g.astype(np.uint16) * 257))
    yield "I", Image.fromarray(g.astype(np.int32) * 257)
    yield "F", Image.fromarray(g.astype(np.float32) / 255.0)


@pytest.mark.parametrize("mode,image", list(pil_inputs()), ids=[m for m, _ in pil_inputs()])
def test_every_pil_mode_gives_the_same_gray_face(mode, image):
    expected = to_gray_uint8(Image.fromarray(_pattern()))
    out = to_gray_uint8(image)
    assert out.shape == (48, 48) and out.dtype == np.uint8
    tolerance = 130 if mode == "1" else 3  # bilevel loses the grey levels by definition
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= tolerance


def numpy_inputs():
    g = _pattern()
    yield "u8_hw", g
    yield "u8_hw1", g[..., None]
    yield "u8_hwc", np.stack([g] * 3, -1)
    yield "u8_hwc4", np.dstack([g, g, g, np.full_like(g, 255)])
    yield "u8_chw", np.stack([g] * 3, 0)
    yield "f32_unit", g.astype(np.float32) / 255.0
    yield "f64_255", g.astype(np.float64)
    yield "u16", g.astype(np.uint16) * 257
    yield "torch", torch.from_numpy(g)


@pytest.mark.parametrize("name,array", list(numpy_inputs()), ids=[n for n, _ in numpy_inputs()])
def test_every_array_kind(name, array):
    expected = to_gray_uint8(_pattern())
    out = to_gray_uint8(array)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_bool_and_transparency_and_nan():
    assert to_gray_uint8(np.ones((10, 10), bool)).min() == 255
    transparent = np.zeros((10, 10, 4), np.uint8)  # fully transparent black -> white background
    assert to_gray_uint8(transparent).min() == 255
    nan = np.full((10, 10), np.nan, np.float32)
    assert to_gray_uint8(nan).max() == 0


def test_bytes_and_exif_rotation():
    tall = np.zeros((80, 40), np.uint8)
    tall[:40] = 255  # top half white
    buf = io.BytesIO()
    img = Image.fromarray(tall).rotate(90, expand=True)  # stored sideways: 40 x 80, white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90 degrees clockwise
    img.save(buf, format="JPEG", exif=exif, quality=95)
    out = to_gray_uint8(buf.getvalue())
    assert out[:24].mean() > 200 and out[24:].mean() < 55  # displayed upright: white on top


def test_center_square_crop_and_size():
    wide = np.zeros((40, 120), np.uint8)
    wide[:, 40:80] = 200  # the centred square is all 200
    assert to_gray_uint8(wide).min() == 200
    assert to_gray_uint8(np.zeros((1, 1), np.uint8)).shape == (48, 48)
    assert to_gray_uint8(_pattern(), size=64).shape == (64, 64)


def test_to_tensor_normalizes_as_the_card_says():
    flat = np.full((48, 48), 128, np.uint8)
    t = to_tensor(flat, GRAY_CARD)
    assert t.shape == (1, 48, 48) and t.dtype == torch.float32
    assert torch.allclose(t, torch.full_like(t, (128 / 255 - 0.5) / 0.5), atol=1e-6)
    t3 = to_tensor(Image.fromarray(flat), RGB_CARD)
    assert t3.shape == (3, 64, 64)
    for c in range(3):
        expected = (128 / 255 - RGB_CARD["mean"][c]) / RGB_CARD["std"][c]
        assert torch.allclose(t3[c], torch.full((64, 64), expected), atol=1e-6)


def test_to_batch_and_normalize_agree_with_to_tensor():
    images = [_pattern(), Image.fromarray(_pattern(50, 70))]
    batch = to_batch(images, GRAY_CARD)
    assert batch.shape == (2, 1, 48, 48)
    assert torch.equal(batch[0], to_tensor(images[0], GRAY_CARD))
    stack = np.stack([to_gray_uint8(i) for i in images])
    assert torch.equal(to_batch(stack, GRAY_CARD), batch)
    assert torch.equal(normalize(torch.from_numpy(stack).unsqueeze(1), GRAY_CARD), batch)


@pytest.mark.parametrize("bad,match", [
    (b"definitely not an image", "not a readable image"),
    (np.zeros((0, 10), np.uint8), "empty"),
    (np.zeros((2, 3, 4, 5), np.uint8), "expected an HxW"),
    (np.zeros((5, 5, 7), np.uint8), "expected an HxW"),
    ("a string", "expected a PIL image"),
])
def test_bad_inputs_raise_clear_errors(bad, match):
    with pytest.raises(InputError, match=match):
        to_gray_uint8(bad)


def test_truncated_and_bomb_images_refused():
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="PNG")
    with pytest.raises(InputError):
        open_image(buf.getvalue()[:300])
    side = int(MAX_PIXELS ** 0.5) + 10
    bomb = io.BytesIO()
    Image.new("1", (side, side)).save(bomb, format="PNG")  # a few KB that would decode to > limit
    with pytest.raises(InputError, match="limit"):
        to_gray_uint8(bomb.getvalue())


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_augmentation_presets_keep_uint8_shape(name):
    torch.manual_seed(0)
    img = torch.from_numpy(to_gray_uint8(_pattern())).unsqueeze(0)
    out = augmentation(name)(img)
    assert out.shape == img.shape and out.dtype == torch.uint8
    if name == "none":
        assert torch.equal(out, img)
    else:
        changed = any(not torch.equal(augmentation(name)(img), img) for _ in range(5))
        assert changed


def test_unknown_augmentation():
    with pytest.raises(ValueError, match="unknown augmentation"):
        augmentation("wild")


def test_random_resample_loses_the_detail_a_small_face_lacks_and_is_seeded():
    from ferlab.preprocess import RandomResample
    stripes = torch.zeros(1, 48, 48, dtype=torch.uint8)
    stripes[:, :, ::2] = 255  # one-pixel stripes: no 16-24 px image can hold them
    resample = RandomResample((16, 24))
    torch.manual_seed(3)
    out = resample(stripes)
    assert out.shape == stripes.shape and out.dtype == torch.uint8
    for seed in range(6):  # both with and without antialiasing: the one-pixel alternation is gone
        torch.manual_seed(seed)
        step = resample(stripes).float().diff(dim=-1).abs().mean()
        assert step < 0.5 * 255, seed
    torch.manual_seed(3)
    assert torch.equal(resample(stripes), out)
    smooth = torch.linspace(0, 255, 48).round().to(torch.uint8).expand(1, 48, 48).contiguous()
    assert (resample(smooth).int() - smooth.int()).abs().float().mean() < 4  # a gradient survives
